//! Typed construction of server, client and master configuration, without a URL string.
//!
//! [`ServerConfig::builder`], [`ClientConfig::builder`] and [`MasterConfig::builder`] start from
//! the addresses a configuration cannot do without; each setter stands for one URL parameter
//! (named in its documentation) and `build()` checks everything.
//!
//! The URL stays the canonical form. A builder records each setting in the URL's spelling and
//! `build()` runs the URL parser's own checks over them (the same parameter parsers and
//! cross-parameter rules, `parse.rs` and `params.rs`; nothing is checked twice in two ways), so:
//! - a builder and the equivalent URL give equal values (tested in `builder_tests.rs`), and
//!   `Config::to_string()` prints the builder's result as that URL;
//! - bad input is the same [`ConfigError`] a URL would get, naming the URL parameter
//!   (`wsping`, `max`, `target`, ...).
//!
//! The defaults (a setting not made keeps the value of a URL without that parameter) and an
//! example are in the public docs of [`config`](super), section "Typed construction".

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::duration;
use super::params::{Query, invalid};
use super::parse::{self, TunnelParts};
use super::secret::TunnelKey;
use super::types::{
    ApiDialect, BlockSet, ClientConfig, ClientMode, DialAddr, Endpoint, LoadBalance, LogLevel,
    MasterConfig, PoolType, PostgresUrl, ProxyProtocol, ServerConfig, ServerMode, TlsMode,
    WsBinding,
};

/// What the builders share: the settings so far, in the URL's spelling.
#[derive(Debug, Clone)]
struct Draft {
    /// The explicit key (masked in `Debug`), checked by `build()`.
    key: Option<TunnelKey>,
    /// The tunnel address (server, client) or the listen address (master).
    address: Endpoint,
    /// The targets (server, client).
    targets: Vec<Endpoint>,
    /// The master's API prefix as given.
    prefix: Option<String>,
    /// The parameters set so far.
    query: Query,
    /// The first setting that has no URL spelling (a path that is not UTF-8), returned by
    /// `build()`.
    error: Option<ConfigError>,
}

impl Draft {
    fn new(address: Endpoint, targets: Vec<Endpoint>) -> Draft {
        Draft {
            key: None,
            address,
            targets,
            prefix: None,
            query: Query::default(),
            error: None,
        }
    }

    fn set(&mut self, name: &'static str, value: String) {
        self.query.set(name, value);
    }

    fn set_path(&mut self, name: &'static str, path: &Path) {
        match path.to_str() {
            Some(p) => self.set(name, p.to_owned()),
            None => {
                let bad = invalid(
                    name,
                    &path.to_string_lossy(),
                    "not valid UTF-8 (a URL cannot carry it)",
                );
                self.error.get_or_insert(bad);
            }
        }
    }

    fn set_tls(&mut self, tls: &TlsMode) {
        self.set("tls", tls.code().to_string());
        if let TlsMode::Files { cert, key } = tls {
            self.set_path("crt", cert);
            self.set_path("key", key);
        }
    }

    /// The checked address part and the parameters, for `parse::server` / `parse::client`.
    fn tunnel_parts(self) -> Result<(TunnelParts, Query), ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let key = self
            .key
            .map(|k| parse::tunnel_key(k.expose().to_owned()))
            .transpose()?;
        let parts = TunnelParts {
            key,
            tunnel: self.address,
            targets: self.targets,
        };
        Ok((parts, self.query))
    }
}

