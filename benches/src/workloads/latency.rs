//! Latency workloads against the target's echo: new connections, and round trips on one
//! established connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::IO_TIMEOUT;
use crate::report::Metrics;
use crate::stats::Latency;

/// Round trips before the measured ones (connection and caches warm).
const RTT_WARMUP: usize = 100;

/// `count` times: connect, send 1 byte, read its echo, close. Each sample spans all four; the
/// JSON also has the connect call alone and the first echo alone (a tunnel accepts at once and
/// sets up its path while the first byte waits).
///
/// On the emulated WAN (`link_rtt`), the time to the first response byte is also given in
/// round trips of the link (`p50_rtts`, `p99_rtts`): a direct connection needs two (the TCP
/// handshake, then the echo), a tunnel with a warm pool one.
///
/// `pause` (zero: back to back) comes before each connection, outside the sample: with a
/// pause longer than the previous connection's teardown and pool refill, a sample shows a new
/// connection's own path, without that work competing for the cores.
pub fn connect(
    addr: SocketAddr,
    count: usize,
    link_rtt: Option<std::time::Duration>,
    pause: std::time::Duration,
) -> anyhow::Result<Metrics> {
    let mut samples = Vec::with_capacity(count);
    let mut connects = Vec::with_capacity(count);
    let mut echoes = Vec::with_capacity(count);
    for i in 0..count {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let t0 = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .with_context(|| format!("connection {i}: connect"))?;
        let t1 = Instant::now();
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        ping(&mut s).with_context(|| format!("connection {i}: echo"))?;
        let t2 = Instant::now();
        drop(s);
        samples.push(t0.elapsed().as_nanos() as u64);
        connects.push((t1 - t0).as_nanos() as u64);
        echoes.push((t2 - t1).as_nanos() as u64);
    }
    let l = Latency::from_nanos(&mut samples).context("no connections measured")?;
    let c = Latency::from_nanos(&mut connects).context("no connections measured")?;
    let e = Latency::from_nanos(&mut echoes).context("no connections measured")?;
    let mut m = Metrics::default();
    m.show("p50_us", l.p50_us);
    m.show("p90_us", l.p90_us);
    m.show("p99_us", l.p99_us);
    m.show("max_us", l.max_us);
    if let Some(rtt) = link_rtt.filter(|r| !r.is_zero()) {
        let rtt_us = rtt.as_secs_f64() * 1e6;
        m.show("p50_rtts", l.p50_us / rtt_us);
        m.show("p99_rtts", l.p99_us / rtt_us);
    }
    m.add("mean_us", l.mean_us);
    m.add("count", l.count);
    m.add("connect_call_p50_us", c.p50_us);
    m.add("connect_call_p99_us", c.p99_us);
    m.add("first_echo_p50_us", e.p50_us);
    m.add("first_echo_p99_us", e.p99_us);
    Ok(m)
}

