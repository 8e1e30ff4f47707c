//! [`Master`]: bind the API, open the state store and the supervisor, serve until shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use nodepass_core::Supervisor;
use nodepass_core::config::{Host, MasterConfig, PostgresUrl, TlsMode};
use nodepass_core::store::{PostgresConfig, PostgresStore, SqliteStore, Store};
use nodepass_core::supervisor::SupervisorOptions;
use nodepass_core::transport::net::bind_tcp;
use nodepass_core::transport::tls::ServerTls;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::{ApiKey, Keys};
use crate::body::BodyLimits;
use crate::cors::{CORS_ENV, Cors, CorsOrigins};
use crate::docs::Docs;
use crate::error::ApiError;
use crate::events::EventSettings;
use crate::info::CpuMeter;
use crate::router::{self, Router};
use crate::session::Sessions;
use crate::source_limit::{SourceLimits, SourcePermit, first_byte};
use crate::state::{MasterFacts, State};
use crate::tcping::Prober;

/// The environment variable that sets the API key explicitly.
pub const API_KEY_ENV: &str = "NODEPASS_API_KEY";

/// The largest request body: 64 KiB (larger is 413).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// The state store file name inside the default directory.
pub const DEFAULT_STATE_FILE: &str = "nodepass.db";

/// The store setting that holds the master's alias (`POST /v1/info`).
pub(crate) const ALIAS_SETTING: &str = "master_alias";

/// The store setting that holds the master's id (`mid` of `/v1/info`).
const MID_SETTING: &str = "master_id";

/// The stored master id, or a new random one (16 hex characters), stored.
async fn master_id(store: &dyn Store) -> Result<String, ApiError> {
    if let Some(mid) = store.setting(MID_SETTING).await? {
        return Ok(mid);
    }
    let mid = ApiKey::generate()?.expose()[..16].to_string();
    store.set_setting(MID_SETTING, &mid).await?;
    Ok(mid)
}

/// How often a failed `accept` is retried.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Tunables of the master, with production defaults; [`MasterOptions::from_env`] adds the
/// environment variables.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MasterOptions {
    /// The API key to use instead of the stored or generated one (`NODEPASS_API_KEY`).
    pub api_key: Option<ApiKey>,
    /// Allowed browser origins (`NODEPASS_CORS_ORIGINS`; default any).
    pub cors: CorsOrigins,
    /// Supervisor timings.
    pub supervisor: SupervisorOptions,
    /// Request headers must arrive within this time (default 10 s; HTTP/1).
    pub header_timeout: Duration,
    /// A request body must arrive within this time (default 10 s).
    pub body_timeout: Duration,
    /// The TLS handshake must finish within this time (default 10 s).
    pub tls_handshake_timeout: Duration,
    /// Largest request body (default [`DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// Concurrent connections; more are closed at once (default 512).
    pub max_connections: usize,
    /// Concurrent event streams; more get 429 (default 64).
    pub max_event_streams: usize,
    /// A heartbeat comment on every event stream this often (default 15 s).
    pub heartbeat_interval: Duration,
    /// The `retry:` hint of event streams (default 3 s).
    pub retry_hint: Duration,
    /// `/v1/tcping` gives up after this time (default 5 s).
    pub tcping_timeout: Duration,
    /// Concurrent `/v1/tcping` probes; more get 429 (default 16).
    pub tcping_concurrency: usize,
    /// At shutdown, in-flight requests get this long to finish (default 5 s).
    pub grace: Duration,
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterOptions {
            api_key: None,
            cors: CorsOrigins::Any,
            supervisor: SupervisorOptions::default(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: 512,
            max_event_streams: 64,
            heartbeat_interval: Duration::from_secs(15),
            retry_hint: Duration::from_secs(3),
            tcping_timeout: Duration::from_secs(5),
            tcping_concurrency: 16,
            grace: Duration::from_secs(5),
        }
    }
}

impl MasterOptions {
    /// The defaults, with `NODEPASS_API_KEY` and `NODEPASS_CORS_ORIGINS` applied.
    pub fn from_env() -> Result<MasterOptions, ApiError> {
        Self::from_values(
            std::env::var(API_KEY_ENV).ok().as_deref(),
            std::env::var(CORS_ENV).ok().as_deref(),
        )
    }

