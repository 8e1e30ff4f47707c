//! A link profile: round-trip delay, jitter, loss, bandwidth and queue, parsed from
//! `RTT,LOSS,RATE[,jitter=D][,queue=BYTES][,cc=NAME][,reorder]` (e.g. `40ms,1%,100mbit`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// The emulated link's properties. Delay and loss apply to each direction: a packet waits
/// `rtt / 2` (plus jitter) and is dropped with probability `loss` on its way, whichever way
/// it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// Round-trip delay (half in each direction).
    #[serde(serialize_with = "ms", rename = "rtt_ms")]
    pub rtt: Duration,
    /// Each packet's one-way delay varies uniformly within +- this.
    #[serde(serialize_with = "ms", rename = "jitter_ms")]
    pub jitter: Duration,
    /// Probability that a packet is dropped, per direction, in `[0, 1)`.
    pub loss: f64,
    /// Bandwidth of each direction in bit/s of IP packets (headers included); `None`: unlimited.
    pub rate_bps: Option<u64>,
    /// Bytes that may wait for the bandwidth in each direction before packets are dropped
    /// (a router's buffer); `None`: one bandwidth-delay product, at least 64 KiB.
    pub queue_bytes: Option<u64>,
    /// Whether jitter may reorder packets (by default a packet never overtakes an earlier one).
    pub reorder: bool,
    /// TCP congestion control in both namespaces (`None`: the machine's default, which new
    /// namespaces inherit).
    pub cc: Option<String>,
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// Smallest default queue.
const MIN_QUEUE: u64 = 64 * 1024;

impl Profile {
    /// One-way delay before jitter.
    pub fn one_way(&self) -> Duration {
        self.rtt / 2
    }

    /// The queue limit in bytes, when the rate is limited.
    pub fn queue_limit(&self) -> Option<u64> {
        let rate = self.rate_bps?;
        Some(self.queue_bytes.unwrap_or_else(|| {
            let bdp = (rate as f64 / 8.0 * self.rtt.as_secs_f64()) as u64;
            bdp.max(MIN_QUEUE)
        }))
    }

    /// The share of packets lost on a round trip (both directions).
    pub fn round_trip_loss(&self) -> f64 {
        1.0 - (1.0 - self.loss) * (1.0 - self.loss)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} RTT", fmt_duration(self.rtt))?;
        if !self.jitter.is_zero() {
            write!(f, " +-{}", fmt_duration(self.jitter))?;
        }
        write!(f, ", {}% loss", self.loss * 100.0)?;
        match self.rate_bps {
            Some(r) if r.is_multiple_of(1_000_000) => write!(f, ", {} Mbit/s", r / 1_000_000)?,
            Some(r) => write!(f, ", {} kbit/s", r as f64 / 1e3)?,
            None => write!(f, ", unlimited rate")?,
        }
        if let Some(q) = self.queue_bytes {
            write!(f, ", queue {q} B")?;
        }
        if self.reorder {
            write!(f, ", reordering")?;
        }
        if let Some(cc) = &self.cc {
            write!(f, ", TCP {cc}")?;
        }
        Ok(())
    }
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1000) {
        format!("{} ms", us / 1000)
    } else {
        format!("{} ms", us as f64 / 1000.0)
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Profile, String> {
        let mut parts = s.split(',').map(str::trim);
        let mut next = |what: &str| {
            parts.next().filter(|p| !p.is_empty()).ok_or_else(|| {
                format!("{s:?}: missing {what} (expected RTT,LOSS,RATE, e.g. 40ms,1%,100mbit)")
            })
        };
        let rtt = parse_duration(next("the round-trip time")?).map_err(|e| format!("RTT: {e}"))?;
        let loss = parse_loss(next("the loss rate")?)?;
        let rate_bps = parse_rate(next("the rate")?)?;
        let mut p = Profile {
            rtt,
            jitter: Duration::ZERO,
            loss,
            rate_bps,
            queue_bytes: None,
            reorder: false,
            cc: None,
        };
        for opt in parts {
            match opt.split_once('=') {
                Some(("jitter", v)) => {
                    p.jitter = parse_duration(v).map_err(|e| format!("jitter: {e}"))?;
                }
                Some(("queue", v)) => {
                    let q: u64 = v
                        .parse()
                        .map_err(|_| format!("queue: {v:?} is not a number of bytes"))?;
                    if q < 1500 {
                        return Err(format!("queue: {q} bytes cannot hold one packet"));
                    }
                    p.queue_bytes = Some(q);
                }
                Some(("cc", v)) => {
                    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
                    if v.is_empty() || !v.chars().all(valid) {
                        return Err(format!("cc: {v:?} is not a congestion control name"));
                    }
                    p.cc = Some(v.to_owned());
                }
                None if opt == "reorder" => p.reorder = true,
                _ => {
                    return Err(format!(
                        "{opt:?}: unknown option (known: jitter=DURATION, queue=BYTES, cc=NAME, reorder)"
                    ));
                }
            }
        }
        if p.jitter > p.one_way() {
            return Err(format!(
                "jitter: {} is more than the one-way delay ({})",
                fmt_duration(p.jitter),
                fmt_duration(p.one_way())
            ));
        }
        Ok(p)
    }
}

