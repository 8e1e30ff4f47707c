//! [`TunnelOptions`]: the timings and sizes of a tunnel that are not part of its URL.
//!
//! The defaults are the production values; an embedder (or a test) changes single fields:
//!
//! ```
//! use std::time::Duration;
//! use nodepass_core::TunnelOptions;
//!
//! let mut options = TunnelOptions::default();
//! options.shutdown_grace = Duration::from_millis(200);
//! options.zero_copy = false;
//! assert_eq!(options.handshake_timeout, Duration::from_secs(10));
//! ```
//!
//! The library reads no environment variables: the `nodepass` executables read
//! `NODEPASS_ZERO_COPY`, `NODEPASS_UDP_MAX_DATAGRAM` and `NODEPASS_LOW_PRIO_REFILL` and set
//! [`TunnelOptions::zero_copy`], [`TunnelOptions::udp_max_datagram`] and
//! [`TunnelOptions::low_priority_refill`].

use std::time::Duration;

use crate::error::{Error, Result};
use crate::protocol::datagram::MAX_DATAGRAM_LEN;

/// Timings and sizes of one tunnel. Every field documents its default; [`Default`] gives the
/// production values. Check a changed set with [`TunnelOptions::validate`] (done by
/// [`Tunnel::bind_with`](super::Tunnel::bind_with) too).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TunnelOptions {
    /// After shutdown was requested, sessions in flight may run on this long before they are
    /// cut (default 5 s).
    pub shutdown_grace: Duration,
    /// The client's bound on a tunnel handshake, TLS included (default 10 s).
    pub handshake_timeout: Duration,
    /// The server's bound on a tunnel handshake, from TCP accept to the answer (default 5 s):
    /// shorter than the client's, so an idle stranger frees its slot quickly.
    pub preauth_timeout: Duration,
    /// Heartbeat interval on the control connection (default 5 s). The server announces it to
    /// the client in its welcome.
    pub heartbeat_interval: Duration,
    /// A control peer silent for this long is dead (default 15 s).
    pub heartbeat_dead_after: Duration,
    /// How long a new user connection waits for an idle pool connection (default 5 s).
    pub pool_wait: Duration,
    /// Interval of the periodic status log event (default 5 s).
    pub status_interval: Duration,
    /// First delay before a dual-end client reconnects to its server (default 200 ms), doubled
    /// after each failure up to [`reconnect_max`](Self::reconnect_max); each delay is jittered
    /// down by up to half.
    pub reconnect_min: Duration,
    /// Longest reconnect delay of a dual-end client (default 5 s).
    pub reconnect_max: Duration,
    /// Pool connections a client dials at once (default 16).
    pub max_pool_dials: usize,
    /// Pause after a failed pool dial before that dialer tries again (default 250 ms).
    pub pool_dial_retry: Duration,
    /// How often a client adapts its pool capacity to the observed demand (default 60 s).
    pub pool_adapt_interval: Duration,
    /// Pause after a failed `accept` of a user connection (default 50 ms).
    pub accept_backoff: Duration,
    /// Bound on one TCP connect of a client to its server (default 5 s).
    pub connect_timeout: Duration,
    /// With `block` set, how long a new user connection is watched for its first bytes
    /// (default 100 ms); a silent connection is let through after this time.
    pub sniff_wait: Duration,
    /// A UDP session without traffic ends after this time unless the URL sets `read`
    /// (default 30 s).
    pub udp_idle: Duration,
    /// Largest UDP datagram carried, 1 to 65507 (default 65507). Larger datagrams read from
    /// local sockets are dropped and counted in `udp_dropped`.
    pub udp_max_datagram: usize,
    /// Relay plain TCP without a rate limit with `splice(2)` on Linux (default true).
    pub zero_copy: bool,
    /// Run the TCP and TLS pool's refills (dials, TLS and keyed handshakes, both sides; for a
    /// WebSocket pool the TCP and TLS under it) on one process-wide thread at nice 19 while
    /// the pool is not short (default true; only under a multi-thread runtime on Unix). Measured on a loaded 2-core machine (docs/benchmarks.md,
    /// issue 17): new-connection p50 30-65% lower at tls=1 and 10-70% lower at tls=0, p99 lower
    /// at tls=0 but not at tls=1; `false` gives back the earlier behaviour.
    pub low_priority_refill: bool,
}

