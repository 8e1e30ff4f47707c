//! `GET /v1/tcping?target=host:port`: can the master open a TCP connection there, and how fast?
//! Only reports: nothing is sent on the connection. Concurrency and time are bounded.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use nodepass_core::config::ApiDialect;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ErrorCode, HttpError};
use crate::openapi::{Envelope, ErrorEnvelope};
use crate::response;
use crate::router::{Ctx, Reply};

/// Bounds of the probe.
#[derive(Debug)]
pub(crate) struct Prober {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl Prober {
    pub(crate) fn new(concurrency: usize, timeout: Duration) -> Self {
        Prober {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            timeout,
        }
    }
}

/// The form of a target, as the documents state it: `host:port`, port 1 to 65535; an IPv6
/// address in brackets in any of its hexadecimal forms (`[::1]`, `[2001:db8::7]`, full).
pub(crate) const TARGET_PATTERN: &str = "^(\\[(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))\\]|[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";

/// The query of `GET /v1/tcping`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TcpingQuery {
    /// `host:port` to connect to (`[v6]:port` for IPv6).
    #[param(
        min_length = 1,
        pattern = "^(\\[(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))\\]|[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$",
        example = "127.0.0.1:80"
    )]
    target: String,
}

/// The NodePass dialect's answer: `latency` in whole milliseconds (0 when not connected).
#[derive(Debug, Clone, Serialize)]
struct NpTcping {
    target: String,
    connected: bool,
    latency: u64,
    error: Option<String>,
}

/// `data` of `GET /v1/tcping`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub(crate) struct TcpingResult {
    /// The target as given.
    #[schema(example = "127.0.0.1:8080")]
    pub target: String,
    /// Whether a TCP connection was established.
    pub connected: bool,
    /// Time to connect in milliseconds, when connected.
    pub latency_ms: Option<f64>,
    /// Why not, when not connected.
    pub error: Option<String>,
}

/// `host:port`, `[v6]:port`; the port 1 to 65535, the host an IP address or a DNS name.
fn parse_target(target: &str) -> Result<(String, u16), HttpError> {
    let bad = |why: &str| {
        HttpError::invalid(
            "target",
            format!("{target:?} {why}; expected host:port, e.g. 127.0.0.1:80 or [::1]:80"),
        )
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("has an invalid port"))?;
    if port == 0 {
        return Err(bad("has port 0"));
    }
    let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad("has an invalid IPv6 address"))?;
        v6.to_string()
    } else if host.parse::<IpAddr>().is_ok() && !host.contains(':') {
        host.to_string()
    } else {
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(bad("has an invalid host"));
        }
        host.to_string()
    };
    Ok((host, port))
}

async fn probe(host: &str, port: u16, timeout: Duration) -> Result<f64, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let addrs: Vec<_> = tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| format!("cannot resolve {host} within {} s", timeout.as_secs_f64()))?
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("no address for {host}");
    for addr in addrs {
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_stream)) => return Ok(started.elapsed().as_secs_f64() * 1000.0),
            Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            Err(_) => {
                return Err(format!(
                    "no connection to {addr} within {} s",
                    timeout.as_secs_f64()
                ));
            }
        }
    }
    Err(last)
}

/// Try a TCP connection to `target` from the master.
#[utoipa::path(
    get,
    path = "/v1/tcping",
    operation_id = "tcping",
    tag = "master",
    params(TcpingQuery),
    responses(
        (status = 200, description = "The outcome (connected or not)", body = Envelope<TcpingResult>),
        (status = 400, description = "Missing or invalid target", body = ErrorEnvelope),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 429, description = "Too many probes at once", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn tcping(ctx: Ctx) -> Reply {
    let query: TcpingQuery = ctx.query()?;
    if query.target.is_empty() {
        return Err(HttpError::invalid("target", "required: host:port"));
    }
    let (host, port) = parse_target(&query.target)?;
    let prober = &ctx.state.tcping;
    let _permit =
        prober.slots.clone().try_acquire_owned().map_err(|_| {
            HttpError::new(ErrorCode::RateLimited, "too many tcping probes at once")
        })?;
    let result = match probe(&host, port, prober.timeout).await {
        Ok(ms) => TcpingResult {
            target: query.target,
            connected: true,
            latency_ms: Some((ms * 1000.0).round() / 1000.0),
            error: None,
        },
        Err(e) => TcpingResult {
            target: query.target,
            connected: false,
            latency_ms: None,
            error: Some(e),
        },
    };
    if ctx.state.dialect == ApiDialect::Envelope {
        return Ok(response::ok(StatusCode::OK, &result));
    }
    let np = NpTcping {
        latency: result.latency_ms.map_or(0, |ms| ms.round() as u64),
        target: result.target,
        connected: result.connected,
        error: result.error,
    };
    Ok(response::bare(StatusCode::OK, &np))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_validated() {
        assert_eq!(
            parse_target("127.0.0.1:80").unwrap(),
            ("127.0.0.1".into(), 80)
        );
        assert_eq!(parse_target("[::1]:443").unwrap(), ("::1".into(), 443));
        assert_eq!(
            parse_target("example.com:8080").unwrap(),
            ("example.com".into(), 8080)
        );
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            ":80",
            "::1:80",
            "[::1:80",
            "a b:80",
            "exa_mple.com:80",
            "host..x:80",
            "127.0.0.1:http",
        ] {
            let e = parse_target(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::Validation, "{bad}");
            assert!(e.message.starts_with("target: "), "{}", e.message);
        }
    }

    #[tokio::test]
    async fn probes_report_connected_and_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ms = probe("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(ms >= 0.0);
        drop(listener);
        let err = probe("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }
}
