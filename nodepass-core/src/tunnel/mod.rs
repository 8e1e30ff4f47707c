//! [`Tunnel`]: a running server or client, in any data-flow mode.
//!
//! Build one from a [`TunnelConfig`] with [`Tunnel::bind`] (binds what can be bound now and
//! decides the mode), then either [`Tunnel::run`] it to completion or [`Tunnel::spawn`] it and
//! keep the [`TunnelHandle`] for its stats, state and addresses.
//!
//! Shutdown: cancelling the token passed to `run`/`spawn` stops accepting users and tunnel
//! connections and ends the control session (the server says `Goodbye`); sessions in flight get
//! [`TunnelOptions::shutdown_grace`] to finish, then are cut. `run` returns once every task has
//! ended.
//!
//! Roles live in the private modules `server`, `client` (dual-end) and `single` (single-end
//! forwarding); the user-facing accept loop and the target-dialing side are shared (`users`,
//! `targets`, with target selection and health in `balance`), UDP sessions are in `udp`.
//! `handshake` runs both sides of the authenticated handshake; `guard` limits, backs off and
//! logs unauthenticated connections on the server. `background` runs pool refills (dials and
//! handshakes) on a low-priority thread while the pool is not short.

mod background;
mod balance;
mod control;
mod guard;
mod handshake;
mod options;
mod server;
mod single;
mod targets;
mod udp;
mod users;
mod wire;

mod client;

pub use balance::TargetSnapshot;
pub use guard::{
    BACKOFF_AFTER, BACKOFF_MAX, LOG_INTERVAL, LOG_LINES_PER_INTERVAL, LOG_PER_SOURCE,
    LOG_SUMMARY_SOURCES, MAX_PENDING_HANDSHAKES, MAX_PENDING_PER_SOURCE, source_of,
};
pub use options::TunnelOptions;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{ClientConfig, Config, ServerConfig, TunnelParams};
use crate::error::{Error, Result, TunnelError};
use crate::limit::{RateLimiter, Slots};
use crate::pool::Pool;
use crate::relay::RelayCtx;
use crate::stats::{Stats, StatsSnapshot};

/// The configuration of a tunnel: a server or a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelConfig {
    /// `server://`
    Server(ServerConfig),
    /// `client://`
    Client(ClientConfig),
}

impl TunnelConfig {
    /// The shared tunnel parameters.
    pub fn params(&self) -> &TunnelParams {
        match self {
            TunnelConfig::Server(c) => &c.params,
            TunnelConfig::Client(c) => &c.params,
        }
    }
}

impl TryFrom<Config> for TunnelConfig {
    type Error = Error;

    fn try_from(c: Config) -> Result<Self> {
        match c {
            Config::Server(s) => Ok(TunnelConfig::Server(s)),
            Config::Client(c) => Ok(TunnelConfig::Client(c)),
            Config::Master(_) => Err(Error::Unsupported(
                "a master:// url describes the API, not a tunnel".into(),
            )),
        }
    }
}

impl From<ServerConfig> for TunnelConfig {
    fn from(c: ServerConfig) -> Self {
        TunnelConfig::Server(c)
    }
}

impl From<ClientConfig> for TunnelConfig {
    fn from(c: ClientConfig) -> Self {
        TunnelConfig::Client(c)
    }
}

impl FromStr for TunnelConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Config::from_str(s)?.try_into()
    }
}

/// The data flow a tunnel settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A dual-end client that has not yet heard from its server.
    Pending,
    /// The server accepts users and the client dials targets.
    Reverse,
    /// The client accepts users and the server dials targets.
    Forward,
    /// A client forwarding alone, without a server.
    SingleEnd,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Pending => "pending",
            Mode::Reverse => "reverse",
            Mode::Forward => "forward",
            Mode::SingleEnd => "single-end",
        })
    }
}