impl Default for TunnelOptions {
    fn default() -> Self {
        TunnelOptions {
            shutdown_grace: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            preauth_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_dead_after: Duration::from_secs(15),
            pool_wait: Duration::from_secs(5),
            status_interval: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(5),
            max_pool_dials: 16,
            pool_dial_retry: Duration::from_millis(250),
            pool_adapt_interval: Duration::from_secs(60),
            accept_backoff: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(5),
            sniff_wait: Duration::from_millis(100),
            udp_idle: Duration::from_secs(30),
            udp_max_datagram: MAX_DATAGRAM_LEN,
            zero_copy: true,
            low_priority_refill: true,
        }
    }
}

impl TunnelOptions {
    /// Check the values: every interval and timeout above zero (they feed timers, where zero
    /// would spin), `reconnect_min <= reconnect_max`, `heartbeat_interval <
    /// heartbeat_dead_after`, `max_pool_dials >= 1`, `udp_max_datagram` in 1..=65507. The
    /// error names the field and the reason.
    pub fn validate(&self) -> Result<()> {
        let durations = [
            ("shutdown_grace", self.shutdown_grace),
            ("handshake_timeout", self.handshake_timeout),
            ("preauth_timeout", self.preauth_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_dead_after", self.heartbeat_dead_after),
            ("pool_wait", self.pool_wait),
            ("status_interval", self.status_interval),
            ("reconnect_min", self.reconnect_min),
            ("reconnect_max", self.reconnect_max),
            ("pool_dial_retry", self.pool_dial_retry),
            ("pool_adapt_interval", self.pool_adapt_interval),
            ("accept_backoff", self.accept_backoff),
            ("connect_timeout", self.connect_timeout),
            ("sniff_wait", self.sniff_wait),
            ("udp_idle", self.udp_idle),
        ];
        for (field, d) in durations {
            if d.is_zero() {
                return Err(invalid(field, &format!("{d:?}"), "must be above zero"));
            }
        }
        if self.reconnect_min > self.reconnect_max {
            return Err(invalid(
                "reconnect_min",
                &format!("{:?}", self.reconnect_min),
                "must not exceed reconnect_max",
            ));
        }
        if self.heartbeat_interval >= self.heartbeat_dead_after {
            return Err(invalid(
                "heartbeat_interval",
                &format!("{:?}", self.heartbeat_interval),
                "must be shorter than heartbeat_dead_after",
            ));
        }
        if self.max_pool_dials == 0 {
            return Err(invalid("max_pool_dials", "0", "must be at least 1"));
        }
        if !(1..=MAX_DATAGRAM_LEN).contains(&self.udp_max_datagram) {
            return Err(invalid(
                "udp_max_datagram",
                &self.udp_max_datagram.to_string(),
                "expected a byte count from 1 to 65507",
            ));
        }
        Ok(())
    }
}

fn invalid(field: &str, value: &str, reason: &str) -> Error {
    use crate::error::ConfigErrorExt;
    Error::invalid(field, value, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        TunnelOptions::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_field() {
        type Change = fn(&mut TunnelOptions);
        let cases: [(&str, Change); 5] = [
            ("shutdown_grace", |o| o.shutdown_grace = Duration::ZERO),
            ("reconnect_min", |o| {
                o.reconnect_min = Duration::from_secs(9)
            }),
            ("heartbeat_interval", |o| {
                o.heartbeat_interval = Duration::from_secs(15)
            }),
            ("max_pool_dials", |o| o.max_pool_dials = 0),
            ("udp_max_datagram", |o| o.udp_max_datagram = 65508),
        ];
        for (field, change) in cases {
            let mut o = TunnelOptions::default();
            change(&mut o);
            let err = o.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