    fn from_values(key: Option<&str>, cors: Option<&str>) -> Result<MasterOptions, ApiError> {
        let mut options = MasterOptions::default();
        if let Some(key) = key {
            options.api_key = Some(ApiKey::new(key).map_err(|reason| ApiError::Config {
                field: API_KEY_ENV.into(),
                reason,
            })?);
        }
        if let Some(cors) = cors {
            options.cors = CorsOrigins::parse(cors).map_err(|reason| ApiError::Config {
                field: CORS_ENV.into(),
                reason,
            })?;
        }
        Ok(options)
    }
}

/// The environment variables that may hold the database password, in order.
pub const STORE_PASSWORD_ENV: [&str; 2] = ["NODEPASS_STORE_PASSWORD", "PGPASSWORD"];

/// The database password: `store_password_file=` (trailing newline removed), else the first
/// of [`STORE_PASSWORD_ENV`] that is set; `None` if none is given.
fn store_password(config: &MasterConfig) -> Result<Option<String>, ApiError> {
    if let Some(file) = &config.store_password_file {
        let text = std::fs::read_to_string(file).map_err(|e| ApiError::Config {
            field: "store_password_file".into(),
            reason: format!("cannot read {}: {e}", file.display()),
        })?;
        let password = text.trim_end_matches(['\n', '\r']).to_owned();
        if password.is_empty() {
            return Err(ApiError::Config {
                field: "store_password_file".into(),
                reason: format!("{} is empty", file.display()),
            });
        }
        return Ok(Some(password));
    }
    Ok(STORE_PASSWORD_ENV
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty())))
}

/// `NODEPASS_FLEET_INTERVAL`, or the default.
fn fleet_interval() -> Result<Duration, ApiError> {
    let name = crate::fleet::FLEET_INTERVAL_ENV;
    match std::env::var(name) {
        Err(_) => Ok(crate::fleet::DEFAULT_INTERVAL),
        Ok(text) => nodepass_core::config::duration::parse(&text)
            .ok()
            .filter(|d| *d >= Duration::from_millis(100))
            .ok_or_else(|| ApiError::Config {
                field: name.into(),
                reason: format!("{text:?}: expected a duration of at least 100ms, e.g. 2s"),
            }),
    }
}

/// Where the state store lives when the URL has no `state=`:
/// `$XDG_STATE_HOME/nodepass/nodepass.db`, else `$HOME/.local/state/nodepass/nodepass.db`,
/// else `./nodepass.db`.
pub fn default_state_path() -> PathBuf {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = from("XDG_STATE_HOME") {
        dir.join("nodepass").join(DEFAULT_STATE_FILE)
    } else if let Some(home) = from("HOME") {
        home.join(".local/state/nodepass").join(DEFAULT_STATE_FILE)
    } else {
        PathBuf::from(DEFAULT_STATE_FILE)
    }
}

/// A bound master, ready to [`run`](Master::run).
pub struct Master {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<ServerTls>,
    pub(crate) state: Arc<State>,
    generated_key: Option<ApiKey>,
    options: MasterOptions,
    state_path: Option<PathBuf>,
    supervisor_guard: DropGuard,
    /// Fleet mode: stops the fleet task when the master goes.
    fleet_guard: Option<DropGuard>,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .field("prefix", &self.state.prefix)
            .finish_non_exhaustive()
    }
}

