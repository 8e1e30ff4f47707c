//! The query parameters: which role accepts which, and how each value is spelled.
//!
//! [`PARAMS`] is the one list of names, in canonical order, with the roles that accept them.
//! Each enum has one table of codes used both to parse (`mode=2`) and to print it back.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::duration;
use super::types::{
    ApiDialect, Balance, BlockSet, ClientMode, DEFAULT_LATENCY_PROBE, DialAddr, LoadBalance,
    LogLevel, MIN_PROBE_INTERVAL, PoolType, ProxyProtocol, Role, ServerMode, TlsMode,
    WebSocketOptions, WsBinding,
};

const ALL: &[Role] = &[Role::Server, Role::Client, Role::Master];
const TUNNEL: &[Role] = &[Role::Server, Role::Client];
const SERVER_MASTER: &[Role] = &[Role::Server, Role::Master];

/// Every parameter in canonical order, with the roles that accept it (the command-line help
/// and the README table are checked against this list).
pub const PARAMS: &[(&str, &[Role])] = &[
    ("log", ALL),
    ("tls", SERVER_MASTER),
    ("crt", SERVER_MASTER),
    ("key", SERVER_MASTER),
    ("sni", &[Role::Client]),
    ("ca", &[Role::Client]),
    ("dns", TUNNEL),
    ("min", &[Role::Client]),
    ("max", &[Role::Server]),
    ("mode", TUNNEL),
    ("type", TUNNEL),
    ("wspath", TUNNEL),
    ("wshost", &[Role::Client]),
    ("wsping", TUNNEL),
    ("wsbind", TUNNEL),
    ("dial", TUNNEL),
    ("read", TUNNEL),
    ("rate", TUNNEL),
    ("slot", TUNNEL),
    ("proxy", TUNNEL),
    ("block", TUNNEL),
    ("notcp", TUNNEL),
    ("noudp", TUNNEL),
    ("lbs", TUNNEL),
    ("fallback", TUNNEL),
    ("probe", TUNNEL),
    ("state", &[Role::Master]),
    ("api", &[Role::Master]),
    ("store", &[Role::Master]),
    ("node", &[Role::Master]),
    ("store_password_file", &[Role::Master]),
];

/// The names `role` accepts, comma separated, in canonical order.
fn allowed_for(role: Role) -> String {
    let names: Vec<&str> = PARAMS
        .iter()
        .filter(|(_, roles)| roles.contains(&role))
        .map(|(name, _)| *name)
        .collect();
    names.join(", ")
}

/// The parameters of one URL, checked against the role; values are taken out one by one.
/// The builders fill one with [`Query::set`] in the URL's spelling.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    values: HashMap<&'static str, String>,
}

impl Query {
    /// Split and decode `query` (the text after `?`), refusing unknown, misplaced and repeated
    /// parameters.
    pub(crate) fn parse(role: Role, query: &str) -> Result<Query, ConfigError> {
        let mut values = HashMap::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            // A name that is not a plain word is most likely a key with an unencoded `?` or `&`
            // in it: refuse without echoing it.
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(ConfigError::Syntax(
                    "malformed query parameter name (percent-encode ?, & and # in the key)".into(),
                ));
            }
            let Some((known, roles)) = PARAMS.iter().find(|(n, _)| *n == name) else {
                return Err(ConfigError::Unknown {
                    name: name.into_owned(),
                    role,
                    allowed: allowed_for(role),
                });
            };
            if !roles.contains(&role) {
                let applies: Vec<&str> = roles.iter().map(|r| r.scheme()).collect();
                return Err(ConfigError::WrongRole {
                    name: name.into_owned(),
                    role,
                    applies_to: applies.join(", "),
                });
            }
            if values.insert(*known, value.into_owned()).is_some() {
                return Err(ConfigError::Duplicate(name.into_owned()));
            }
        }
        Ok(Query { values })
    }

    /// Set `name` (one of [`PARAMS`]) to `value`, replacing an earlier value: how the builders
    /// record a setting, spelled as in a URL.
    pub(crate) fn set(&mut self, name: &'static str, value: String) {
        debug_assert!(PARAMS.iter().any(|(n, _)| *n == name), "unknown {name}");
        self.values.insert(name, value);
    }

    /// Take the raw value of `name`, if given.
    pub(crate) fn take(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    /// Called once every parameter of the role has been taken: one accepted by [`PARAMS`] but
    /// never read would otherwise be silently ignored.
    pub(crate) fn finish(&self) {
        debug_assert!(
            self.values.is_empty(),
            "unread parameters: {:?}",
            self.values.keys()
        );
    }

    /// Parse `name` with `parse`, or return `default` when it is absent.
    pub(crate) fn get<T>(
        &mut self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&'static str, &str) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        match self.take(name) {
            Some(value) => parse(name, &value),
            None => Ok(default),
        }
    }
}