/// Where a tunnel is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelState {
    /// Bound, not yet running.
    Starting,
    /// Serving (server, single-end) or connected to its server (dual-end client).
    Ready,
    /// A dual-end client lost (or never had) its server and is retrying.
    Reconnecting {
        /// The last connection error; its [`kind`](TunnelError::kind) tells a refused key
        /// ([`ErrorKind::AuthRefused`](crate::ErrorKind::AuthRefused)) from a server that is
        /// down ([`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable)).
        error: TunnelError,
    },
    /// Stopped after a shutdown request.
    Stopped,
    /// Ended by an error.
    Failed {
        /// Why.
        error: TunnelError,
    },
}

impl TunnelState {
    /// True for the states a tunnel never leaves (`Stopped`, `Failed`).
    pub fn is_final(&self) -> bool {
        matches!(self, TunnelState::Stopped | TunnelState::Failed { .. })
    }
}

impl std::fmt::Display for TunnelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelState::Starting => f.write_str("starting"),
            TunnelState::Ready => f.write_str("ready"),
            TunnelState::Reconnecting { error } => {
                write!(f, "reconnecting ({}: {error})", error.kind())
            }
            TunnelState::Stopped => f.write_str("stopped"),
            TunnelState::Failed { error } => write!(f, "failed ({}: {error})", error.kind()),
        }
    }
}

/// [`TunnelHandle::wait_for`] gave up: the time ran out, or the tunnel ended, before the state
/// it waited for. Carries the last state seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The time ran out.
    #[error("tunnel still {last} after {waited:?}")]
    Timeout {
        /// How long was waited.
        waited: Duration,
        /// The state when the time ran out.
        last: TunnelState,
    },
    /// The tunnel ended (stopped or failed) without reaching the state.
    #[error("tunnel {last}")]
    Ended {
        /// The final state.
        last: TunnelState,
    },
}

impl WaitError {
    /// The last state seen.
    pub fn last(&self) -> &TunnelState {
        match self {
            WaitError::Timeout { last, .. } | WaitError::Ended { last } => last,
        }
    }
}

/// The local addresses a tunnel has bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    /// The server's tunnel listener, or a single-end client's listener.
    pub tunnel: Option<SocketAddr>,
    /// The user-facing TCP listener (server in reverse flow, client in forward flow).
    pub users: Option<SocketAddr>,
    /// The user-facing UDP socket.
    pub users_udp: Option<SocketAddr>,
}

/// State shared between a tunnel's tasks and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: Arc<Stats>,
    pub(crate) state: watch::Sender<TunnelState>,
    /// Never held across `.await`.
    pub(crate) addrs: Mutex<LocalAddrs>,
    pub(crate) mode: Mutex<Mode>,
    pub(crate) pool: Mutex<Option<Pool>>,
    /// The targets of the current run (set when it starts), for their statistics.
    pub(crate) targets: Mutex<Option<Arc<targets::Targets>>>,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            stats: Arc::new(Stats::default()),
            state: watch::Sender::new(TunnelState::Starting),
            addrs: Mutex::new(LocalAddrs::default()),
            mode: Mutex::new(Mode::Pending),
            pool: Mutex::new(None),
            targets: Mutex::new(None),
        })
    }

    pub(crate) fn set_state(&self, s: TunnelState) {
        self.state.send_replace(s);
    }

    pub(crate) fn set_mode(&self, m: Mode) {
        *crate::sync::lock(&self.mode) = m;
    }

    pub(crate) fn set_pool(&self, p: Option<Pool>) {
        *crate::sync::lock(&self.pool) = p;
    }

    pub(crate) fn update_addrs(&self, f: impl FnOnce(&mut LocalAddrs)) {
        f(&mut crate::sync::lock(&self.addrs));
    }
}

/// What every connection task of one tunnel needs.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) relay: RelayCtx,
    pub(crate) slots: Slots,
    pub(crate) params: Arc<TunnelParams>,
    pub(crate) targets: Arc<targets::Targets>,
    pub(crate) tracker: TaskTracker,
    /// Stop accepting and end sessions (the caller's shutdown token).
    pub(crate) stop: CancellationToken,
    /// The tunnel's timings and sizes.
    pub(crate) opts: Arc<TunnelOptions>,
}