/// `bursts` times, `size` threads at once: connect, send 1 byte, read its echo, close; then a
/// `pause` (outside the samples) for the pools to refill. A sample spans one connection from
/// the moment its burst was released to its echo, so it includes the wait behind the rest of
/// the burst (for the tunnel's accept, its pool and the cores). Also given: the whole burst
/// (release to the last echo), and in round trips of the link on the emulated WAN.
pub fn burst(
    addr: SocketAddr,
    size: usize,
    bursts: usize,
    pause: Duration,
    link_rtt: Option<Duration>,
) -> anyhow::Result<Metrics> {
    anyhow::ensure!(size > 0 && bursts > 0, "a burst needs connections");
    // Released together by `go`; `done` collects them after each burst. Every sample and the
    // whole burst count from one instant, taken just before the release (each thread's own
    // wake-up may come later than another's), so no connection outlasts its burst.
    let (go, done) = (Barrier::new(size + 1), Barrier::new(size + 1));
    let released = Mutex::new(Instant::now());
    let mut wholes = Vec::with_capacity(bursts);
    let results: Vec<anyhow::Result<Vec<u64>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..size)
            .map(|w| {
                let (go, done, released) = (&go, &done, &released);
                scope.spawn(move || {
                    let mut samples = Vec::with_capacity(bursts);
                    let mut failure = None;
                    for b in 0..bursts {
                        go.wait();
                        let t0 = *released.lock().expect("not poisoned");
                        // After a failure the thread still meets every barrier (the others
                        // wait for it) but stops connecting.
                        if failure.is_none() {
                            match one_connection(addr) {
                                Ok(()) => samples.push(t0.elapsed().as_nanos() as u64),
                                Err(e) => {
                                    failure = Some(e.context(format!("burst {b}, connection {w}")))
                                }
                            }
                        }
                        done.wait();
                    }
                    failure.map_or(Ok(samples), Err)
                })
            })
            .collect();
        for _ in 0..bursts {
            std::thread::sleep(pause);
            let t0 = Instant::now();
            *released.lock().expect("not poisoned") = t0;
            go.wait();
            done.wait();
            wholes.push(t0.elapsed().as_nanos() as u64);
        }
        workers
            .into_iter()
            .map(|h| h.join().expect("burst thread panicked"))
            .collect()
    });
    let mut samples = Vec::with_capacity(size * bursts);
    for r in results {
        samples.extend(r?);
    }
    let l = Latency::from_nanos(&mut samples).context("no connections measured")?;
    let whole = Latency::from_nanos(&mut wholes).context("no bursts measured")?;
    let mut m = Metrics::default();
    m.show("p50_us", l.p50_us);
    m.show("p99_us", l.p99_us);
    m.show("burst_p50_us", whole.p50_us);
    if let Some(rtt) = link_rtt.filter(|r| !r.is_zero()) {
        let rtt_us = rtt.as_secs_f64() * 1e6;
        m.show("p50_rtts", l.p50_us / rtt_us);
        m.show("p99_rtts", l.p99_us / rtt_us);
    }
    m.add("p90_us", l.p90_us);
    m.add("max_us", l.max_us);
    m.add("mean_us", l.mean_us);
    m.add("count", l.count);
    m.add("burst_max_us", whole.max_us);
    m.add("size", size);
    Ok(m)
}

/// Connect, one echo, close.
fn one_connection(addr: SocketAddr) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).context("connect")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    ping(&mut s).context("echo")?;
    Ok(())
}

/// `count` 1-byte ping-pongs on one connection, after a short warm-up.
pub fn round_trip(addr: SocketAddr, count: usize) -> anyhow::Result<Metrics> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).context("connect")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    for _ in 0..RTT_WARMUP {
        ping(&mut s).context("warm-up echo")?;
    }
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let t0 = Instant::now();
        ping(&mut s).with_context(|| format!("round trip {i}"))?;
        samples.push(t0.elapsed().as_nanos() as u64);
    }
    let l = Latency::from_nanos(&mut samples).context("no round trips measured")?;
    let mut m = Metrics::default();
    m.show("p50_us", l.p50_us);
    m.show("p99_us", l.p99_us);
    m.add("p90_us", l.p90_us);
    m.add("max_us", l.max_us);
    m.add("mean_us", l.mean_us);
    m.add("count", l.count);
    Ok(m)
}

fn ping(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(b"p")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    if b != *b"p" {
        return Err(std::io::Error::other("the echo returned another byte"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    #[test]
    fn direct_latencies() {
        let target = Target::start().unwrap();
        let c = connect(target.addr(), 20, None, std::time::Duration::ZERO).unwrap();
        assert_eq!(c.get("count"), Some(20.0));
        assert!(c.get("p50_us").unwrap() <= c.get("max_us").unwrap());
        let r = round_trip(target.addr(), 50).unwrap();
        assert_eq!(r.get("count"), Some(50.0));
        let b = burst(target.addr(), 8, 3, Duration::from_millis(1), None).unwrap();
        assert_eq!(b.get("count"), Some(24.0));
        assert!(b.get("p50_us").unwrap() <= b.get("max_us").unwrap());
        let empty = burst(target.addr(), 0, 3, Duration::ZERO, None).unwrap_err();
        assert!(empty.to_string().contains("needs connections"), "{empty}");
        // A connection's time is within its burst's.
        assert!(b.get("max_us").unwrap() <= b.get("burst_max_us").unwrap());
    }
}
