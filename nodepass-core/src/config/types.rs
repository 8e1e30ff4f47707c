//! Typed configuration: what a NodePass URL means once parsed.
//!
//! Every value here is already validated; code that runs a tunnel never looks at strings again.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::secret::TunnelKey;

/// Default DNS cache time-to-live (`dns`).
pub const DEFAULT_DNS_TTL: Duration = Duration::from_secs(300);
/// Default minimum client pool size (`min`).
pub const DEFAULT_POOL_MIN: u32 = 64;
/// Default maximum pool size announced by the server (`max`).
pub const DEFAULT_POOL_MAX: u32 = 1024;
/// Largest allowed `min` / `max`.
pub const POOL_LIMIT: u32 = 65536;
/// Default concurrent session limit (`slot`).
pub const DEFAULT_SLOT: u32 = 65536;
/// Default interval of the primary-backup strategy's check for a recovered primary (`fallback`).
pub const DEFAULT_FALLBACK_INTERVAL: Duration = Duration::from_secs(300);
/// Default probe interval of the latency strategy (`probe` with `lbs=1`).
pub const DEFAULT_LATENCY_PROBE: Duration = Duration::from_secs(10);
/// Shortest accepted probe interval (`probe`).
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Default WebSocket ping interval (`wsping`): shorter than common proxy read timeouts
/// (nginx 60 s, most CDNs 100 s), so idle pooled WebSocket connections survive them.
pub const DEFAULT_WS_PING: Duration = Duration::from_secs(20);
/// Shortest accepted WebSocket ping interval (`wsping`).
pub const MIN_WS_PING: Duration = Duration::from_secs(1);
/// Longest accepted WebSocket ping interval (`wsping`).
pub const MAX_WS_PING: Duration = Duration::from_secs(600);
/// Default WebSocket request path (`wspath`).
pub const DEFAULT_WS_PATH: &str = "/";
/// Longest accepted `wspath` / `wshost`.
pub const MAX_WS_FIELD_LEN: usize = 255;
/// Default API prefix of the master.
pub const DEFAULT_MASTER_PREFIX: &str = "/api";

/// A parsed instance URL: the scheme picks the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Config {
    /// `server://`
    Server(ServerConfig),
    /// `client://`
    Client(ClientConfig),
    /// `master://`
    Master(MasterConfig),
}

/// The role named by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `server://`
    Server,
    /// `client://`
    Client,
    /// `master://`
    Master,
}

impl Role {
    /// The URL scheme of this role.
    pub fn scheme(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
            Role::Master => "master",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// The host part of an address: empty (all addresses), an IP literal, or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// Empty host: listen on all addresses (dialing it means loopback).
    Any,
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name (lower-cased).
    Name(String),
}

/// `host:port` as written in a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The host.
    pub host: Host,
    /// The port (0 asks the OS for any free port when listening).
    pub port: u16,
}

/// Log level (`log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogLevel {
    /// `none`: silent.
    None,
    /// `debug`
    Debug,
    /// `info` (default)
    #[default]
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
    /// `event`: only the periodic status events.
    Event,
}

/// TLS mode (`tls`, with `crt` and `key` for mode 2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TlsMode {
    /// `tls=0`: plain TCP.
    #[default]
    Off,
    /// `tls=1`: a self-signed certificate made at start.
    SelfSigned,
    /// `tls=2`: certificate chain and private key from PEM files (reloaded when they change).
    Files {
        /// `crt`: PEM certificate chain.
        cert: PathBuf,
        /// `key`: PEM private key.
        key: PathBuf,
    },
}

impl TlsMode {
    /// The `tls=` digit.
    pub fn code(&self) -> u8 {
        match self {
            TlsMode::Off => 0,
            TlsMode::SelfSigned => 1,
            TlsMode::Files { .. } => 2,
        }
    }
}

/// Server data-flow mode (`mode` on a server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServerMode {
    /// `0`: reverse if the target address can be bound, else forward.
    #[default]
    Auto,
    /// `1`: the server accepts users on its target address (expose a service behind NAT).
    Reverse,
    /// `2`: the client accepts users; the server dials its targets.
    Forward,
}