/// `ConfigError::Invalid` for `field=value`.
pub(crate) fn invalid(field: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// An enum spelled as one of a fixed set of codes.
pub(crate) trait Code: Copy + PartialEq + 'static {
    /// Every value with its spelling, default first.
    const CODES: &'static [(&'static str, Self)];

    /// Parse one of [`Code::CODES`].
    fn parse_code(field: &str, value: &str) -> Result<Self, ConfigError> {
        Self::CODES
            .iter()
            .find(|(code, _)| *code == value)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let codes: Vec<&str> = Self::CODES.iter().map(|(c, _)| *c).collect();
                invalid(
                    field,
                    value,
                    format!("expected one of {}", codes.join(", ")),
                )
            })
    }

    /// The spelling of `self`.
    fn code(self) -> &'static str {
        Self::CODES
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(c, _)| *c)
            .expect("every variant has a code")
    }
}

/// `Code` tables plus a `Display` that prints the code.
macro_rules! codes {
    ($($ty:ty => [$($code:literal => $val:expr),+ $(,)?];)+) => {$(
        impl Code for $ty {
            const CODES: &'static [(&'static str, Self)] = &[$(($code, $val)),+];
        }
        impl fmt::Display for $ty {
            /// The URL spelling of this value.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.code())
            }
        }
    )+};
}

codes! {
    LogLevel => ["none" => LogLevel::None, "debug" => LogLevel::Debug, "info" => LogLevel::Info,
                 "warn" => LogLevel::Warn, "error" => LogLevel::Error, "event" => LogLevel::Event];
    ServerMode => ["0" => ServerMode::Auto, "1" => ServerMode::Reverse, "2" => ServerMode::Forward];
    ClientMode => ["0" => ClientMode::Auto, "1" => ClientMode::SingleEnd, "2" => ClientMode::DualEnd];
    PoolType => ["0" => PoolType::Tcp, "1" => PoolType::Quic, "2" => PoolType::WebSocket,
                 "3" => PoolType::Http2];
    ProxyProtocol => ["0" => ProxyProtocol::Off, "1" => ProxyProtocol::V1, "2" => ProxyProtocol::V2];
    LoadBalance => ["0" => LoadBalance::RoundRobin, "1" => LoadBalance::Latency,
                    "2" => LoadBalance::PrimaryBackup];
    ApiDialect => ["nodepass" => ApiDialect::NodePass, "envelope" => ApiDialect::Envelope];
    WsBinding => ["1" => WsBinding::Tls, "0" => WsBinding::Off];
}

/// A `0`/`1` switch.
pub(crate) fn flag(field: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(invalid(field, value, "expected 0 or 1")),
    }
}

/// A non-negative decimal integer (digits only).
pub(crate) fn uint(field: &str, value: &str, allowed: &str) -> Result<u32, ConfigError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(field, value, allowed));
    }
    value.parse().map_err(|_| invalid(field, value, allowed))
}

/// `min` / `max`: 1..=65536.
pub(crate) fn pool_size(field: &str, value: &str) -> Result<NonZeroU32, ConfigError> {
    const ALLOWED: &str = "expected a pool size 1..=65536";
    let n = uint(field, value, ALLOWED)?;
    NonZeroU32::new(n)
        .filter(|n| n.get() <= super::types::POOL_LIMIT)
        .ok_or_else(|| invalid(field, value, ALLOWED))
}

/// `rate` / `slot`: a count where `0` means unlimited.
pub(crate) fn limit(field: &str, value: &str) -> Result<Option<NonZeroU32>, ConfigError> {
    Ok(NonZeroU32::new(uint(
        field,
        value,
        "expected a whole number (0 = unlimited)",
    )?))
}

/// A duration (`dns`, `read`).
pub(crate) fn duration(field: &str, value: &str) -> Result<Duration, ConfigError> {
    duration::parse(value).map_err(|why| {
        invalid(
            field,
            value,
            format!("{why}: expected {}", duration::DURATION_HELP),
        )
    })
}