/// The setters a server and a client share (the parameters of [`TunnelParams`]
/// (super::TunnelParams), the WebSocket settings and `type`).
macro_rules! tunnel_setters {
    () => {
        /// Add a target after the ones given so far (`/TARGET,TARGET`); the targets are used in
        /// this order by the balancing strategy.
        pub fn target(mut self, target: impl Into<Endpoint>) -> Self {
            self.draft.targets.push(target.into());
            self
        }

        /// The tunnel key (`KEY@`). Default: none, derived from the tunnel port (both ends
        /// agree on it, but anyone who knows the port does too). Empty or with control
        /// characters: an error naming `tunnel key`.
        pub fn key(mut self, key: impl Into<String>) -> Self {
            self.draft.key = Some(TunnelKey::new(key));
            self
        }

        /// `log`: the log level (default [`LogLevel::Info`]).
        pub fn log(mut self, level: LogLevel) -> Self {
            self.draft.set("log", level.to_string());
            self
        }

        /// `dns`: how long resolved names are cached (default 5m; zero disables the cache).
        pub fn dns_ttl(mut self, ttl: Duration) -> Self {
            self.draft.set("dns", duration::format(ttl));
            self
        }

        /// `dial`: the source address of outbound target connections (default
        /// [`DialAddr::Auto`]).
        pub fn dial(mut self, source: DialAddr) -> Self {
            self.draft.set("dial", source.to_string());
            self
        }

        /// `read`: the idle timeout of a session (default zero: none).
        pub fn read_timeout(mut self, idle: Duration) -> Self {
            self.draft.set("read", duration::format(idle));
            self
        }

        /// `rate`: the bandwidth limit in Mbit/s (default 0: unlimited).
        pub fn rate_mbps(mut self, mbps: u32) -> Self {
            self.draft.set("rate", mbps.to_string());
            self
        }

        /// `slot`: the most concurrent TCP and UDP sessions (default 65536; 0: unlimited).
        pub fn slot(mut self, sessions: u32) -> Self {
            self.draft.set("slot", sessions.to_string());
            self
        }

        /// `proxy`: the PROXY protocol header sent to the target (default off).
        pub fn proxy(mut self, version: ProxyProtocol) -> Self {
            self.draft.set("proxy", version.to_string());
            self
        }

        /// `block`: the protocols refused by sniffing (default none).
        pub fn block(mut self, protocols: BlockSet) -> Self {
            self.draft.set("block", protocols.to_string());
            self
        }

        /// `notcp`: carry TCP (default true). Turning off both TCP and UDP is an error.
        pub fn tcp(mut self, on: bool) -> Self {
            self.draft.set("notcp", u8::from(!on).to_string());
            self
        }

        /// `noudp`: carry UDP (default true). Turning off both TCP and UDP is an error.
        pub fn udp(mut self, on: bool) -> Self {
            self.draft.set("noudp", u8::from(!on).to_string());
            self
        }

        /// `lbs`: how a session chooses among the targets (default round-robin).
        pub fn load_balance(mut self, strategy: LoadBalance) -> Self {
            self.draft.set("lbs", strategy.to_string());
            self
        }

        /// `fallback`: with [`LoadBalance::PrimaryBackup`] only, how often a backup in use
        /// checks whether the primary is back (default 5m; must be positive).
        pub fn fallback(mut self, interval: Duration) -> Self {
            self.draft.set("fallback", duration::format(interval));
            self
        }

        /// `probe`: the interval of the active target probes, at least 100ms; zero turns them
        /// off (default off, 10s with [`LoadBalance::Latency`], which needs them).
        pub fn probe(mut self, interval: Duration) -> Self {
            self.draft.set("probe", duration::format(interval));
            self
        }

        /// `wspath`: the WebSocket request path, starting with `/` (default `/`).
        pub fn ws_path(mut self, path: impl Into<String>) -> Self {
            self.draft.set("wspath", path.into());
            self
        }

        /// `wsping`: the WebSocket ping interval, 1s to 10m (default 20s).
        pub fn ws_ping(mut self, interval: Duration) -> Self {
            self.draft.set("wsping", duration::format(interval));
            self
        }

        /// `wsbind`: what the handshake proofs of a WebSocket are bound to (default
        /// [`WsBinding::Tls`]); [`WsBinding::Off`] only with `type=2`, on a server only with
        /// TLS (see docs/protocol.md, "Proxies that terminate TLS").
        pub fn ws_binding(mut self, binding: WsBinding) -> Self {
            self.draft.set("wsbind", binding.to_string());
            self
        }
    };
}