/// Client mode (`mode` on a client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClientMode {
    /// `0`: single-end if the tunnel address can be bound, else dual-end.
    #[default]
    Auto,
    /// `1`: a local port forwarder: listen on the tunnel address, dial the target, no server.
    SingleEnd,
    /// `2`: connect to a server.
    DualEnd,
}

/// Pool transport (`type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PoolType {
    /// `0`: TCP (with TLS when `tls` >= 1).
    #[default]
    Tcp,
    /// `1`: QUIC (needs `tls` >= 1).
    Quic,
    /// `2`: WebSocket.
    WebSocket,
    /// `3`: HTTP/2 (needs `tls` >= 1).
    Http2,
}

impl PoolType {
    /// How much of a new tunnel connection of this transport can be made on one runtime and
    /// then used on another (the low-priority refills and handshakes of `tunnel::background`):
    /// a TCP or TLS socket is registered again where it is used (`TunnelStream::rebind`), a
    /// WebSocket's tasks stay on the runtime that started them (so only the TCP and TLS under
    /// it move), and an HTTP/2 or QUIC carrier stays where it was made.
    pub(crate) fn movable(self) -> Movable {
        match self {
            PoolType::Tcp => Movable::Whole,
            PoolType::WebSocket => Movable::Layer,
            PoolType::Quic | PoolType::Http2 => Movable::Nothing,
        }
    }
}

/// See [`PoolType::movable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Movable {
    /// The whole connection, handshakes included.
    Whole,
    /// The TCP and TLS under the transport.
    Layer,
    /// Nothing.
    Nothing,
}

/// What a WebSocket's handshake proofs are bound to (`wsbind`, `type=2` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WsBinding {
    /// `1`: the TLS session under the WebSocket (its exporter; zeros without TLS), so a relay
    /// that terminates TLS is detected.
    #[default]
    Tls,
    /// `0`: no channel binding, for a WebSocket whose TLS a trusted proxy terminates (a CDN or
    /// nginx). SPAKE2 still refuses a wrong key, but a relay that terminates TLS is no longer
    /// detected; on a client it also means TLS to the proxy from the first connection, with the
    /// proxy's certificate verified (web roots plus `ca=`, name `sni=` or the tunnel host).
    Off,
}

/// The WebSocket transport's settings (`wspath`, `wshost`, `wsping`, `wsbind`), used with
/// `type=2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebSocketOptions {
    /// `wspath`: the request path (default `/`); the server answers 404 to any other.
    pub path: String,
    /// `wshost` (client): the `Host` header to send; `None` = the tunnel address.
    pub host: Option<String>,
    /// `wsping`: ping interval on every WebSocket (default 20s); a peer silent for three
    /// intervals is dead.
    pub ping: Duration,
    /// `wsbind`: what the handshake proofs are bound to (default [`WsBinding::Tls`]; see
    /// docs/protocol.md, "Proxies that terminate TLS").
    pub binding: WsBinding,
}

impl Default for WebSocketOptions {
    /// Path `/`, the tunnel address as `Host`, a ping every 20 s, bound to the TLS session.
    fn default() -> Self {
        WebSocketOptions {
            path: DEFAULT_WS_PATH.to_string(),
            host: None,
            ping: DEFAULT_WS_PING,
            binding: WsBinding::Tls,
        }
    }
}

/// Source address for outbound target connections (`dial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DialAddr {
    /// `auto`: let the OS choose.
    #[default]
    Auto,
    /// Bind this source IP before connecting.
    Ip(IpAddr),
}

/// PROXY protocol header sent to the target (`proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProxyProtocol {
    /// `0`: none.
    #[default]
    Off,
    /// `1`: version 1 (text).
    V1,
    /// `2`: version 2 (binary).
    V2,
}

/// Protocols refused by sniffing the first bytes of a user connection (`block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BlockSet {
    /// `1`: SOCKS 4/5.
    pub socks: bool,
    /// `2`: HTTP/1.x requests.
    pub http: bool,
    /// `3`: TLS client hellos.
    pub tls: bool,
}