/// `wspath`: an absolute path (`/...`) of visible ASCII, without `?` or `#`.
pub(crate) fn ws_path(field: &str, value: &str) -> Result<String, ConfigError> {
    if !value.starts_with('/') {
        return Err(invalid(field, value, "expected a path starting with /"));
    }
    if value.len() > super::types::MAX_WS_FIELD_LEN {
        return Err(invalid(field, value, "longer than 255 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        return Err(invalid(
            field,
            value,
            "only visible ASCII characters, without ?, # or spaces (percent-encode the rest)",
        ));
    }
    Ok(value.to_string())
}

/// `wshost`: a host name or address, optionally with `:port` (the HTTP `Host` header).
pub(crate) fn ws_host(field: &str, value: &str) -> Result<String, ConfigError> {
    if value.is_empty() || value.len() > super::types::MAX_WS_FIELD_LEN {
        return Err(invalid(
            field,
            value,
            "expected a host name of 1..=255 characters",
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
    {
        return Err(invalid(
            field,
            value,
            "expected a host name or address, optionally with :port (letters, digits, . - _ : [ ])",
        ));
    }
    Ok(value.to_string())
}

/// `wsping`: an interval of 1s..=10m.
pub(crate) fn ws_ping(field: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = duration(field, value)?;
    if !(super::types::MIN_WS_PING..=super::types::MAX_WS_PING).contains(&d) {
        return Err(invalid(field, value, "expected an interval from 1s to 10m"));
    }
    Ok(d)
}

/// `wspath`, `wshost` (client only), `wsping` and `wsbind` (checked against `type` and `tls`
/// by the caller, see [`ws_binding_allowed`]).
pub(crate) fn websocket(q: &mut Query, client: bool) -> Result<WebSocketOptions, ConfigError> {
    let d = WebSocketOptions::default();
    Ok(WebSocketOptions {
        path: q.get("wspath", d.path, ws_path)?,
        host: if client {
            q.take("wshost")
                .map(|v| ws_host("wshost", &v))
                .transpose()?
        } else {
            None
        },
        ping: q.get("wsping", d.ping, ws_ping)?,
        binding: q.get("wsbind", d.binding, WsBinding::parse_code)?,
    })
}

/// `wsbind=0` only where it means something: with `type=2`, and on a server only with
/// `tls>=1` (a plain server's WebSockets carry no TLS binding to drop). `tls` is `None` for a
/// client.
pub(crate) fn ws_binding_allowed(
    ws: &WebSocketOptions,
    pool_type: PoolType,
    tls: Option<&TlsMode>,
) -> Result<(), ConfigError> {
    if ws.binding == WsBinding::Tls {
        return Ok(());
    }
    if pool_type != PoolType::WebSocket {
        return Err(invalid(
            "wsbind",
            "0",
            format!(
                "only used with type=2 (WebSocket), not type={pool_type}: it drops the \
                 binding to a TLS session that a proxy terminates"
            ),
        ));
    }
    if tls == Some(&TlsMode::Off) {
        return Err(invalid(
            "wsbind",
            "0",
            "this server has tls=0, so its WebSockets have no TLS binding to drop: remove \
             wsbind=0 here (the client whose TLS ends at the proxy needs it), or add tls=1 \
             and let the proxy speak https to this server",
        ));
    }
    Ok(())
}

/// `lbs`, `fallback` and `probe` together: `fallback` only with `lbs=2`, `probe` a positive
/// interval of at least 100ms or `0` (off; not with `lbs=1`, which ranks targets by probes).
pub(crate) fn balance(q: &mut Query) -> Result<Balance, ConfigError> {
    let strategy = q.get("lbs", LoadBalance::default(), LoadBalance::parse_code)?;
    let mut out = Balance {
        strategy,
        ..Balance::default()
    };
    if let Some(value) = q.take("fallback") {
        if strategy != LoadBalance::PrimaryBackup {
            return Err(invalid(
                "fallback",
                &value,
                format!("only used with lbs=2 (primary-backup), not lbs={strategy}"),
            ));
        }
        let d = duration("fallback", &value)?;
        if d.is_zero() {
            return Err(invalid(
                "fallback",
                &value,
                "expected a positive duration such as 5m",
            ));
        }
        out.fallback = d;
    }
    let default_probe = (strategy == LoadBalance::Latency).then_some(DEFAULT_LATENCY_PROBE);
    out.probe = match q.take("probe") {
        None => default_probe,
        Some(value) => {
            let d = duration("probe", &value)?;
            if d.is_zero() && strategy == LoadBalance::Latency {
                return Err(invalid(
                    "probe",
                    &value,
                    "lbs=1 ranks targets by probe latency; expected an interval such as 10s",
                ));
            }
            if !d.is_zero() && d < MIN_PROBE_INTERVAL {
                return Err(invalid(
                    "probe",
                    &value,
                    "expected 0 (off) or an interval of at least 100ms",
                ));
            }
            Some(d).filter(|d| !d.is_zero())
        }
    };
    Ok(out)
}

/// A non-empty file path (`crt`, `key`, `ca`, `state`).
pub(crate) fn path(field: &str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        return Err(invalid(field, value, "expected a file path"));
    }
    Ok(PathBuf::from(value))
}

/// `node`: a node name, 1 to 64 letters, digits, `_`, `-` or `.`.
pub(crate) fn node(field: &str, value: &str) -> Result<String, ConfigError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            field,
            value,
            "expected 1 to 64 letters, digits, '_', '-' or '.'",
        ))
    }
}

