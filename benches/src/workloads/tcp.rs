//! TCP bulk transfer into the target's sink: throughput (one or more streams) and the CPU the
//! tunnel processes spend per GB.

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
use crate::target::SINK;

/// Size of each write of a sender.
const WRITE_CHUNK: usize = 128 * 1024;

/// Bytes that reached the sink, and how long from the common start until the last stream's
/// count came back.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// Bytes counted by the sink, all streams together.
    pub bytes: u64,
    /// Wall time of the whole transfer.
    pub elapsed: Duration,
}

/// `streams` connections send into the sink for `duration`, started together.
pub fn transfer(addr: SocketAddr, streams: usize, duration: Duration) -> anyhow::Result<Transfer> {
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
    let mut bytes = 0;
    let mut end = start;
    for r in results {
        let (n, done) = r?;
        bytes += n;
        end = end.max(done);
    }
    Ok(Transfer {
        bytes,
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

/// Write for `duration`, half-close, and read back the sink's count.
fn send(mut s: TcpStream, duration: Duration) -> anyhow::Result<(u64, Instant)> {
    let chunk: Vec<u8> = (0..WRITE_CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    let deadline = Instant::now() + duration;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        s.write_all(&chunk).context("write to the sink")?;
        sent += chunk.len() as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)
        .context("read the sink's byte count")?;
    let done = Instant::now();
    let counted = u64::from_be_bytes(count);
    anyhow::ensure!(
        counted == sent,
        "the sink counted {counted} bytes, {sent} were sent"
    );
    Ok((counted, done))
}

/// The bulk workload: throughput of `streams` streams.
pub fn bulk(addr: SocketAddr, streams: usize, duration: Duration) -> anyhow::Result<Metrics> {
    let t = transfer(addr, streams, duration)?;
    let mut m = Metrics::default();
    m.show("gbit_per_s", gbit_per_s(t.bytes, t.elapsed));
    m.add("bytes", t.bytes);
    m.add("seconds", t.elapsed.as_secs_f64());
    m.add("streams", streams);
    Ok(m)
}

/// The CPU workload: user+sys seconds per GB carried by one stream, of the endpoint's
/// processes (the figure the issue asks for; none for direct) and of the whole path: those
/// processes plus the harness (load generator and target), which is all the work the machine
/// does for the transfer. On a machine where the transfer is CPU-bound, the ratio of the
/// whole-path figures explains the throughput ratio.
pub fn cpu(endpoint: &Endpoint, duration: Duration) -> anyhow::Result<Metrics> {
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
    let t = transfer(endpoint.addr, 1, duration)?;
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
    use crate::target::Target;

    #[test]
    fn direct_transfer_counts_every_byte() {
        let target = Target::start().unwrap();
        let t = transfer(target.addr(), 3, Duration::from_millis(100)).unwrap();
        assert!(t.bytes >= 3 * WRITE_CHUNK as u64);
        // No wall-clock bound here (shared CI machines): only that a duration was measured.
        assert!(t.elapsed > Duration::ZERO);
    }
}
