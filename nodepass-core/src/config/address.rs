//! `HOST:PORT` as written in NodePass URLs: parsing, validation and the canonical spelling.
//!
//! A host is empty (all addresses), an IPv4 literal, a bracketed IPv6 literal, or a DNS name
//! (letters, digits, `-` and `.`, at most 253 characters, lower-cased). Unbracketed IPv6 is
//! refused because its colons cannot be told apart from the port separator.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::ConfigError;
use super::types::{Endpoint, Host};

/// Longest DNS name, in characters.
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label, in characters.
const MAX_LABEL_LEN: usize = 63;

impl Host {
    /// Parse a host as written before `:PORT`. `field` names it in errors (`host`, `target`).
    pub(crate) fn parse(s: &str, field: &str) -> Result<Host, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            field: field.to_owned(),
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Ok(Host::Any);
        }
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| invalid("expected [IPv6 ADDRESS] followed by :PORT"))?;
            let ip: Ipv6Addr = inner
                .parse()
                .map_err(|_| invalid("not a valid IPv6 address inside [ ]"))?;
            return Ok(Host::Ip(IpAddr::V6(ip)));
        }
        if s.contains(':') {
            return Err(invalid(
                "IPv6 addresses must be written in brackets, e.g. [::1]",
            ));
        }
        if let Ok(ip) = s.parse() {
            return Ok(Host::Ip(IpAddr::V4(ip)));
        }
        validate_name(s).map_err(invalid)?;
        Ok(Host::Name(s.to_ascii_lowercase()))
    }

    /// True for addresses only this machine can reach: `127.0.0.0/8`, `::1` (also IPv4-mapped)
    /// and the name `localhost`. The empty host (all addresses) is not loopback.
    pub fn is_loopback(&self) -> bool {
        match self {
            Host::Any => false,
            Host::Ip(ip) => ip.to_canonical().is_loopback(),
            Host::Name(name) => name == "localhost",
        }
    }
}

/// Check a DNS name; the error is the reason.
fn validate_name(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_NAME_LEN {
        return Err("host names are at most 253 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(
            "expected an IPv4 address, a bracketed IPv6 address or a host name \
                    (letters, digits, - and .)",
        );
    }
    let labels: Vec<&str> = s.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err("empty label in host name (leading, trailing or double dot)");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("host name labels are at most 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("host name labels cannot start or end with -");
        }
    }
    // `1.2.3.999` is a typo'd address, not a name: a numeric last label is never a real TLD.
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("not a valid IPv4 address");
    }
    Ok(())
}

impl Endpoint {
    /// `host:port` for the builders ([`ServerConfig::builder`](super::ServerConfig::builder)
    /// and the others): `host` is an IPv4 or IPv6 literal (brackets optional) or a DNS name,
    /// checked as in a URL; an error names the field `host`. For an IP address a
    /// [`SocketAddr`] converts without a check (`Endpoint::from(addr)`).
    ///
    /// ```
    /// use nodepass_core::config::{Endpoint, Host};
    /// assert_eq!(Endpoint::new("Example.com", 80)?.host, Host::Name("example.com".into()));
    /// assert_eq!(Endpoint::new("::1", 22)?, Endpoint::new("[::1]", 22)?);
    /// assert!(Endpoint::new("ex ample", 80).is_err());
    /// # Ok::<(), nodepass_core::config::ConfigError>(())
    /// ```
    pub fn new(host: &str, port: u16) -> Result<Endpoint, ConfigError> {
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            // Empty means "all addresses" in a URL; a builder says so with `Endpoint::any`.
            Err(_) if host.is_empty() => {
                return Err(ConfigError::Invalid {
                    field: "host".to_owned(),
                    value: String::new(),
                    reason: "empty host; use Endpoint::any(port) for all addresses".to_owned(),
                });
            }
            Err(_) => Host::parse(host, "host")?,
        };
        Ok(Endpoint { host, port })
    }

    /// The empty host with `port`: listen on all addresses (`server://:10101/...`).
    pub fn any(port: u16) -> Endpoint {
        Endpoint {
            host: Host::Any,
            port,
        }
    }

    /// Parse `HOST:PORT`; `what` is `tunnel`, `listen` or `target` and picks the error fields:
    /// `host`/`port` for the tunnel and listen address, `target` for targets.
    pub(crate) fn parse(s: &str, what: &str) -> Result<Endpoint, ConfigError> {
        let is_target = what == "target";
        let target_err = |reason: &str| ConfigError::Invalid {
            field: "target".to_owned(),
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        // The port separator is the last colon outside brackets.
        let split = match s.rfind(']') {
            Some(close) => s[close..].find(':').map(|i| close + i),
            None => s.rfind(':'),
        };
        let Some(colon) = split else {
            return Err(if is_target {
                target_err("missing :PORT (expected HOST:PORT, IPv6 as [ADDR]:PORT)")
            } else {
                ConfigError::Missing {
                    field: "port".to_owned(),
                    reason: format!(
                        "the {what} address must be HOST:PORT (port 0 = any free port)"
                    ),
                }
            });
        };
        let (host, port) = (&s[..colon], &s[colon + 1..]);
        let port = parse_port(port).map_err(|reason| {
            if is_target {
                target_err(reason)
            } else if port.is_empty() {
                ConfigError::Missing {
                    field: "port".to_owned(),
                    reason: format!("the {what} address needs a port after the colon"),
                }
            } else {
                ConfigError::Invalid {
                    field: "port".to_owned(),
                    value: port.to_owned(),
                    reason: reason.to_owned(),
                }
            }
        })?;
        let host = match Host::parse(host, "host") {
            Ok(host) => host,
            Err(ConfigError::Invalid { reason, .. }) if is_target => {
                return Err(target_err(&reason));
            }
            Err(e) => return Err(e),
        };
        Ok(Endpoint { host, port })
    }
}