impl Master {
    /// Open the SQLite store (`state=` or [`default_state_path`]), load or make the API key,
    /// bind the listener, set up TLS and open the supervisor (which starts the instances that
    /// should run). Nothing is served until [`run`](Master::run).
    ///
    /// Cancel safe: dropping the future (or the returned `Master`) releases what was opened and
    /// stops the instances the supervisor started.
    pub async fn bind(config: &MasterConfig, options: MasterOptions) -> Result<Master, ApiError> {
        if let Some(url) = &config.store {
            return Self::bind_fleet(config, url, options).await;
        }
        // A missing state directory is created (owner only), for `state=` as for the default.
        let path = config.state.clone().unwrap_or_else(default_state_path);
        create_private_dir(&path)?;
        let open_path = path.clone();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(open_path))
            .await
            .map_err(|e| ApiError::Io {
                op: "open the state store".into(),
                source: std::io::Error::other(e),
            })??;
        let mut master = Self::with_store(config, options, Arc::new(store)).await?;
        master.state_path = Some(path);
        Ok(master)
    }

    /// Fleet mode: open the PostgreSQL store as node `node=`, then as [`with_store`]
    /// (Master::with_store), and start the fleet task (heartbeat, reconcile).
    async fn bind_fleet(
        config: &MasterConfig,
        url: &PostgresUrl,
        mut options: MasterOptions,
    ) -> Result<Master, ApiError> {
        let node = config.node.clone().ok_or_else(|| ApiError::Config {
            field: "node".into(),
            reason: "store= needs node=NAME".into(),
        })?;
        let interval = fleet_interval()?;
        let mut pg = PostgresConfig::new(&url.host, url.port, &url.user, &url.dbname, &node);
        pg.password = store_password(config)?;
        let store = Arc::new(PostgresStore::open(&pg).await?);
        tracing::info!(store = %store.label(), node = %node, "fleet store opened");
        options.supervisor.node = Some(node);
        // Other masters show this node's traffic as it was last written.
        options.supervisor.flush_interval = options.supervisor.flush_interval.min(interval);
        let mut master = Self::with_store(config, options, store.clone()).await?;
        let started_ms = master.state.started_unix_ms;
        let mut fleet = crate::fleet::Fleet::new(store, interval, started_ms);
        fleet.api = master.url();
        Arc::get_mut(&mut master.state)
            .expect("the state is not shared before run")
            .fleet = Some(Arc::new(fleet));
        let token = CancellationToken::new();
        crate::fleet::spawn(master.state.clone(), token.clone());
        master.fleet_guard = Some(token.drop_guard());
        Ok(master)
    }

    /// Like [`bind`](Master::bind) with a store of the caller's choice (e.g. a
    /// [`MemoryStore`](nodepass_core::store::MemoryStore)); `state=` is ignored. Cancel safe
    /// like `bind`.
    pub async fn with_store(
        config: &MasterConfig,
        options: MasterOptions,
        store: Arc<dyn Store>,
    ) -> Result<Master, ApiError> {
        let (keys, generated_key) =
            Keys::load(store.clone(), options.api_key.as_ref().map(ApiKey::expose)).await?;
        let listener = bind_tcp(&config.listen).await?;
        let local_addr = listener.local_addr().map_err(|source| ApiError::Io {
            op: "read the bound address".into(),
            source,
        })?;
        let tls = server_tls(config)?;
        let supervisor_token = CancellationToken::new();
        // From here on, dropping this future or the master stops the supervisor.
        let supervisor_guard = supervisor_token.clone().drop_guard();
        let supervisor =
            Supervisor::open(store, options.supervisor.clone(), supervisor_token.clone())
                .await
                .map_err(ApiError::Supervisor)?;
        let prefix = config.prefix.trim_end_matches('/').to_string();
        let docs = Docs::new(config.api, &prefix);
        let router = Router::from_openapi(&crate::openapi::document(config.api, &prefix));
        let facts = MasterFacts {
            log: config.log,
            tls: config.tls.clone(),
            name: match &config.listen.host {
                Host::Any => String::new(),
                Host::Ip(ip) => ip.to_string(),
                Host::Name(name) => name.clone(),
            },
            mid: master_id(supervisor.store().as_ref()).await?,
        };
        let alias = supervisor
            .store()
            .setting(ALIAS_SETTING)
            .await?
            .unwrap_or_default();
        let state = State {
            dialect: config.api,
            facts,
            alias: std::sync::Mutex::new(alias),
            supervisor,
            keys,
            cors: Cors::new(options.cors.clone()),
            router,
            docs,
            limits: BodyLimits {
                max_bytes: options.max_body_bytes,
                timeout: options.body_timeout,
            },
            started: Instant::now(),
            started_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            cpu: CpuMeter::new(),
            tcping: Prober::new(options.tcping_concurrency, options.tcping_timeout),
            event_settings: EventSettings {
                heartbeat: options.heartbeat_interval,
                retry: options.retry_hint,
            },
            event_slots: Arc::new(Semaphore::new(options.max_event_streams)),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            sessions: Sessions::new(tls.is_some()),
            history_interval: options.supervisor.history_interval,
            fleet: None,
            prefix,
        };
        Ok(Master {
            listener,
            local_addr,
            tls,
            state: Arc::new(state),
            generated_key,
            options,
            state_path: None,
            supervisor_guard,
            fleet_guard: None,
        })
    }

    /// The address the API listens on (the real port when the URL asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The API's base URL, e.g. `https://127.0.0.1:9090/api` (append `/v1/...`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.local_addr, self.state.prefix)
    }

    /// The state store file, when the master opened one.
    pub fn state_path(&self) -> Option<&Path> {
        self.state_path.as_deref()
    }

    /// The API key generated at this start (the store had none and no key was given), to
    /// show once; `None` afterwards or when the key came from elsewhere.
    pub fn take_generated_key(&mut self) -> Option<ApiKey> {
        self.generated_key.take()
    }

    /// The supervisor behind the API.
    pub fn supervisor(&self) -> &Supervisor {
        &self.state.supervisor
    }

    /// Serve until `shutdown` is cancelled, then: stop accepting, end every event stream with
    /// a `shutdown` event, let in-flight requests finish within the grace period, and stop
    /// every instance (within the supervisor's grace period).
    ///
    /// Not cancel safe: stop it with `shutdown` and await it.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ApiError> {
        let Master {
            listener,
            tls,
            state,
            options,
            supervisor_guard,
            ..
        } = self;
        if let Some(tls) = &tls {
            // Reloads certificate files until the API shuts down; tracked, so shutdown waits.
            tls.watch(&state.tracker, state.shutdown.clone());
        }
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
        let sources = SourceLimits::default();
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "connection limit reached, closing");
                continue;
            };
            let Some(source_permit) = sources.try_acquire(peer.ip()) else {
                tracing::debug!(%peer, "per-source connection limit reached, closing");
                continue;
            };
            let conn = Connection {
                state: state.clone(),
                tls: tls.clone(),
                watcher: graceful.watcher(),
                options: options.clone(),
                _permit: (permit, source_permit),
            };
            let span = tracing::debug_span!("api", %peer);
            connections.spawn(conn.serve(stream).instrument(span));
        }
        drop(listener);
        tracing::info!("master API shutting down");
        state.shutdown.cancel();
        if tokio::time::timeout(options.grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some API requests did not finish within the grace period");
        }
        connections.close();
        state.tracker.close();
        let _ = tokio::time::timeout(options.grace, async {
            connections.wait().await;
            state.tracker.wait().await;
        })
        .await;
        state.supervisor.shutdown().await;
        drop(supervisor_guard);
        Ok(())
    }
}

