//! `FromStr for Config`: split a NodePass URL into its parts and build the typed configuration.
//!
//! The `url` crate is not used on purpose: it refuses the empty host NodePass relies on
//! (`server://:10101/...` listens on all addresses), and the grammar is small:
//! `SCHEME://[KEY@]HOST:PORT[/PATH][?QUERY]`. Errors never contain the key: the user part is
//! cut off before anything is echoed, and structural mistakes that could hide a key fragment
//! elsewhere (`#`, `@` after the host) are reported without echoing the input.

use std::num::NonZeroU32;
use std::str::FromStr;

use percent_encoding::percent_decode_str;

use super::ConfigError;
use super::params::{self, Code, Query, invalid};
use super::secret::{MASK, TunnelKey};
use super::types::{
    ApiDialect, ClientConfig, ClientMode, Config, DEFAULT_DNS_TTL, DEFAULT_MASTER_PREFIX,
    DEFAULT_POOL_MAX, DEFAULT_POOL_MIN, DEFAULT_SLOT, DialAddr, Endpoint, LogLevel, MasterConfig,
    PoolType, PostgresUrl, ProxyProtocol, Role, ServerConfig, ServerMode, TlsMode, TunnelParams,
};

/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 8192;

/// The parts of a URL before their meaning is checked.
struct RawUrl<'a> {
    role: Role,
    /// The percent-encoded user part, without `@`.
    user: Option<&'a str>,
    /// `HOST:PORT`.
    address: &'a str,
    /// After the first `/`, without it; `None` when there is no `/`.
    path: Option<&'a str>,
    /// After `?`, without it.
    query: &'a str,
}

fn syntax(reason: &str) -> ConfigError {
    ConfigError::Syntax(reason.to_owned())
}