impl From<SocketAddr> for Endpoint {
    /// The address's IP and port (an IPv6 scope id is dropped, as a URL cannot carry one).
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

/// A port number 0..=65535, decimal digits only.
fn parse_port(s: &str) -> Result<u16, &'static str> {
    if s.is_empty() {
        return Err("missing port after the colon");
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port must be a number 0..=65535");
    }
    s.parse().map_err(|_| "port must be a number 0..=65535")
}

impl fmt::Display for Host {
    /// Empty for [`Host::Any`], IPv6 in brackets, otherwise as is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Any => Ok(()),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for Endpoint {
    /// `host:port`, `[v6]:port`, or `:port` for the empty host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ep(s: &str) -> Result<Endpoint, ConfigError> {
        Endpoint::parse(s, "tunnel")
    }

    #[test]
    fn parses_hosts_and_prints_them_back() {
        for (input, host, canonical) in [
            (":0", Host::Any, ":0"),
            (
                "1.2.3.4:80",
                Host::Ip(Ipv4Addr::new(1, 2, 3, 4).into()),
                "1.2.3.4:80",
            ),
            (
                "[::1]:443",
                Host::Ip(Ipv6Addr::LOCALHOST.into()),
                "[::1]:443",
            ),
            (
                "[0:0::1]:443",
                Host::Ip(Ipv6Addr::LOCALHOST.into()),
                "[::1]:443",
            ),
            (
                "Example.COM:8080",
                Host::Name("example.com".into()),
                "example.com:8080",
            ),
            ("a-b.c1:65535", Host::Name("a-b.c1".into()), "a-b.c1:65535"),
        ] {
            let e = ep(input).unwrap();
            assert_eq!(e.host, host, "{input}");
            assert_eq!(e.to_string(), canonical);
        }
    }

    #[test]
    fn refuses_bad_addresses() {
        let long = format!("{}:1", "a.".repeat(127) + "a");
        for (input, field) in [
            ("example.com", "port"),
            ("example.com:", "port"),
            ("example.com:65536", "port"),
            ("example.com:-1", "port"),
            ("example.com:+1", "port"),
            ("::1:80", "host"),
            ("[::1:80", "host"),
            ("[::1]x:80", "host"),
            ("[1.2.3.4]:80", "host"),
            ("ex_ample.com:80", "host"),
            ("-a.com:80", "host"),
            ("a..com:80", "host"),
            ("a.com.:80", "host"),
            ("1.2.3.999:80", "host"),
            (long.as_str(), "host"),
        ] {
            let err = ep(input).unwrap_err();
            let got = match &err {
                ConfigError::Invalid { field, .. } | ConfigError::Missing { field, .. } => field,
                other => panic!("{input}: unexpected {other:?}"),
            };
            assert_eq!(got, field, "{input}: {err}");
        }
        let err = Endpoint::parse("nohost", "target").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { field, .. } if field == "target"));
    }

    #[test]
    fn loopback_hosts() {
        assert!(Host::Name("localhost".into()).is_loopback());
        assert!(Host::Ip("127.0.0.2".parse().unwrap()).is_loopback());
        assert!(Host::Ip("::1".parse().unwrap()).is_loopback());
        assert!(Host::Ip("::ffff:127.0.0.1".parse().unwrap()).is_loopback());
        assert!(!Host::Any.is_loopback());
        assert!(!Host::Ip("10.0.0.1".parse().unwrap()).is_loopback());
        assert!(!Host::Name("example.com".into()).is_loopback());
    }
}