impl Ctx {
    fn new(
        shared: Arc<Shared>,
        params: &TunnelParams,
        stop: CancellationToken,
        opts: Arc<TunnelOptions>,
    ) -> Self {
        let params = Arc::new(params.clone());
        Ctx {
            relay: RelayCtx {
                stats: shared.stats.clone(),
                rate: params.rate_mbps.map(RateLimiter::new),
                idle_timeout: params.read_timeout,
                hard_stop: CancellationToken::new(),
                zero_copy: opts.zero_copy,
                tap: None,
            },
            slots: Slots::new(params.slot),
            targets: targets::Targets::shared(&shared, &params),
            tracker: TaskTracker::new(),
            shared,
            params,
            stop,
            opts,
        }
    }
}

enum Role {
    Server(Box<server::Server>),
    Client(client::Client),
    Single(single::Single),
}

/// A bound tunnel, ready to run. See the [module docs](self).
pub struct Tunnel {
    role: Role,
    shared: Arc<Shared>,
    params: TunnelParams,
    opts: Arc<TunnelOptions>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("mode", &self.mode())
            .field("addrs", &self.local_addrs())
            .finish()
    }
}

impl Tunnel {
    /// [`Tunnel::bind_with`] the default [`TunnelOptions`]; `config` is a [`TunnelConfig`], a
    /// [`ServerConfig`] or a [`ClientConfig`] (from a URL or a builder).
    ///
    /// Cancel safety: safe; a dropped future closes whatever it had bound.
    pub async fn bind(config: impl Into<TunnelConfig>) -> Result<Tunnel> {
        Self::bind_with(config.into(), TunnelOptions::default()).await
    }

    /// Bind the listeners this configuration needs now and decide the mode (`mode=0` tries to
    /// bind and falls back as NodePass does), with the given timings and sizes. Errors: invalid
    /// options, bind failures, unsupported features, unreadable TLS files.
    ///
    /// Cancel safety: safe; a dropped future closes whatever it had bound.
    pub async fn bind_with(
        config: impl Into<TunnelConfig>,
        options: TunnelOptions,
    ) -> Result<Tunnel> {
        let config = config.into();
        options.validate()?;
        let shared = Shared::new();
        let params = config.params().clone();
        if params.is_derived_key_exposed() {
            tracing::warn!(
                tunnel = %params.tunnel,
                "no key given: the key is derived from the port and this tunnel is reachable from other hosts; set a key"
            );
        } else if let Some(why) = params.key.weakness().filter(|_| !params.key_derived) {
            tracing::warn!(
                reason = why,
                "weak tunnel key: easy to guess online; use a random key (`nodepass keygen` or `openssl rand -hex 16`)"
            );
        }
        let role = match config {
            TunnelConfig::Server(cfg) => {
                Role::Server(Box::new(server::Server::bind(cfg, &shared).await?))
            }
            TunnelConfig::Client(cfg) => match client::decide(&cfg).await? {
                client::Decision::Single(sockets) => {
                    Role::Single(single::Single::new(sockets, &shared))
                }
                client::Decision::Dual => Role::Client(client::Client::new(cfg, &shared)?),
            },
        };
        Ok(Tunnel {
            role,
            shared,
            params,
            opts: Arc::new(options),
        })
    }

    /// The addresses bound so far (a forward-flow client binds its user listener only after
    /// the server announced the flow: watch [`TunnelHandle::state`]).
    pub fn local_addrs(&self) -> LocalAddrs {
        *crate::sync::lock(&self.shared.addrs)
    }

    /// The data-flow mode (`Pending` for a dual-end client before its first session).
    pub fn mode(&self) -> Mode {
        *crate::sync::lock(&self.shared.mode)
    }

