//! The canonical URL of a [`Config`]: every default filled in, parameters in one fixed order.
//!
//! `Display` masks an explicit key as `****@`; [`Config::to_url_with_secret`] writes the real
//! key, percent-encoded, and parses back to an equal `Config`. A derived key is never written, so
//! reparsing derives it again.

use std::fmt;
use std::path::Path;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::duration;
use super::params::PARAMS;
use super::secret::MASK;
use super::types::{
    Balance, ClientConfig, Config, LoadBalance, MasterConfig, PoolType, ServerConfig, TlsMode,
    TunnelParams, WebSocketOptions, WsBinding,
};

/// Everything but the RFC 3986 unreserved characters is encoded in the key.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Query values keep `/` and `:` readable (paths, IPv6 addresses); `&`, `=`, `+`, `%` and the
/// rest are encoded.
const VALUE_SET: &AsciiSet = &KEY_SET.remove(b'/').remove(b':');

impl Config {
    /// The canonical URL with the real key (percent-encoded) instead of `****`.
    ///
    /// `Config::parse(&c.to_url_with_secret()) == Ok(c)`. Keep it out of logs and process
    /// arguments.
    pub fn to_url_with_secret(&self) -> String {
        let mut out = String::new();
        self.write_url(&mut out, true)
            .expect("writing to a String cannot fail");
        out
    }

    fn write_url(&self, out: &mut impl fmt::Write, secret: bool) -> fmt::Result {
        write!(out, "{}://", self.role())?;
        let params = match self {
            Config::Server(c) => {
                write_address(out, &c.params, secret)?;
                server_params(c)
            }
            Config::Client(c) => {
                write_address(out, &c.params, secret)?;
                client_params(c)
            }
            Config::Master(c) => {
                write!(out, "{}{}", c.listen, c.prefix)?;
                master_params(c)
            }
        };
        // Keep the order of the one parameter table, whatever order we collected them in.
        let mut sep = '?';
        for (name, _) in PARAMS {
            if let Some((_, value)) = params.iter().find(|(n, _)| n == name) {
                write!(out, "{sep}{name}={}", utf8_percent_encode(value, VALUE_SET))?;
                sep = '&';
            }
        }
        Ok(())
    }
}

impl fmt::Display for Config {
    /// The canonical URL with an explicit key masked as `****@`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_url(f, false)
    }
}

/// `[KEY@]TUNNEL/TARGET,TARGET`.
fn write_address(out: &mut impl fmt::Write, p: &TunnelParams, secret: bool) -> fmt::Result {
    if !p.key_derived {
        if secret {
            write!(out, "{}@", utf8_percent_encode(p.key.expose(), KEY_SET))?;
        } else {
            write!(out, "{MASK}@")?;
        }
    }
    write!(out, "{}/", p.tunnel)?;
    for (i, target) in p.targets.iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write!(out, "{target}")?;
    }
    Ok(())
}

type Params = Vec<(&'static str, String)>;

fn path_value(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn tls_params(tls: &TlsMode, out: &mut Params) {
    out.push(("tls", tls.to_string()));
    if let TlsMode::Files { cert, key } = tls {
        out.push(("crt", path_value(cert)));
        out.push(("key", path_value(key)));
    }
}

fn tunnel_params(p: &TunnelParams) -> Params {
    let count = |n: Option<std::num::NonZeroU32>| n.map_or(0, |n| n.get()).to_string();
    let mut out = vec![
        ("log", p.log.to_string()),
        ("dns", duration::format(p.dns_ttl)),
        ("dial", p.dial.to_string()),
        ("read", duration::format(p.read_timeout.unwrap_or_default())),
        ("rate", count(p.rate_mbps)),
        ("slot", count(p.slot)),
        ("proxy", p.proxy.to_string()),
        ("block", p.block.to_string()),
        ("notcp", u8::from(!p.tcp).to_string()),
        ("noudp", u8::from(!p.udp).to_string()),
    ];
    // The balancing parameters matter with several targets; with one they are shown only when
    // set, so single-target URLs keep their short canonical form.
    if p.targets.len() > 1 || p.balance != Balance::default() {
        let b = &p.balance;
        out.push(("lbs", b.strategy.to_string()));
        if b.strategy == LoadBalance::PrimaryBackup {
            out.push(("fallback", duration::format(b.fallback)));
        }
        out.push(("probe", duration::format(b.probe.unwrap_or_default())));
    }
    out
}

fn server_params(c: &ServerConfig) -> Params {
    let mut out = tunnel_params(&c.params);
    tls_params(&c.tls, &mut out);
    out.push(("max", c.max.to_string()));
    out.push(("mode", c.mode.to_string()));
    out.push(("type", c.pool_type.to_string()));
    if c.pool_type == PoolType::WebSocket || c.ws != WebSocketOptions::default() {
        ws_params(&c.ws, &mut out);
    }
    out
}

/// `wspath`, `wshost` (when set), `wsping`, `wsbind` (only `0`, so ordinary URLs keep their
/// canonical form).
fn ws_params(ws: &WebSocketOptions, out: &mut Params) {
    out.push(("wspath", ws.path.clone()));
    if let Some(host) = &ws.host {
        out.push(("wshost", host.clone()));
    }
    out.push(("wsping", duration::format(ws.ping)));
    if ws.binding != WsBinding::Tls {
        out.push(("wsbind", ws.binding.to_string()));
    }
}

fn client_params(c: &ClientConfig) -> Params {
    let mut out = tunnel_params(&c.params);
    if let Some(sni) = &c.sni {
        out.push(("sni", sni.clone()));
    }
    if let Some(ca) = &c.ca {
        out.push(("ca", path_value(ca)));
    }
    out.push(("min", c.min.to_string()));
    out.push(("mode", c.mode.to_string()));
    // Shown only when set, so ordinary client URLs keep their short canonical form.
    if c.pool_type != PoolType::Tcp {
        out.push(("type", c.pool_type.to_string()));
    }
    if c.pool_type == PoolType::WebSocket || c.ws != WebSocketOptions::default() {
        ws_params(&c.ws, &mut out);
    }
    out
}

fn master_params(c: &MasterConfig) -> Params {
    let mut out = vec![("log", c.log.to_string())];
    tls_params(&c.tls, &mut out);
    if let Some(state) = &c.state {
        out.push(("state", path_value(state)));
    }
    out.push(("api", c.api.to_string()));
    if let Some(store) = &c.store {
        out.push(("store", store.to_string()));
    }
    if let Some(node) = &c.node {
        out.push(("node", node.clone()));
    }
    if let Some(file) = &c.store_password_file {
        out.push(("store_password_file", path_value(file)));
    }
    out
}