impl BlockSet {
    /// True when nothing is blocked.
    pub fn is_empty(&self) -> bool {
        !(self.socks || self.http || self.tls)
    }
}

/// How a session chooses among several targets (`lbs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LoadBalance {
    /// `0`: round-robin over the targets that are up (default).
    #[default]
    RoundRobin,
    /// `1`: the target with the lowest measured latency, switching only on a clear gain.
    Latency,
    /// `2`: the first target in order that is up; back to the primary after `fallback`.
    PrimaryBackup,
}

/// Target selection and health settings (`lbs`, `fallback`, `probe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Balance {
    /// `lbs`: the strategy.
    pub strategy: LoadBalance,
    /// `fallback`: with `lbs=2`, how often a backup in use checks whether an earlier target
    /// (the primary first) is back (default 5m).
    pub fallback: Duration,
    /// `probe`: interval of the active TCP-connect probes; `None` = no probes (default, except
    /// 10s with `lbs=1`).
    pub probe: Option<Duration>,
}

impl Default for Balance {
    /// Round-robin, no probes, `fallback` 5m.
    fn default() -> Self {
        Balance {
            strategy: LoadBalance::RoundRobin,
            fallback: DEFAULT_FALLBACK_INTERVAL,
            probe: None,
        }
    }
}

/// Parameters shared by the server and the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunnelParams {
    /// The tunnel key (explicit or derived from the tunnel port).
    pub key: TunnelKey,
    /// True when no key was given and it was derived from the tunnel port.
    pub key_derived: bool,
    /// Tunnel address: where the server listens / the client dials.
    pub tunnel: Endpoint,
    /// Target addresses (at least one), chosen by `balance` with fail-over.
    pub targets: Vec<Endpoint>,
    /// `lbs`, `fallback`, `probe`: how targets are chosen and watched.
    pub balance: Balance,
    /// `log`
    pub log: LogLevel,
    /// `dns`: DNS cache TTL; zero disables the cache.
    pub dns_ttl: Duration,
    /// `dial`
    pub dial: DialAddr,
    /// `read`: idle timeout of a session; `None` = no timeout.
    pub read_timeout: Option<Duration>,
    /// `rate`: bandwidth limit in Mbit/s; `None` = unlimited.
    pub rate_mbps: Option<NonZeroU32>,
    /// `slot`: max concurrent TCP+UDP sessions; `None` = unlimited.
    pub slot: Option<NonZeroU32>,
    /// `proxy`
    pub proxy: ProxyProtocol,
    /// `block`
    pub block: BlockSet,
    /// False when `notcp=1`.
    pub tcp: bool,
    /// False when `noudp=1`.
    pub udp: bool,
}

/// `server://` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Shared tunnel parameters.
    pub params: TunnelParams,
    /// `tls`, `crt`, `key`
    pub tls: TlsMode,
    /// `max`: the largest pool the client may keep (1..=65536).
    pub max: NonZeroU32,
    /// `mode`
    pub mode: ServerMode,
    /// `type`
    pub pool_type: PoolType,
    /// `wspath`, `wsping` (with `type=2`)
    pub ws: WebSocketOptions,
}

/// `client://` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Shared tunnel parameters.
    pub params: TunnelParams,
    /// `sni`: the name to verify a `tls=2` server certificate against; `None` = the tunnel host.
    pub sni: Option<String>,
    /// `ca`: extra PEM trust anchors for verifying a `tls=2` server (added to the built-in roots).
    pub ca: Option<PathBuf>,
    /// `min`: the smallest pool the client keeps warm (1..=65536).
    pub min: NonZeroU32,
    /// `mode`
    pub mode: ClientMode,
    /// `type`: [`PoolType::Tcp`] (default) learns the transport from the server;
    /// [`PoolType::WebSocket`] speaks WebSocket from the first connection (needed when an HTTP
    /// proxy sits in front of the server).
    pub pool_type: PoolType,
    /// `wspath`, `wshost`, `wsping`: used whenever the transport is WebSocket.
    pub ws: WebSocketOptions,
}