    /// Run until `shutdown` is cancelled (then drain within
    /// [`TunnelOptions::shutdown_grace`]) or a fatal
    /// error.
    ///
    /// Cancel safety: not cancel safe. A dropped future leaves the tunnel's tasks running
    /// until `shutdown` is cancelled, skips the grace period and never sets the final state;
    /// cancel `shutdown` and await the future instead.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let ctx = Ctx::new(
            self.shared.clone(),
            &self.params,
            shutdown.clone(),
            self.opts.clone(),
        );
        self.shared.set_state(TunnelState::Starting);
        let is_server = matches!(self.role, Role::Server(_));
        let events = tokio::spawn(
            status_events(
                self.shared.clone(),
                shutdown.clone(),
                !is_server,
                self.opts.status_interval,
            )
            .in_current_span(),
        );
        let probes = targets::spawn_probes(&ctx, is_server);
        let result = match self.role {
            Role::Server(s) => (*s).run(ctx.clone()).await,
            Role::Client(c) => c.run(ctx.clone()).await,
            Role::Single(s) => s.run(ctx.clone()).await,
        };
        // Stop whatever is still accepting (on error the token may not be cancelled yet).
        ctx.stop.cancel();
        ctx.tracker.close();
        if tokio::time::timeout(ctx.opts.shutdown_grace, ctx.tracker.wait())
            .await
            .is_err()
        {
            tracing::info!(
                sessions = ctx.tracker.len(),
                "grace period over, closing sessions still open"
            );
            ctx.relay.hard_stop.cancel();
            if tokio::time::timeout(Duration::from_secs(2), ctx.tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(tasks = ctx.tracker.len(), "tasks did not finish after cut");
            }
        }
        events.abort();
        probes.abort();
        // Wait for them, so nothing of this tunnel outlives `run`.
        let _ = events.await;
        let _ = probes.await;
        self.shared.set_pool(None);
        self.shared.set_state(match &result {
            Ok(()) => TunnelState::Stopped,
            Err(e) => TunnelState::Failed { error: e.into() },
        });
        result
    }

    /// Run in a new task; the handle reports stats and state and can stop it.
    pub fn spawn(self, shutdown: CancellationToken) -> TunnelHandle {
        let shared = self.shared.clone();
        let stop = shutdown.clone();
        // Tasks inherit the caller's span, so an embedder (the supervisor) can tag their logs.
        let task = tokio::spawn(self.run(shutdown).in_current_span());
        TunnelHandle {
            shared,
            stop,
            task: Arc::new(tokio::sync::Mutex::new(Some(task))),
        }
    }
}

/// A handle to a spawned tunnel. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TunnelHandle {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<()>>>>>,
}