/// `dial`: `auto` or a source IP (IPv6 bare or bracketed).
pub(crate) fn dial(field: &str, value: &str) -> Result<DialAddr, ConfigError> {
    if value == "auto" {
        return Ok(DialAddr::Auto);
    }
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    bare.parse()
        .map(DialAddr::Ip)
        .map_err(|_| invalid(field, value, "expected auto or a local IP address"))
}

/// `block`: `0`, or a combination of the digits 1 (SOCKS), 2 (HTTP), 3 (TLS), each at most once.
pub(crate) fn block(field: &str, value: &str) -> Result<BlockSet, ConfigError> {
    const ALLOWED: &str = "expected 0 or a combination of 1 (SOCKS), 2 (HTTP) and 3 (TLS), e.g. 13";
    let mut set = BlockSet::default();
    if value == "0" {
        return Ok(set);
    }
    if value.is_empty() {
        return Err(invalid(field, value, ALLOWED));
    }
    for digit in value.bytes() {
        let slot = match digit {
            b'1' => &mut set.socks,
            b'2' => &mut set.http,
            b'3' => &mut set.tls,
            _ => return Err(invalid(field, value, ALLOWED)),
        };
        if std::mem::replace(slot, true) {
            return Err(invalid(field, value, "each digit may appear only once"));
        }
    }
    Ok(set)
}

/// `sni`: a host name (lower-cased) or an IP literal.
pub(crate) fn sni(field: &str, value: &str) -> Result<String, ConfigError> {
    if let Ok(ip) = value.parse::<std::net::IpAddr>() {
        return Ok(ip.to_string());
    }
    match super::types::Host::parse(value, field) {
        Ok(super::types::Host::Name(name)) => Ok(name),
        _ => Err(invalid(
            field,
            value,
            "expected a host name or an IP address",
        )),
    }
}

/// `tls`, `crt` and `key` together.
pub(crate) fn tls(q: &mut Query) -> Result<TlsMode, ConfigError> {
    let code = q.take("tls");
    let cert = q.take("crt");
    let key = q.take("key");
    match code.as_deref().unwrap_or("0") {
        "2" => {
            let need = |field: &str| ConfigError::Missing {
                field: field.to_owned(),
                reason: "tls=2 needs crt and key (PEM certificate chain and private key files)"
                    .to_owned(),
            };
            let cert = path("crt", &cert.ok_or_else(|| need("crt"))?)?;
            let key = path("key", &key.ok_or_else(|| need("key"))?)?;
            Ok(TlsMode::Files { cert, key })
        }
        code @ ("0" | "1") => {
            if let Some((field, value)) = [("crt", cert), ("key", key)]
                .into_iter()
                .find_map(|(f, v)| v.map(|v| (f, v)))
            {
                return Err(invalid(
                    field,
                    &value,
                    format!("only used with tls=2, not tls={code}"),
                ));
            }
            Ok(if code == "0" {
                TlsMode::Off
            } else {
                TlsMode::SelfSigned
            })
        }
        other => Err(invalid(
            "tls",
            other,
            "expected 0 (plain), 1 (self-signed) or 2 (certificate files)",
        )),
    }
}

impl fmt::Display for TlsMode {
    /// The `tls=` digit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl fmt::Display for DialAddr {
    /// `auto` or the IP address (IPv6 without brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialAddr::Auto => f.write_str("auto"),
            DialAddr::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Display for BlockSet {
    /// `0` when empty, else the digits in ascending order (`13`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("0");
        }
        for (on, digit) in [(self.socks, "1"), (self.http, "2"), (self.tls, "3")] {
            if on {
                f.write_str(digit)?;
            }
        }
        Ok(())
    }
}