fn server_tls(config: &MasterConfig) -> Result<Option<ServerTls>, ApiError> {
    const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
    let tls = match &config.tls {
        TlsMode::Off => return Ok(None),
        TlsMode::SelfSigned => {
            let mut names = vec!["localhost".to_string()];
            match &config.listen.host {
                Host::Any => {}
                Host::Ip(ip) => names.push(ip.to_string()),
                Host::Name(name) => names.push(name.clone()),
            }
            ServerTls::self_signed(&names)?
        }
        TlsMode::Files { cert, key } => ServerTls::from_files(cert, key)?,
    };
    Ok(Some(tls.with_alpn(ALPN)?))
}

/// Create the directory of the default store file, readable only by its owner.
fn create_private_dir(path: &Path) -> Result<(), ApiError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| ApiError::Io {
        op: format!("create the state directory {}", dir.display()),
        source,
    })
}

/// One accepted connection.
struct Connection {
    pub(crate) state: Arc<State>,
    tls: Option<ServerTls>,
    watcher: Watcher,
    options: MasterOptions,
    _permit: (OwnedSemaphorePermit, SourcePermit),
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        if !first_byte(&stream, self.options.header_timeout).await {
            return;
        }
        match self.tls.clone() {
            None => self.serve_io(stream).await,
            Some(tls) => {
                let handshake = tokio::time::timeout(
                    self.options.tls_handshake_timeout,
                    tls.acceptor().accept(stream),
                );
                let stream = tokio::select! {
                    _ = self.state.shutdown.cancelled() => return,
                    r = handshake => match r {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("tls handshake timed out");
                            return;
                        }
                    },
                };
                self.serve_io(stream).await
            }
        }
    }

    async fn serve_io<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.options.header_timeout)
            .max_buf_size(64 * 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(64)
            .max_header_list_size(32 * 1024)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let state = self.state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(router::handle(state, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(io), service);
        if let Err(e) = self.watcher.watch(conn).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Run a master for `config` until `shutdown` is cancelled: [`MasterOptions::from_env`],
/// [`Master::bind`], a newly generated API key printed once to stderr, the listening URL
/// logged, then [`Master::run`].
///
/// Not cancel safe: stop it with `shutdown` and await it.
pub async fn serve(config: MasterConfig, shutdown: CancellationToken) -> Result<(), ApiError> {
    serve_with(config, MasterOptions::from_env()?, shutdown).await
}

/// [`serve`] with the given options instead of [`MasterOptions::from_env`] (the `nodepass`
/// executable adds the tunnel options it reads from the environment).
///
/// Not cancel safe: stop it with `shutdown` and await it.
pub async fn serve_with(
    config: MasterConfig,
    options: MasterOptions,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let mut master = Master::bind(&config, options).await?;
    if let Some(path) = master.state_path() {
        tracing::info!(state = %path.display(), "state store opened");
    }
    if let Some(key) = master.take_generated_key() {
        // Deliberately not a log line: logs are kept, this is shown once.
        eprintln!(
            "nodepass master: new API key (shown only now, store it; send it as X-API-Key): {}",
            key.expose()
        );
    }
    tracing::info!("master API listening on {}", master.url());
    master.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_the_environment_values() {
        let o = MasterOptions::from_values(Some("k3y"), Some("https://a.example")).unwrap();
        assert_eq!(o.api_key.unwrap().expose(), "k3y");
        assert_eq!(o.cors, CorsOrigins::List(vec!["https://a.example".into()]));
        let o = MasterOptions::from_values(None, None).unwrap();
        assert!(o.api_key.is_none());
        assert_eq!(o.cors, CorsOrigins::Any);
        let e = MasterOptions::from_values(Some(""), None).unwrap_err();
        assert!(e.to_string().contains(API_KEY_ENV), "{e}");
        let e = MasterOptions::from_values(None, Some("nope")).unwrap_err();
        assert!(e.to_string().contains(CORS_ENV), "{e}");
        assert!(
            !format!(
                "{:?}",
                MasterOptions::from_values(Some("k3y"), None).unwrap()
            )
            .contains("k3y")
        );
    }

    #[tokio::test]
    async fn a_missing_state_directory_is_created_for_the_owner_only() {
        let dir = nodepass_testkit::temp_dir("state-dir");
        let file = dir.path().join("a").join("b").join("state.db");
        let listen = nodepass_core::config::Endpoint::new("127.0.0.1", 0).unwrap();
        let config = MasterConfig::builder(listen).state(&file).build().unwrap();
        let options = MasterOptions::from_values(Some("state-dir-test-key"), None).unwrap();
        let master = Master::bind(&config, options).await.unwrap();
        assert!(file.is_file(), "{} not created", file.display());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let parent = file.parent().unwrap();
            let mode = std::fs::metadata(parent).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", parent.display());
        }
        drop(master);
    }

    #[tokio::test]
    async fn a_state_directory_that_cannot_be_made_is_a_clear_error() {
        let dir = nodepass_testkit::temp_dir("state-dir-error");
        let blocker = dir.path().join("a-file");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let file = blocker.join("state.db");
        let listen = nodepass_core::config::Endpoint::new("127.0.0.1", 0).unwrap();
        let config = MasterConfig::builder(listen).state(&file).build().unwrap();
        let options = MasterOptions::from_values(Some("state-dir-test-key"), None).unwrap();
        let Err(err) = Master::bind(&config, options).await else {
            panic!("a state directory under a file cannot be made");
        };
        let text = err.to_string();
        assert!(text.contains("create the state directory"), "{text}");
        assert!(text.contains("a-file"), "names the directory: {text}");
        assert!(!text.contains("state-dir-test-key"), "{text}");
    }

    #[test]
    fn the_default_state_path_follows_xdg() {
        let p = default_state_path();
        assert!(
            p.ends_with("nodepass/nodepass.db") || p == Path::new(DEFAULT_STATE_FILE),
            "{}",
            p.display()
        );
    }
}