impl TunnelHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Health and counters of each target, in URL order (empty before the tunnel runs).
    pub fn targets(&self) -> Vec<TargetSnapshot> {
        let targets = crate::sync::lock(&self.shared.targets);
        targets.as_ref().map(|t| t.snapshot()).unwrap_or_default()
    }

    /// Zero the traffic counters.
    pub fn reset_traffic(&self) {
        targets::reset_traffic(&self.shared);
        self.shared.stats.reset_traffic()
    }

    /// The tunnel's state, as a `watch` receiver.
    pub fn state(&self) -> watch::Receiver<TunnelState> {
        self.shared.state.subscribe()
    }

    /// The addresses bound so far.
    pub fn local_addrs(&self) -> LocalAddrs {
        *crate::sync::lock(&self.shared.addrs)
    }

    /// The data-flow mode.
    pub fn mode(&self) -> Mode {
        *crate::sync::lock(&self.shared.mode)
    }

    /// Wait until the state satisfies `pred` and return it. Gives up with a [`WaitError`]
    /// (which works with `?`) when `timeout` passes or the tunnel ends (`Stopped`, `Failed`)
    /// in a state `pred` does not accept.
    ///
    /// Cancel safety: safe; it only watches the state.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&TunnelState) -> bool,
    ) -> std::result::Result<TunnelState, WaitError> {
        let mut rx = self.state();
        let res = tokio::time::timeout(timeout, rx.wait_for(|s| pred(s) || s.is_final()))
            .await
            .map(|r| r.map(|s| s.clone()));
        match res {
            Ok(Ok(s)) if pred(&s) => Ok(s),
            Ok(Ok(s)) => Err(WaitError::Ended { last: s }),
            // The sender lives in `Shared`, which this handle keeps: not reached, but the
            // last state is the honest answer.
            Ok(Err(_)) => Err(WaitError::Ended {
                last: rx.borrow().clone(),
            }),
            Err(_) => Err(WaitError::Timeout {
                waited: timeout,
                last: rx.borrow().clone(),
            }),
        }
    }

    /// Wait until the tunnel is [`TunnelState::Ready`]; see [`wait_for`](Self::wait_for).
    ///
    /// Cancel safety: safe; it only watches the state.
    ///
    /// ```no_run
    /// use std::net::SocketAddr;
    /// use std::time::Duration;
    /// use nodepass_core::config::ClientConfig;
    /// use nodepass_core::{ErrorKind, Tunnel, TunnelOptions, tunnel::TunnelState};
    /// use tokio_util::sync::CancellationToken;
    ///
    /// async fn demo(stop: CancellationToken) -> Result<(), Box<dyn std::error::Error>> {
    /// let server = SocketAddr::from(([127, 0, 0, 1], 10101));
    /// let target = SocketAddr::from(([127, 0, 0, 1], 8080));
    /// // The same as parsing "client://key@127.0.0.1:10101/127.0.0.1:8080".
    /// let config = ClientConfig::builder(server, target).key("key").build()?;
    /// let mut options = TunnelOptions::default();
    /// options.handshake_timeout = Duration::from_secs(3);
    /// let client = Tunnel::bind_with(config, options).await?.spawn(stop);
    /// if let Err(e) = client.wait_ready(Duration::from_secs(10)).await {
    ///     if let TunnelState::Reconnecting { error } = e.last() {
    ///         if error.kind() == ErrorKind::AuthRefused { /* wrong key */ }
    ///     }
    ///     return Err(e.into());
    /// }
    /// println!("{} bytes in", client.stats().tcp_rx);
    /// Ok(())
    /// }
    /// ```
    pub async fn wait_ready(&self, timeout: Duration) -> std::result::Result<(), WaitError> {
        self.wait_for(timeout, |s| *s == TunnelState::Ready)
            .await
            .map(|_| ())
    }

    /// Ask the tunnel to stop (see the module docs for the order of shutdown).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Wait for the tunnel to end and return how it ended. A second call returns `Ok(())`.
    ///
    /// Cancel safety: safe; the tunnel keeps running and a later call still gets its result.
    pub async fn wait(&self) -> Result<()> {
        let mut guard = self.task.lock().await;
        let Some(task) = guard.as_mut() else {
            return Ok(());
        };
        let res = task.await;
        *guard = None;
        match res {
            Ok(r) => r,
            Err(e) => Err(Error::Io {
                context: "tunnel task panicked or was aborted".into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

/// The periodic status event, at the `event` log level (target `nodepass::event`). `pool_idle`
/// counts the idle tunnel connections; a client also shows `pool_target`, the number its
/// filler aims for (a server does not set it: the client decides).
async fn status_events(
    shared: Arc<Shared>,
    stop: CancellationToken,
    client: bool,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = shared.stats.snapshot();
        let mode = *crate::sync::lock(&shared.mode);
        if client {
            tracing::info!(
                target: "nodepass::event",
                %mode,
                tcp_rx = s.tcp_rx, tcp_tx = s.tcp_tx, udp_rx = s.udp_rx, udp_tx = s.udp_tx,
                tcp_active = s.tcp_active, udp_active = s.udp_active, refused = s.refused,
                pool_idle = s.pool_idle, pool_target = s.pool_capacity,
                rtt_ms = s.rtt_us as f64 / 1000.0,
                "status"
            );
        } else {
            tracing::info!(
                target: "nodepass::event",
                %mode,
                tcp_rx = s.tcp_rx, tcp_tx = s.tcp_tx, udp_rx = s.udp_rx, udp_tx = s.udp_tx,
                tcp_active = s.tcp_active, udp_active = s.udp_active, refused = s.refused,
                pool_idle = s.pool_idle,
                rtt_ms = s.rtt_us as f64 / 1000.0,
                "status"
            );
        }
        targets::log_status(&shared);
    }
}

#[cfg(test)]
mod tests;