/// `40ms`, `1.5ms`, `500us`, `1s`, `0`.
fn parse_duration(v: &str) -> Result<Duration, String> {
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("{v:?}: give a unit (ms, us or s)"));
    };
    let x: f64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a duration"))?;
    if !(0.0..=60.0).contains(&(x * scale)) {
        return Err(format!("{v:?}: must be between 0 and 60 s"));
    }
    Ok(Duration::from_secs_f64(x * scale))
}

/// `1%`, `0.5%`, `0%`.
fn parse_loss(v: &str) -> Result<f64, String> {
    let num = v
        .strip_suffix('%')
        .ok_or_else(|| format!("loss: {v:?}: give a percentage (e.g. 1%)"))?;
    let pct: f64 = num
        .parse()
        .map_err(|_| format!("loss: {v:?} is not a percentage"))?;
    if !(0.0..100.0).contains(&pct) {
        return Err(format!("loss: {v:?} must be at least 0% and below 100%"));
    }
    Ok(pct / 100.0)
}

/// `100mbit`, `1gbit`, `500kbit`, `0` or `unlimited`.
fn parse_rate(v: &str) -> Result<Option<u64>, String> {
    if v == "0" || v == "unlimited" {
        return Ok(None);
    }
    let lower = v.to_ascii_lowercase();
    let (num, scale) = if let Some(n) = lower.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = lower.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = lower.strip_suffix("kbit") {
        (n, 1e3)
    } else {
        return Err(format!(
            "rate: {v:?}: give a unit (kbit, mbit or gbit) or `unlimited`"
        ));
    };
    let x: f64 = num
        .parse()
        .map_err(|_| format!("rate: {v:?} is not a rate"))?;
    let bps = x * scale;
    if !(64e3..=100e9).contains(&bps) {
        return Err(format!("rate: {v:?} must be between 64kbit and 100gbit"));
    }
    Ok(Some(bps as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_profiles() {
        let p: Profile = "40ms,1%,100mbit".parse().unwrap();
        assert_eq!(p.rtt, Duration::from_millis(40));
        assert_eq!(p.one_way(), Duration::from_millis(20));
        assert!((p.loss - 0.01).abs() < 1e-12);
        assert_eq!(p.rate_bps, Some(100_000_000));
        // One BDP: 100 Mbit/s x 40 ms = 500 kB.
        assert_eq!(p.queue_limit(), Some(500_000));
        assert_eq!(p.to_string(), "40 ms RTT, 1% loss, 100 Mbit/s");
        let p: Profile = "0,0%,unlimited,jitter=0,queue=9000,reorder,cc=cubic"
            .parse()
            .unwrap();
        assert_eq!(p.cc.as_deref(), Some("cubic"));
        assert_eq!(
            (p.rtt, p.rate_bps, p.queue_limit()),
            (Duration::ZERO, None, None)
        );
        assert!(p.reorder);
        let p: Profile = "1.5ms,0.5%,1gbit,jitter=250us".parse().unwrap();
        assert_eq!(p.jitter, Duration::from_micros(250));
        assert_eq!(p.queue_limit(), Some(187_500));
        assert!((p.round_trip_loss() - 0.009975).abs() < 1e-9);
    }

    #[test]
    fn refuses_bad_profiles_naming_the_field() {
        for (input, expected) in [
            ("40ms", "missing the loss rate"),
            ("40ms,1%", "missing the rate"),
            ("40,1%,100mbit", "RTT: \"40\": give a unit"),
            ("40ms,1,100mbit", "loss: \"1\": give a percentage"),
            ("40ms,100%,100mbit", "below 100%"),
            ("40ms,-1%,100mbit", "at least 0%"),
            ("40ms,1%,100", "rate: \"100\": give a unit"),
            ("40ms,1%,1kbit", "between 64kbit"),
            ("40ms,1%,100mbit,jitter=30ms", "jitter: 30 ms is more than"),
            ("40ms,1%,100mbit,queue=10", "cannot hold one packet"),
            ("40ms,1%,100mbit,speed=1", "unknown option"),
            ("40ms,1%,100mbit,cc=../x", "not a congestion control name"),
        ] {
            let err = input.parse::<Profile>().unwrap_err();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }
}
