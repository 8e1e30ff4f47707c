//! UDP at a fixed rate into the target's sink: delivery, integrity (every datagram is a
//! self-checking [`probe`](crate::probe)) and jitter.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::IO_TIMEOUT;
use crate::plan::Budget;
use crate::probe;
use crate::procfs;
use crate::report::Metrics;
use crate::target::Target;

/// Socket send buffer asked for the sender (the kernel caps it at `wmem_max`).
const SEND_BUFFER: usize = 4 * 1024 * 1024;
/// The sender sleeps this long between bursts of due datagrams.
const PACE_SLEEP: Duration = Duration::from_micros(50);
/// After sending, the sink is done when nothing new arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// Run ids: each run (and warm-up) gets its own, so late datagrams of one never count in
/// another.
static NEXT_RUN: AtomicU32 = AtomicU32::new(1);

/// Warm the path up (a tunnel opens its UDP session on the first datagram), then send paced
/// probes for the budget's duration and tally what the sink received.
pub fn run(addr: SocketAddr, target: &Target, budget: &Budget) -> anyhow::Result<Metrics> {
    let local = if addr.ip().is_loopback() {
        "127.0.0.1:0"
    } else {
        "0.0.0.0:0"
    };
    let sock = UdpSocket::bind(local)?;
    socket2::SockRef::from(&sock).set_send_buffer_size(SEND_BUFFER)?;
    sock.connect(addr)?;
    warm_up(&sock, target, budget.udp_size)?;

    // Where datagrams are lost: the kernel counts drops per socket (full receive buffer) at
    // the path's entry (the tunnel's user-facing socket) and at the sink.
    let sink_port = target.addr().port();
    let entry_port = (addr.port() != sink_port).then_some(addr.port());
    let drops_before = (entry_port.map(procfs::udp_drops), target.udp_socket_drops());

    let run = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
    target.udp_begin(run);
    let rate_bps = budget.udp_rate_mbit as f64 * 1e6;
    let sent = send_paced(&sock, run, budget.udp_size, rate_bps, budget.udp);
    drain(target);
    let t = target.udp_tally();
    let entry_drops = entry_port
        .map(procfs::udp_drops)
        .zip(drops_before.0)
        .map(|(after, before)| after.saturating_sub(before));
    let sink_drops = target.udp_socket_drops().saturating_sub(drops_before.1);

    let mut m = Metrics::default();
    let pct = if sent.count == 0 {
        0.0
    } else {
        t.delivered as f64 / sent.count as f64 * 100.0
    };
    m.show("delivered_pct", pct);
    m.show("corrupted", t.corrupted);
    m.show("merged", t.merged);
    m.show("jitter_us", t.jitter.micros());
    m.add("truncated", t.truncated);
    m.add("sent", sent.count);
    m.add("delivered", t.delivered);
    m.add("duplicates", t.duplicates);
    m.add("reordered", t.reordered);
    m.add("send_errors", sent.errors);
    if let Some(d) = entry_drops {
        m.show("entry_socket_drops", d);
    }
    m.add("sink_socket_drops", sink_drops);
    let offered = sent.count as f64 * budget.udp_size as f64 * 8.0;
    m.add(
        "offered_mbit_per_s",
        offered / sent.elapsed.as_secs_f64() / 1e6,
    );
    let mean_transit = match t.delivered {
        0 => 0.0,
        n => t.transit_sum_ns as f64 / n as f64 / 1_000.0,
    };
    m.add("mean_transit_us", mean_transit);
    Ok(m)
}

/// Send single probes until one reaches the sink.
fn warm_up(sock: &UdpSocket, target: &Target, size: usize) -> anyhow::Result<()> {
    let run = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
    target.udp_begin(run);
    let mut buf = vec![0u8; size];
    let deadline = Instant::now() + IO_TIMEOUT;
    for seq in 0.. {
        probe::fill(&mut buf, run, seq, probe::now_ns());
        sock.send(&buf).context("send a warm-up datagram")?;
        std::thread::sleep(Duration::from_millis(20));
        if target.udp_tally().delivered > 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    bail!("no UDP datagram reached the target within {IO_TIMEOUT:?}")
}

/// What the sender did.
struct Sent {
    count: u64,
    errors: u64,
    elapsed: Duration,
}

/// Send `size`-byte probes at `rate_bps` for `duration`: every wake-up sends the datagrams
/// that are due by then, so the average rate holds even with a coarse sleep.
fn send_paced(sock: &UdpSocket, run: u32, size: usize, rate_bps: f64, duration: Duration) -> Sent {
    let interval_ns = size as f64 * 8.0 / rate_bps * 1e9;
    let mut buf = vec![0u8; size];
    let (mut count, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (elapsed.as_nanos() as f64 / interval_ns) as u64 + 1;
        while count < due {
            probe::fill(&mut buf, run, count, probe::now_ns());
            if sock.send(&buf).is_err() {
                errors += 1;
            }
            count += 1;
        }
        std::thread::sleep(PACE_SLEEP);
    }
    Sent {
        count,
        errors,
        elapsed: start.elapsed(),
    }
}

/// Wait until the sink has seen nothing new for [`DRAIN_QUIET`] (at most [`IO_TIMEOUT`]).
fn drain(target: &Target) {
    let start = Instant::now();
    let mut last = target.udp_tally().delivered;
    let mut since = Instant::now();
    while start.elapsed() < IO_TIMEOUT && since.elapsed() < DRAIN_QUIET {
        std::thread::sleep(Duration::from_millis(10));
        let now = target.udp_tally().delivered;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_udp_is_delivered_intact() {
        let target = Target::start().unwrap();
        let budget = Budget {
            udp: Duration::from_millis(200),
            udp_rate_mbit: 50,
            ..Budget::quick()
        };
        let m = run(target.addr(), &target, &budget).unwrap();
        assert!(m.get("sent").unwrap() > 100.0, "{m:?}");
        assert_eq!(m.get("corrupted"), Some(0.0));
        assert_eq!(m.get("merged"), Some(0.0));
        assert!(m.get("delivered_pct").unwrap() > 50.0, "{m:?}");
    }
}