/// Builds a [`ServerConfig`] without a URL string; start with [`ServerConfig::builder`]. Each setter
/// is one URL parameter, a setting not made keeps the URL's default, and `build()` runs the URL
/// parser's checks; see [typed construction](super#typed-construction).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build()`"]
pub struct ServerBuilder {
    draft: Draft,
}

impl ServerConfig {
    /// A server that listens for its client on `tunnel` and serves `target` (add more with
    /// [`ServerBuilder::target`]): `server://TUNNEL/TARGET`. In reverse flow the server accepts
    /// users on the target address (port 0 picks a free one), in forward flow it dials it.
    pub fn builder(tunnel: impl Into<Endpoint>, target: impl Into<Endpoint>) -> ServerBuilder {
        ServerBuilder {
            draft: Draft::new(tunnel.into(), vec![target.into()]),
        }
    }
}

impl ServerBuilder {
    tunnel_setters!();

    /// `tls` (with `crt` and `key` for [`TlsMode::Files`]): default [`TlsMode::Off`].
    pub fn tls(mut self, tls: TlsMode) -> Self {
        self.draft.set_tls(&tls);
        self
    }

    /// `max`: the largest pool the client may keep, 1 to 65536 (default 1024).
    pub fn max(mut self, connections: u32) -> Self {
        self.draft.set("max", connections.to_string());
        self
    }

    /// `mode`: the data flow (default [`ServerMode::Auto`]).
    pub fn mode(mut self, mode: ServerMode) -> Self {
        self.draft.set("mode", mode.to_string());
        self
    }

    /// `type`: the pool transport (default [`PoolType::Tcp`]; QUIC and HTTP/2 need TLS).
    pub fn pool_type(mut self, transport: PoolType) -> Self {
        self.draft.set("type", transport.to_string());
        self
    }

    /// Check every setting as the URL parser does and give the configuration.
    pub fn build(self) -> Result<ServerConfig, ConfigError> {
        let (parts, query) = self.draft.tunnel_parts()?;
        parse::server(parts, query)
    }
}

/// Builds a [`ClientConfig`] without a URL string; start with [`ClientConfig::builder`]. Each setter
/// is one URL parameter, a setting not made keeps the URL's default, and `build()` runs the URL
/// parser's checks; see [typed construction](super#typed-construction).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build()`"]
pub struct ClientBuilder {
    draft: Draft,
}

impl ClientConfig {
    /// A client of the server at `tunnel` that serves `target` (add more with
    /// [`ClientBuilder::target`]): `client://TUNNEL/TARGET`. In forward flow it accepts users
    /// on the target address, in reverse flow it dials it; a single-end client
    /// ([`ClientMode::SingleEnd`]) listens on `tunnel` itself.
    pub fn builder(tunnel: impl Into<Endpoint>, target: impl Into<Endpoint>) -> ClientBuilder {
        ClientBuilder {
            draft: Draft::new(tunnel.into(), vec![target.into()]),
        }
    }
}

impl ClientBuilder {
    tunnel_setters!();

    /// `sni`: the name a `tls=2` server's certificate is checked against (default: the tunnel
    /// host).
    pub fn sni(mut self, name: impl Into<String>) -> Self {
        self.draft.set("sni", name.into());
        self
    }

    /// `ca`: a PEM file of extra trust anchors for a `tls=2` server (default: the built-in
    /// roots only).
    pub fn ca(mut self, pem_file: impl Into<PathBuf>) -> Self {
        self.draft.set_path("ca", &pem_file.into());
        self
    }

    /// `min`: the smallest pool the client keeps warm, 1 to 65536 (default 64).
    pub fn min(mut self, connections: u32) -> Self {
        self.draft.set("min", connections.to_string());
        self
    }