/// `master://` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterConfig {
    /// Listen address of the API.
    pub listen: Endpoint,
    /// API path prefix, starting with `/`, without a trailing `/` (default `/api`).
    pub prefix: String,
    /// `log`
    pub log: LogLevel,
    /// `tls`, `crt`, `key`
    pub tls: TlsMode,
    /// `state`: path of the state store; `None` = the default location.
    pub state: Option<PathBuf>,
    /// `api`: the dialect the REST API speaks (default [`ApiDialect::NodePass`]).
    pub api: ApiDialect,
    /// `store=postgres://USER@HOST:PORT/DB`: keep the state in a PostgreSQL database shared
    /// by a fleet of masters instead of the SQLite file (`None`, the default). Never holds a
    /// password (refused in the URL).
    pub store: Option<PostgresUrl>,
    /// `node`: this master's node name in the fleet (required with `store`).
    pub node: Option<String>,
    /// `store_password_file`: a file holding the database password (otherwise
    /// `NODEPASS_STORE_PASSWORD` or `PGPASSWORD`, read by the master).
    pub store_password_file: Option<PathBuf>,
}

/// `store=postgres://USER@HOST:PORT/DB` of a master URL (no password, no parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresUrl {
    /// Database user.
    pub user: String,
    /// Server host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Server port (default 5432).
    pub port: u16,
    /// Database name.
    pub dbname: String,
}

impl PostgresUrl {
    /// Parse `postgres://USER@HOST[:PORT]/DB` (or `postgresql://`). A password
    /// (`USER:PASSWORD@`) is refused without echoing it: it would show in the process list.
    pub fn parse(field: &str, value: &str) -> Result<PostgresUrl, ConfigError> {
        let bad = |reason: &str| ConfigError::Invalid {
            field: field.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = value
            .strip_prefix("postgres://")
            .or_else(|| value.strip_prefix("postgresql://"))
            .ok_or_else(|| bad("expected postgres://USER@HOST:PORT/DB"))?;
        let (auth, rest) = rest
            .split_once('@')
            .ok_or_else(|| bad("expected postgres://USER@HOST:PORT/DB (the user is missing)"))?;
        if auth.contains(':') || rest.contains('@') {
            return Err(ConfigError::Invalid {
                field: field.to_owned(),
                value: crate::config::MASK.to_owned(),
                reason: "a password in the store URL would be visible in the process list; \
                         put it in store_password_file= or NODEPASS_STORE_PASSWORD (or PGPASSWORD)"
                    .to_owned(),
            });
        }
        if rest.contains('?') || rest.contains('#') {
            return Err(bad("the store URL takes no parameters"));
        }
        let (address, dbname) = rest.split_once('/').ok_or_else(|| {
            bad("expected postgres://USER@HOST:PORT/DB (the database is missing)")
        })?;
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        if !plain(auth) {
            return Err(bad("the user must be letters, digits, '_', '-' or '.'"));
        }
        if !plain(dbname) {
            return Err(bad(
                "the database name must be letters, digits, '_', '-' or '.'",
            ));
        }
        let (host, port) = if let Some(v6) = address.strip_prefix('[') {
            let (host, tail) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            (host, tail.strip_prefix(':'))
        } else {
            match address.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            }
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        {
            return Err(bad("expected a host name or IP address"));
        }
        let port = match port {
            None => 5432,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("expected a port from 1 to 65535"))?,
        };
        Ok(PostgresUrl {
            user: auth.to_owned(),
            host: host.to_owned(),
            port,
            dbname: dbname.to_owned(),
        })
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "postgres://{}@[{}]:{}/{}",
                self.user, self.host, self.port, self.dbname
            )
        } else {
            write!(
                f,
                "postgres://{}@{}:{}/{}",
                self.user, self.host, self.port, self.dbname
            )
        }
    }
}

/// `api=`: which REST dialect a master serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ApiDialect {
    /// `nodepass`: the contract of the Go NodePass v1.14 master (bare JSON, `{"error"}`).
    #[default]
    NodePass,
    /// `envelope`: `{"success", "data"}` envelopes with the API reference's field names.
    Envelope,
}
