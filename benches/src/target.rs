//! The target every subject carries traffic to: a TCP echo-or-sink server and a UDP sink on one
//! loopback port, running inside the harness process.
//!
//! TCP: a connection whose first byte is [`SINK`] is a sink: everything after that byte is
//! counted and discarded, and at end of stream the count is written back as a `u64` (big-endian)
//! before the connection is closed. Every sink connection's bytes (as they arrive) and its end
//! (EOF or error) are also entered in the target's [`SinkLedger`], so a transfer through a
//! tunnel that closes the connection on the sender's half-close, or never passes the end on
//! (the Go NodePass does either, depending on its pool type), is still counted where it
//! arrived. Any other first byte makes it an echo connection (that byte included). UDP: every datagram is checked as a [`crate::probe`] and tallied for the
//! current run.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::probe::{self, Probe};
use crate::stats::Jitter;

/// First byte of a sink connection.
pub const SINK: u8 = b'S';
/// Read buffer of a sink connection.
const SINK_BUFFER: usize = 128 * 1024;
/// Read buffer of an echo connection (small: the memory workload keeps thousands open).
const ECHO_BUFFER: usize = 4 * 1024;
/// Socket receive buffer asked for the UDP sink (the kernel caps it at `rmem_max`).
const UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

/// The running target; stops when dropped.
pub struct Target {
    addr: SocketAddr,
    sinks: Arc<Sinks>,
    tally: Arc<Mutex<UdpTally>>,
    stop: Arc<AtomicBool>,
    udp_thread: Option<JoinHandle<()>>,
    /// Thread id of the UDP sink thread: its `/proc/self/task/TID/net` is the sink's
    /// namespace.
    udp_tid: i32,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Target {
    /// Bind TCP and UDP on one free loopback port and start serving.
    pub fn start() -> io::Result<Target> {
        Target::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Bind TCP and UDP on one free port of `ip` and start serving.
    pub fn start_on(ip: IpAddr) -> io::Result<Target> {
        let (tcp, udp) = bind_pair(ip)?;
        let addr = tcp.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("target")
            .enable_all()
            .build()?;
        tcp.set_nonblocking(true)?;
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(tcp)?
        };
        let sinks = Arc::new(Sinks::default());
        runtime.spawn(accept_loop(listener, sinks.clone()));

        socket2::SockRef::from(&udp).set_recv_buffer_size(UDP_RECV_BUFFER)?;
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let tally = Arc::new(Mutex::new(UdpTally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let udp_thread = std::thread::Builder::new().name("udp-sink".into()).spawn({
            let (tally, stop) = (tally.clone(), stop.clone());
            move || {
                let _ = tid_tx.send(rustix::thread::gettid().as_raw_nonzero().get());
                udp_sink(udp, &tally, &stop)
            }
        })?;
        let udp_tid = tid_rx
            .recv()
            .map_err(|_| io::Error::other("the UDP sink thread did not start"))?;
        Ok(Target {
            addr,
            sinks,
            tally,
            stop,
            udp_thread: Some(udp_thread),
            udp_tid,
            runtime: Some(runtime),
        })
    }

    /// The TCP and UDP address (same port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the sink connections received so far.
    pub fn sinks(&self) -> SinkLedger {
        *self.sinks.lock()
    }

    /// Wait until at least `ended` sink connections have ended in all, or no sink byte has
    /// arrived for `quiet` (and this wait lasted that long: a tunnel that never passes the end
    /// of stream on), at most
    /// `timeout`; returns the ledger then (check its count: it is short after a quiet spell
    /// or a timeout).
    pub fn wait_sinks(&self, ended: u64, quiet: Duration, timeout: Duration) -> SinkLedger {
        let begin = Instant::now();
        let deadline = begin + timeout;
        let mut ledger = self.sinks.lock();
        // Bounded: every pass either returns or waits for at most what is left of the
        // deadline.
        loop {
            let now = Instant::now();
            // Quiet since the last byte, and at least `quiet` into this wait.
            let still = ledger.last_byte.map_or(begin, |t| t.max(begin)) + quiet;
            if ledger.ended >= ended || now >= deadline || now >= still {
                return *ledger;
            }
            let wake = deadline.min(still.max(now + Duration::from_millis(1)));
            ledger = self
                .sinks
                .changed
                .wait_timeout(ledger, wake - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Start counting UDP probes of `run` from zero; probes of other runs are ignored.
    pub fn udp_begin(&self, run: u32) {
        *self.lock() = UdpTally {
            run,
            ..UdpTally::default()
        };
    }

    /// Datagrams the kernel dropped on the UDP sink's socket so far (full receive buffer),
    /// read in the sink's own network namespace.
    pub fn udp_socket_drops(&self) -> u64 {
        let port = self.addr.port();
        ["udp", "udp6"]
            .iter()
            .filter_map(|t| {
                std::fs::read_to_string(format!("/proc/self/task/{}/net/{t}", self.udp_tid)).ok()
            })
            .map(|table| crate::procfs::drops_in(&table, port))
            .sum()
    }

    /// What arrived so far in the current run.
    pub fn udp_tally(&self) -> UdpTally {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, UdpTally> {
        // Held only for a few field updates, never across a blocking call.
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.udp_thread.take() {
            let _ = t.join();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What the sink connections received, all together since the target started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkLedger {
    /// Sink connections that ended (EOF or error).
    pub ended: u64,
    /// Bytes received by all sink connections, open or ended (after the [`SINK`] byte).
    pub bytes: u64,
    /// When the last of those bytes arrived.
    pub last_byte: Option<Instant>,
}

#[derive(Debug, Default)]
struct Sinks {
    ledger: Mutex<SinkLedger>,
    changed: Condvar,
}

impl Sinks {
    fn lock(&self) -> MutexGuard<'_, SinkLedger> {
        // Held for a few field updates or a condvar wait, never across I/O.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn received(&self, bytes: u64) {
        let mut l = self.lock();
        l.bytes += bytes;
        l.last_byte = Some(Instant::now());
    }

    fn ended(&self) {
        self.lock().ended += 1;
        self.changed.notify_all();
    }
}

/// UDP probes received in one run.
#[derive(Debug, Clone, Default)]
pub struct UdpTally {
    /// The run being counted.
    pub run: u32,
    /// Distinct valid probes of this run.
    pub delivered: u64,
    /// Valid probes seen again.
    pub duplicates: u64,
    /// Valid probes with a lower sequence number than one already seen.
    pub reordered: u64,
    /// Probes with a wrong checksum or magic (any run).
    pub corrupted: u64,
    /// Datagrams holding more than one probe (any run).
    pub merged: u64,
    /// Datagrams shorter than their probe (any run).
    pub truncated: u64,
    /// Valid probes of other runs (late arrivals of an earlier run).
    pub stale: u64,
    /// RFC 3550 jitter of the transit time.
    pub jitter: Jitter,
    /// Sum of transit times of delivered probes, nanoseconds.
    pub transit_sum_ns: u128,
    max_seq: Option<u64>,
    seen: Vec<u64>,
}

impl UdpTally {
    fn record(&mut self, probe: Probe, now_ns: u64) {
        match probe {
            Probe::Valid { run, .. } if run != self.run => self.stale += 1,
            Probe::Valid { seq, sent_ns, .. } => {
                let (word, bit) = ((seq / 64) as usize, seq % 64);
                if word >= self.seen.len() {
                    self.seen.resize(word + 1024, 0);
                }
                if self.seen[word] & (1 << bit) != 0 {
                    self.duplicates += 1;
                    return;
                }
                self.seen[word] |= 1 << bit;
                self.delivered += 1;
                if self.max_seq.is_some_and(|m| seq < m) {
                    self.reordered += 1;
                }
                self.max_seq = self.max_seq.max(Some(seq));
                let transit = now_ns as i64 - sent_ns as i64;
                self.jitter.record(transit);
                self.transit_sum_ns += transit.max(0) as u128;
            }
            Probe::Merged => self.merged += 1,
            Probe::Truncated => self.truncated += 1,
            Probe::Corrupted => self.corrupted += 1,
        }
    }
}

/// A TCP listener and a UDP socket on the same free port of `ip`.
fn bind_pair(ip: IpAddr) -> io::Result<(StdListener, UdpSocket)> {
    let mut last = None;
    for _ in 0..50 {
        let tcp = StdListener::bind((ip, 0))?;
        match UdpSocket::bind(tcp.local_addr()?) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port pair")))
}

async fn accept_loop(listener: TcpListener, sinks: Arc<Sinks>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, sinks.clone()));
            }
            // Out of descriptors or similar: back off briefly and go on.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve(mut s: TcpStream, sinks: Arc<Sinks>) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; ECHO_BUFFER];
    let n = match s.read(&mut buf).await {
        Ok(0) | Err(_) => return,
        Ok(n) => n,
    };
    if buf[0] == SINK {
        let mut total = (n - 1) as u64;
        sinks.received(total);
        let mut buf = vec![0u8; SINK_BUFFER];
        let clean = loop {
            match s.read(&mut buf).await {
                Ok(0) => break true,
                Ok(n) => {
                    total += n as u64;
                    sinks.received(n as u64);
                }
                Err(_) => break false,
            }
        };
        sinks.ended();
        if !clean {
            return;
        }
        let _ = s.write_all(&total.to_be_bytes()).await;
        let _ = s.shutdown().await;
        return;
    }
    let mut n = n;
    loop {
        if s.write_all(&buf[..n]).await.is_err() {
            return;
        }
        n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
    }
    let _ = s.shutdown().await;
}

fn udp_sink(sock: UdpSocket, tally: &Mutex<UdpTally>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => continue, // timeout: look at the stop flag
        };
        let now = probe::now_ns();
        let probe = probe::check(&buf[..n]);
        tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(probe, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn echo_and_sink() {
        let target = Target::start().unwrap();
        let mut echo = std::net::TcpStream::connect(target.addr()).unwrap();
        echo.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        echo.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");

        let mut sink = std::net::TcpStream::connect(target.addr()).unwrap();
        sink.write_all(&[SINK]).unwrap();
        sink.write_all(&vec![1u8; 300_000]).unwrap();
        sink.shutdown(std::net::Shutdown::Write).unwrap();
        let mut count = [0u8; 8];
        sink.read_exact(&mut count).unwrap();
        assert_eq!(u64::from_be_bytes(count), 300_000);
        let l = target.wait_sinks(1, Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!((l.ended, l.bytes), (1, 300_000));
        assert!(l.last_byte.is_some());
    }

    /// A sink connection cut without waiting for the count is still entered in the ledger.
    #[test]
    fn a_sink_closed_early_is_counted_in_the_ledger() {
        let target = Target::start().unwrap();
        let mut sink = std::net::TcpStream::connect(target.addr()).unwrap();
        sink.write_all(&[SINK]).unwrap();
        sink.write_all(&[2u8; 1000]).unwrap();
        drop(sink);
        let l = target.wait_sinks(1, Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!((l.ended, l.bytes), (1, 1000));
        // One that stays open is counted as its bytes arrive; the wait ends after the quiet
        // spell.
        let mut open = std::net::TcpStream::connect(target.addr()).unwrap();
        open.write_all(&[SINK]).unwrap();
        open.write_all(&[3u8; 500]).unwrap();
        let l = target.wait_sinks(2, Duration::from_millis(300), Duration::from_secs(10));
        assert_eq!((l.ended, l.bytes), (1, 1500));
    }

    #[test]
    fn udp_tally_counts_duplicates_reorders_and_stale() {
        let mut t = UdpTally {
            run: 2,
            ..UdpTally::default()
        };
        let v = |run, seq| Probe::Valid {
            run,
            seq,
            sent_ns: 0,
        };
        for p in [v(2, 0), v(2, 2), v(2, 1), v(2, 2), v(1, 5), Probe::Merged] {
            t.record(p, 10);
        }
        assert_eq!(
            (t.delivered, t.duplicates, t.reordered, t.stale, t.merged),
            (3, 1, 1, 1, 1)
        );
    }
}