    /// `mode`: default [`ClientMode::Auto`].
    pub fn mode(mut self, mode: ClientMode) -> Self {
        self.draft.set("mode", mode.to_string());
        self
    }

    /// `type`: [`PoolType::Tcp`] (default: learn the transport from the server),
    /// [`PoolType::Quic`] (QUIC from the first connection) or [`PoolType::WebSocket`]
    /// (WebSocket from the first connection); [`PoolType::Http2`] is an error.
    pub fn pool_type(mut self, transport: PoolType) -> Self {
        self.draft.set("type", transport.to_string());
        self
    }

    /// `wshost`: the `Host` header of the WebSocket requests (default: the tunnel address).
    pub fn ws_host(mut self, host: impl Into<String>) -> Self {
        self.draft.set("wshost", host.into());
        self
    }

    /// Check every setting as the URL parser does and give the configuration.
    pub fn build(self) -> Result<ClientConfig, ConfigError> {
        let (parts, query) = self.draft.tunnel_parts()?;
        parse::client(parts, query)
    }
}

/// Builds a [`MasterConfig`] without a URL string; start with [`MasterConfig::builder`]. Each setter
/// is one URL parameter, a setting not made keeps the URL's default, and `build()` runs the URL
/// parser's checks; see [typed construction](super#typed-construction).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build()`"]
pub struct MasterBuilder {
    draft: Draft,
}

impl MasterConfig {
    /// A master whose API listens on `listen`: `master://LISTEN`.
    pub fn builder(listen: impl Into<Endpoint>) -> MasterBuilder {
        MasterBuilder {
            draft: Draft::new(listen.into(), Vec::new()),
        }
    }
}

impl MasterBuilder {
    /// The API path prefix, such as `/api` (the default) or `/np/v1`; the leading `/` may be
    /// left out.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.draft.prefix = Some(prefix.into());
        self
    }

    /// `log`: the log level (default [`LogLevel::Info`]).
    pub fn log(mut self, level: LogLevel) -> Self {
        self.draft.set("log", level.to_string());
        self
    }

    /// `tls` (with `crt` and `key` for [`TlsMode::Files`]): default [`TlsMode::Off`].
    pub fn tls(mut self, tls: TlsMode) -> Self {
        self.draft.set_tls(&tls);
        self
    }

    /// `state`: the SQLite state file (default: beside the executable, as the master decides).
    pub fn state(mut self, file: impl Into<PathBuf>) -> Self {
        self.draft.set_path("state", &file.into());
        self
    }

    /// `api`: the REST dialect (default [`ApiDialect::NodePass`]).
    pub fn api(mut self, dialect: ApiDialect) -> Self {
        self.draft.set("api", dialect.to_string());
        self
    }

    /// `store`: keep the state in a PostgreSQL database shared by a fleet (needs
    /// [`node`](Self::node); excludes [`state`](Self::state)). Default: the SQLite file.
    pub fn store(mut self, database: &PostgresUrl) -> Self {
        self.draft.set("store", database.to_string());
        self
    }

    /// `node`: this master's name in the fleet (with [`store`](Self::store) only).
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.draft.set("node", name.into());
        self
    }

    /// `store_password_file`: a file holding the database password (with
    /// [`store`](Self::store) only).
    pub fn store_password_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.draft.set_path("store_password_file", &file.into());
        self
    }

    /// Check every setting as the URL parser does and give the configuration.
    pub fn build(self) -> Result<MasterConfig, ConfigError> {
        let draft = self.draft;
        if let Some(e) = draft.error {
            return Err(e);
        }
        let raw = draft.prefix.unwrap_or_default();
        let prefix = parse::prefix(raw.strip_prefix('/').unwrap_or(&raw))?;
        parse::master(draft.address, prefix, draft.query)
    }
}
