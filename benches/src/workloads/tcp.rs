//! TCP bulk transfer into the target's sink: throughput (one or more streams) and the CPU the
//! tunnel processes spend per GB.
//!
//! Bytes and the end time are taken where the data arrives: the target's [`SinkLedger`] (bytes
//! received, and when the last one arrived). Each sender also reads the sink's count back when
//! the tunnel carries the half-close, and then that count must equal what it sent; a tunnel
//! that closes the connection on the half-close instead, or never passes it on (the Go
//! NodePass), is measured by the ledger alone (the wait for its end stops after [`QUIET`]
//! without a byte), and bytes it lost are reported as `lost_bytes`.
//!
//! [`SinkLedger`]: crate::target::SinkLedger

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::IO_TIMEOUT;
use crate::procfs;
use crate::report::Metrics;
use crate::stats::gbit_per_s;
use crate::subject::Endpoint;
use crate::target::{SINK, Target};

/// Size of each write of a sender.
const WRITE_CHUNK: usize = 128 * 1024;
/// How long the sink may stay without a byte before a transfer whose connections did not end
/// at the sink is taken as complete.
pub const QUIET: Duration = Duration::from_secs(1);

/// Bytes that reached the sink, and how long from the common start until the last stream
/// ended at the sink.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// Bytes counted by the sink, all streams together.
    pub bytes: u64,
    /// Bytes the senders wrote, all streams together.
    pub sent: u64,
    /// Streams whose sink count could not be read back (the tunnel closed on the half-close).
    pub unconfirmed: usize,
    /// Streams whose end never reached the sink (the tunnel kept the target's side open).
    pub unended: usize,
    /// Wall time of the whole transfer.
    pub elapsed: Duration,
}

/// `streams` connections send into `target`'s sink through `addr` for `duration`, started
/// together.
pub fn transfer(
    addr: SocketAddr,
    target: &Target,
    streams: usize,
    duration: Duration,
) -> anyhow::Result<Transfer> {
    let before = target.sinks();
    let conns = (0..streams)
        .map(|_| open_sink(addr))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start_line = Barrier::new(streams + 1);
    let (start, results) = std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .map(|conn| {
                let start_line = &start_line;
                scope.spawn(move || {
                    start_line.wait();
                    send(conn, duration)
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("sender thread panicked"))
            .collect();
        (start, results)
    });
    let (mut sent, mut unconfirmed) = (0, 0);
    for r in results {
        let (n, confirmed) = r?;
        sent += n;
        unconfirmed += usize::from(!confirmed);
    }
    let after = target.wait_sinks(before.ended + streams as u64, QUIET, IO_TIMEOUT);
    let end = after.last_byte.unwrap_or(start).max(start);
    Ok(Transfer {
        bytes: after.bytes - before.bytes,
        sent,
        unconfirmed,
        unended: (before.ended + streams as u64).saturating_sub(after.ended) as usize,
        elapsed: end - start,
    })
}

fn open_sink(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connect to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(&[SINK])?;
    Ok(s)
}

/// Write for `duration`, half-close, and read back the sink's count: the bytes sent, and
/// whether the count came back (then it matched).
fn send(mut s: TcpStream, duration: Duration) -> anyhow::Result<(u64, bool)> {
    let chunk: Vec<u8> = (0..WRITE_CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    let deadline = Instant::now() + duration;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        s.write_all(&chunk).context("write to the sink")?;
        sent += chunk.len() as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    // An end or a reset instead of the count: the tunnel closed on the half-close.
    if s.read_exact(&mut count).is_err() {
        return Ok((sent, false));
    }
    let counted = u64::from_be_bytes(count);
    anyhow::ensure!(
        counted == sent,
        "the sink counted {counted} bytes, {sent} were sent"
    );
    Ok((sent, true))
}

/// The bulk workload: throughput of `streams` streams.
pub fn bulk(
    addr: SocketAddr,
    target: &Target,
    streams: usize,
    duration: Duration,
) -> anyhow::Result<Metrics> {
    let t = transfer(addr, target, streams, duration)?;
    let mut m = Metrics::default();
    m.show("gbit_per_s", gbit_per_s(t.bytes, t.elapsed));
    m.add("bytes", t.bytes);
    m.add("seconds", t.elapsed.as_secs_f64());
    m.add("streams", streams);
    if t.unconfirmed > 0 {
        m.add("lost_bytes", t.sent.saturating_sub(t.bytes));
        m.note(format!(
            "{} of {streams} streams closed on the half-close{}: counted at the sink",
            t.unconfirmed,
            match t.unended {
                0 => String::new(),
                n => format!(", {n} never ended there"),
            }
        ));
    }
    Ok(m)
}

/// The CPU workload: user+sys seconds per GB carried by one stream, of the endpoint's
/// processes (the figure the issue asks for; none for direct) and of the whole path: those
/// processes plus the harness (load generator and target), which is all the work the machine
/// does for the transfer. On a machine where the transfer is CPU-bound, the ratio of the
/// whole-path figures explains the throughput ratio.
pub fn cpu(endpoint: &Endpoint, target: &Target, duration: Duration) -> anyhow::Result<Metrics> {
    let harness = std::process::id();
    let cpu_now = || -> anyhow::Result<(Vec<Duration>, Duration)> {
        let procs = endpoint
            .procs
            .iter()
            .map(|p| procfs::cpu_time(p.pid()).context("read CPU time"))
            .collect::<anyhow::Result<_>>()?;
        Ok((procs, procfs::cpu_time(harness)?))
    };
    let before = cpu_now()?;
    let t = transfer(endpoint.addr, target, 1, duration)?;
    let after = cpu_now()?;
    let used: Vec<f64> = after
        .0
        .iter()
        .zip(&before.0)
        .map(|(a, b)| a.saturating_sub(*b).as_secs_f64())
        .collect();
    let tunnel: f64 = used.iter().fold(0.0, |a, b| a + b);
    let own = after.1.saturating_sub(before.1).as_secs_f64();
    let gb = t.bytes as f64 / 1e9;
    let per_gb = |s: f64| if gb > 0.0 { s / gb } else { 0.0 };
    let mut m = Metrics::default();
    let has_procs = !endpoint.procs.is_empty();
    if has_procs {
        m.show("cpu_s_per_gb", per_gb(tunnel));
    }
    m.show("path_cpu_s_per_gb", per_gb(tunnel + own));
    if has_procs {
        m.add("cpu_s", tunnel);
    }
    m.add("harness_cpu_s", own);
    for (p, s) in endpoint.procs.iter().zip(&used) {
        m.add(format!("{}_cpu_s", p.role()), *s);
    }
    m.add("gbit_per_s", gbit_per_s(t.bytes, t.elapsed));
    m.add("bytes", t.bytes);
    m.add("seconds", t.elapsed.as_secs_f64());
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_transfer_counts_every_byte() {
        let target = Target::start().unwrap();
        let t = transfer(target.addr(), &target, 3, Duration::from_millis(100)).unwrap();
        assert!(t.bytes >= 3 * WRITE_CHUNK as u64);
        assert_eq!((t.bytes, t.unconfirmed, t.unended), (t.sent, 0, 0));
        // No wall-clock bound here (shared CI machines): only that a duration was measured.
        assert!(t.elapsed > Duration::ZERO);
    }
}