impl<'a> RawUrl<'a> {
    fn split(s: &'a str) -> Result<RawUrl<'a>, ConfigError> {
        if s.len() > MAX_URL_LEN {
            return Err(syntax("longer than 8192 bytes"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(syntax("contains whitespace or control characters"));
        }
        if s.contains('#') {
            return Err(syntax(
                "a fragment (#) is not allowed; percent-encode # in the key as %23",
            ));
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| syntax("expected server://, client:// or master:// at the start"))?;
        let role = match scheme.to_ascii_lowercase().as_str() {
            "server" => Role::Server,
            "client" => Role::Client,
            "master" => Role::Master,
            // Echo the scheme only when it cannot be a misplaced key.
            _ if scheme.bytes().all(|b| b.is_ascii_alphanumeric()) && scheme.len() <= 16 => {
                return Err(invalid(
                    "scheme",
                    scheme,
                    "expected server, client or master",
                ));
            }
            _ => {
                return Err(syntax(
                    "expected server://, client:// or master:// at the start",
                ));
            }
        };
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match before_query.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (before_query, None),
        };
        if path.is_some_and(|p| p.contains('@')) {
            return Err(syntax(
                "@ after the address; percent-encode / in the key as %2F",
            ));
        }
        let (user, address) = match authority.rsplit_once('@') {
            Some((user, address)) => (Some(user), address),
            None => (None, authority),
        };
        Ok(RawUrl {
            role,
            user,
            address,
            path,
            query,
        })
    }

    /// The explicit key, percent-decoded.
    fn key(&self) -> Result<Option<TunnelKey>, ConfigError> {
        let Some(user) = self.user else {
            return Ok(None);
        };
        let key_error = |value: &str, reason: &str| invalid("tunnel key", value, reason);
        if user.is_empty() {
            return Err(key_error(
                "",
                "empty key before @; omit @ to derive the key from the port",
            ));
        }
        if user.contains(':') {
            return Err(key_error(
                MASK,
                "a password part (KEY:PASSWORD@) is not supported; percent-encode : in the key as %3A",
            ));
        }
        if user.contains('@') {
            return Err(key_error(
                MASK,
                "a second @ in the key; percent-encode @ as %40",
            ));
        }
        let bytes = user.as_bytes();
        let bad_escape = bytes.iter().enumerate().any(|(i, &b)| {
            b == b'%'
                && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        if bad_escape {
            return Err(key_error(
                MASK,
                "invalid percent-encoding (% must be followed by two hex digits; write % as %25)",
            ));
        }
        let key = percent_decode_str(user)
            .decode_utf8()
            .map_err(|_| key_error(MASK, "not valid UTF-8 after percent-decoding"))?;
        tunnel_key(key.into_owned()).map(Some)
    }

    /// The checked address part of a server or client URL: key, tunnel address, targets.
    fn tunnel_parts(&self) -> Result<TunnelParts, ConfigError> {
        Ok(TunnelParts {
            key: self.key()?,
            tunnel: Endpoint::parse(self.address, "tunnel")?,
            targets: self.targets()?,
        })
    }

    /// The target list of a server or client URL.
    fn targets(&self) -> Result<Vec<Endpoint>, ConfigError> {
        let list = self.path.unwrap_or("");
        if list.is_empty() {
            return Err(ConfigError::Missing {
                field: "target".to_owned(),
                reason: format!(
                    "a {} URL needs /TARGET_HOST:PORT[,TARGET...] after the address",
                    self.role
                ),
            });
        }
        list.split(',')
            .map(|t| Endpoint::parse(t, "target"))
            .collect()
    }
}

/// The API prefix of a master URL from its path (`raw`: after the first `/`, without it).
pub(crate) fn prefix(raw: &str) -> Result<String, ConfigError> {
    let trimmed = raw.strip_suffix('/').unwrap_or(raw);
    if trimmed.is_empty() {
        return Ok(DEFAULT_MASTER_PREFIX.to_owned());
    }
    let value = format!("/{raw}");
    if raw.contains(':') || raw.contains(',') {
        return Err(invalid(
            "prefix",
            &value,
            "a master URL takes an API path prefix such as /api, not targets",
        ));
    }
    for segment in trimmed.split('/') {
        let ok_chars = segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
        if segment.is_empty() || segment == "." || segment == ".." || !ok_chars {
            return Err(invalid(
                "prefix",
                &value,
                "expected /SEGMENT[/SEGMENT...] of letters, digits, '.', '_', '~' and '-'",
            ));
        }
    }
    Ok(format!("/{trimmed}"))
}

impl FromStr for Config {
    type Err = ConfigError;

    /// Parse and validate a NodePass URL; see the [module docs](super) for the grammar.
    fn from_str(s: &str) -> Result<Config, ConfigError> {
        let url = RawUrl::split(s)?;
        let q = Query::parse(url.role, url.query)?;
        Ok(match url.role {
            Role::Server => Config::Server(server(url.tunnel_parts()?, q)?),
            Role::Client => Config::Client(client(url.tunnel_parts()?, q)?),
            Role::Master => {
                if url.user.is_some() {
                    return Err(invalid(
                        "tunnel key",
                        MASK,
                        "a master URL takes no key (KEY@)",
                    ));
                }
                let listen = Endpoint::parse(url.address, "listen")?;
                Config::Master(master(listen, prefix(url.path.unwrap_or(""))?, q)?)
            }
        })
    }
}

impl Config {
    /// Parse a NodePass URL (the same as `s.parse::<Config>()`).
    pub fn parse(s: &str) -> Result<Config, ConfigError> {
        s.parse()
    }
}

/// An explicit tunnel key, checked (the URL's user part after percent-decoding, or a builder's
/// key).
pub(crate) fn tunnel_key(key: String) -> Result<TunnelKey, ConfigError> {
    if key.is_empty() {
        return Err(invalid(
            "tunnel key",
            "",
            "empty key; give none (no KEY@) to derive the key from the port",
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(invalid(
            "tunnel key",
            MASK,
            "control characters are not allowed in a key",
        ));
    }
    Ok(TunnelKey::new(key))
}

/// The address part of a server or client configuration, each piece already checked: what the
/// URL parser and the builders ([`super::builder`]) both hand to [`server`] and [`client`].
#[derive(Debug, Clone)]
pub(crate) struct TunnelParts {
    /// The explicit key; `None` derives it from the tunnel port.
    pub(crate) key: Option<TunnelKey>,
    /// The tunnel address.
    pub(crate) tunnel: Endpoint,
    /// The targets (at least one).
    pub(crate) targets: Vec<Endpoint>,
}

/// The parameters shared by server and client.
fn tunnel_params(parts: TunnelParts, q: &mut Query) -> Result<TunnelParams, ConfigError> {
    let TunnelParts {
        key: explicit,
        tunnel,
        targets,
    } = parts;
    let key_derived = explicit.is_none();
    let key = explicit.unwrap_or_else(|| TunnelKey::derive(tunnel.port));
    let tcp = !q.get("notcp", false, params::flag)?;
    let udp = !q.get("noudp", false, params::flag)?;
    if !tcp && !udp {
        return Err(invalid(
            "noudp",
            "1",
            "notcp=1 and noudp=1 together leave nothing to carry",
        ));
    }
    Ok(TunnelParams {
        key,
        key_derived,
        tunnel,
        targets,
        balance: params::balance(q)?,
        log: q.get("log", LogLevel::default(), LogLevel::parse_code)?,
        dns_ttl: q.get("dns", DEFAULT_DNS_TTL, params::duration)?,
        dial: q.get("dial", DialAddr::Auto, params::dial)?,
        read_timeout: Some(q.get("read", Default::default(), params::duration)?)
            .filter(|d| !d.is_zero()),
        rate_mbps: q.get("rate", None, params::limit)?,
        slot: q.get("slot", NonZeroU32::new(DEFAULT_SLOT), params::limit)?,
        proxy: q.get("proxy", ProxyProtocol::default(), ProxyProtocol::parse_code)?,
        block: q.get("block", Default::default(), params::block)?,
        tcp,
        udp,
    })
}

/// A server configuration from its checked address part and its parameters; every parameter of
/// `q` is used.
pub(crate) fn server(parts: TunnelParts, mut q: Query) -> Result<ServerConfig, ConfigError> {
    let q = &mut q;
    let params = tunnel_params(parts, q)?;
    let tls = params::tls(q)?;
    let pool_type = q.get("type", PoolType::default(), PoolType::parse_code)?;
    if matches!(pool_type, PoolType::Quic | PoolType::Http2) && tls == TlsMode::Off {
        let name = if pool_type == PoolType::Quic {
            "QUIC"
        } else {
            "HTTP/2"
        };
        return Err(invalid(
            "type",
            pool_type.code(),
            format!(
                "type={} ({name}) runs inside TLS, but tls=0: add tls=1 (self-signed \
                 certificate) or tls=2 (with crt= and key=), or use type=0 or type=2",
                pool_type.code()
            ),
        ));
    }
    let default_max = NonZeroU32::new(DEFAULT_POOL_MAX).expect("non-zero");
    let mode = q.get("mode", ServerMode::default(), ServerMode::parse_code)?;
    // Forward flow (mode=2, or mode=0 with several targets) dials the targets.
    let dials =
        mode == ServerMode::Forward || (mode == ServerMode::Auto && params.targets.len() > 1);
    if dials {
        no_port_zero(&params)?;
    }
    let ws = params::websocket(q, false)?;
    params::ws_binding_allowed(&ws, pool_type, Some(&tls))?;
    let config = ServerConfig {
        params,
        tls,
        max: q.get("max", default_max, params::pool_size)?,
        mode,
        pool_type,
        ws,
    };
    q.finish();
    Ok(config)
}

/// A client configuration from its checked address part and its parameters; every parameter of
/// `q` is used.
pub(crate) fn client(parts: TunnelParts, mut q: Query) -> Result<ClientConfig, ConfigError> {
    let q = &mut q;
    let params = tunnel_params(parts, q)?;
    let default_min = NonZeroU32::new(DEFAULT_POOL_MIN).expect("non-zero");
    let mode = q.get("mode", ClientMode::default(), ClientMode::parse_code)?;
    if mode == ClientMode::SingleEnd {
        no_port_zero(&params)?;
    }
    let pool_type = q.get("type", PoolType::default(), client_pool_type)?;
    let ws = params::websocket(q, true)?;
    params::ws_binding_allowed(&ws, pool_type, None)?;
    let config = ClientConfig {
        params,
        sni: q.take("sni").map(|v| params::sni("sni", &v)).transpose()?,
        ca: q.take("ca").map(|v| params::path("ca", &v)).transpose()?,
        min: q.get("min", default_min, params::pool_size)?,
        mode,
        pool_type,
        ws,
    };
    q.finish();
    Ok(config)
}

/// A client's `type`: 0 (learn it from the server), 1 (QUIC from the start) or 2 (WebSocket
/// from the start).
fn client_pool_type(field: &str, value: &str) -> Result<PoolType, ConfigError> {
    match PoolType::parse_code(field, value)? {
        t @ (PoolType::Tcp | PoolType::Quic | PoolType::WebSocket) => Ok(t),
        PoolType::Http2 => Err(invalid(
            field,
            value,
            "a client takes type=0 (learn the transport from the server, HTTP/2 included), \
             type=1 (QUIC from the first connection) or type=2 (WebSocket from the first \
             connection, for a server behind an HTTP proxy)",
        )),
    }
}

/// Targets this end dials need a real port (port 0 only means "any" for listening).
fn no_port_zero(params: &TunnelParams) -> Result<(), ConfigError> {
    match params.targets.iter().find(|t| t.port == 0) {
        Some(t) => Err(invalid(
            "target",
            &t.to_string(),
            "port 0 cannot be dialed; a target this end connects to needs its port",
        )),
        None => Ok(()),
    }
}

/// A master configuration from its listen address, its checked API prefix and its parameters;
/// every parameter of `q` is used.
pub(crate) fn master(
    listen: Endpoint,
    prefix: String,
    mut q: Query,
) -> Result<MasterConfig, ConfigError> {
    let q = &mut q;
    let config = MasterConfig {
        listen,
        prefix,
        log: q.get("log", LogLevel::default(), LogLevel::parse_code)?,
        tls: params::tls(q)?,
        state: q
            .take("state")
            .map(|v| params::path("state", &v))
            .transpose()?,
        api: q.get("api", ApiDialect::default(), ApiDialect::parse_code)?,
        store: q
            .take("store")
            .map(|v| PostgresUrl::parse("store", &v))
            .transpose()?,
        node: q
            .take("node")
            .map(|v| params::node("node", &v))
            .transpose()?,
        store_password_file: q
            .take("store_password_file")
            .map(|v| params::path("store_password_file", &v))
            .transpose()?,
    };
    q.finish();
    if config.store.is_some() {
        if config.state.is_some() {
            return Err(invalid(
                "state",
                "",
                "state= (the SQLite file) and store= (PostgreSQL) exclude each other",
            ));
        }
        if config.node.is_none() {
            return Err(ConfigError::Missing {
                field: "node".into(),
                reason: "store= needs node=NAME (this master's name in the fleet)".into(),
            });
        }
    } else {
        for (field, given) in [
            ("node", config.node.is_some()),
            ("store_password_file", config.store_password_file.is_some()),
        ] {
            if given {
                return Err(invalid(
                    field,
                    "",
                    "only meaningful with store=postgres://...",
                ));
            }
        }
    }
    Ok(config)
}
