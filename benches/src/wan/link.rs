//! The user-space link between two TUN devices: per direction, a reader thread stamps each IP
//! packet, drops it at random with the loss rate, gives it its departure time from a
//! bandwidth model (a FIFO bottleneck: a packet starts when the one before it has been
//! "serialized" at the rate; a packet that would wait longer than the queue holds is
//! dropped), and adds the one-way delay plus jitter; a writer thread holds the packets in a
//! timer queue and writes each to the other device when it is due.
//!
//! Without `reorder`, a packet's due time is never earlier than the one before it, so jitter
//! never reorders (as on most real paths).
//!
//! The link's threads ask for the real-time policy `SCHED_FIFO` (with `chrt`): on a shared,
//! busy machine a normal thread waiting for a packet's due time can be kept off the CPU for
//! milliseconds, which would add to the emulated delay. They do little work per packet, so
//! they take little from others.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tun_rs::{InterruptEvent, SyncDevice};

use super::profile::Profile;

/// Largest packet read from a device (the devices' MTU is 1500; leave room).
const MAX_PACKET: usize = 65_536;

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets read from the sending side.
    pub received: AtomicU64,
    /// Of those, dropped by the random loss.
    pub lost: AtomicU64,
    /// Of those, dropped because the bottleneck queue was full.
    pub queue_drops: AtomicU64,
    /// Packets written to the receiving side.
    pub delivered: AtomicU64,
    /// Bytes written to the receiving side.
    pub delivered_bytes: AtomicU64,
    /// Writes that failed.
    pub write_errors: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DirStats {
    /// Packets read from the sending side.
    pub received: u64,
    /// Dropped by the random loss.
    pub lost: u64,
    /// Dropped because the bottleneck queue was full.
    pub queue_drops: u64,
    /// Written to the receiving side.
    pub delivered: u64,
    /// Bytes written to the receiving side.
    pub delivered_bytes: u64,
    /// Writes that failed.
    pub write_errors: u64,
}

impl DirStats {
    /// What happened since `earlier`.
    pub fn since(&self, earlier: &DirStats) -> DirStats {
        DirStats {
            received: self.received - earlier.received,
            lost: self.lost - earlier.lost,
            queue_drops: self.queue_drops - earlier.queue_drops,
            delivered: self.delivered - earlier.delivered,
            delivered_bytes: self.delivered_bytes - earlier.delivered_bytes,
            write_errors: self.write_errors - earlier.write_errors,
        }
    }
}

impl Counters {
    fn snapshot(&self) -> DirStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirStats {
            received: g(&self.received),
            lost: g(&self.lost),
            queue_drops: g(&self.queue_drops),
            delivered: g(&self.delivered),
            delivered_bytes: g(&self.delivered_bytes),
            write_errors: g(&self.write_errors),
        }
    }
}

/// The running link between devices `a` and `b`; stops (joining its threads) when dropped.
pub struct Link {
    stop: Arc<AtomicBool>,
    events: Vec<Arc<InterruptEvent>>,
    threads: Vec<JoinHandle<()>>,
    a_to_b: Arc<Counters>,
    b_to_a: Arc<Counters>,
    realtime: bool,
}

/// Real-time priority asked for the link's threads (`chrt -f`).
const RT_PRIORITY: &str = "10";

impl Link {
    /// Start moving packets between `a` and `b` with `profile`.
    pub fn start(a: SyncDevice, b: SyncDevice, profile: &Profile) -> io::Result<Link> {
        let (a, b) = (Arc::new(a), Arc::new(b));
        let stop = Arc::new(AtomicBool::new(false));
        let seed = seed();
        let mut link = Link {
            stop: stop.clone(),
            events: Vec::new(),
            threads: Vec::new(),
            a_to_b: Arc::new(Counters::default()),
            b_to_a: Arc::new(Counters::default()),
            realtime: false,
        };
        let (tid_tx, tid_rx) = mpsc::channel();
        let tid = move |tx: &Sender<i32>| {
            let _ = tx.send(rustix::thread::gettid().as_raw_nonzero().get());
        };
        let dirs = [
            ("a>b", a.clone(), b.clone(), link.a_to_b.clone(), seed),
            (
                "b>a",
                b,
                a,
                link.b_to_a.clone(),
                seed ^ 0x9e37_79b9_7f4a_7c15,
            ),
        ];
        for (name, from, to, counters, seed) in dirs {
            let event = Arc::new(InterruptEvent::new()?);
            let (tx, rx) = mpsc::channel();
            let shaper = Shaper::new(profile, seed);
            link.threads.push(
                std::thread::Builder::new()
                    .name(format!("wan-rd {name}"))
                    .spawn({
                        let (event, counters, tid_tx) =
                            (event.clone(), counters.clone(), tid_tx.clone());
                        move || {
                            tid(&tid_tx);
                            read_loop(&from, &event, shaper, &tx, &counters)
                        }
                    })?,
            );
            link.threads.push(
                std::thread::Builder::new()
                    .name(format!("wan-wr {name}"))
                    .spawn({
                        let (stop, tid_tx) = (stop.clone(), tid_tx.clone());
                        move || {
                            tid(&tid_tx);
                            write_loop(&to, rx, &stop, &counters)
                        }
                    })?,
            );
            link.events.push(event);
        }
        drop(tid_tx);
        // Each thread sends its id first thing (and keeps its sender while it runs).
        let tids: Vec<i32> = tid_rx.iter().take(4).collect();
        link.realtime = tids.len() == 4 && tids.iter().all(|t| make_realtime(*t));
        Ok(link)
    }

    /// Whether all the link's threads run with the real-time policy (else some run as normal
    /// threads and the delay may stretch on a busy machine).
    pub fn realtime(&self) -> bool {
        self.realtime
    }

    /// Counters of the direction from `a` to `b`.
    pub fn a_to_b(&self) -> DirStats {
        self.a_to_b.snapshot()
    }

    /// Counters of the direction from `b` to `a`.
    pub fn b_to_a(&self) -> DirStats {
        self.b_to_a.snapshot()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for e in &self.events {
            let _ = e.trigger();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Give thread `tid` the `SCHED_FIFO` policy; whether that worked.
fn make_realtime(tid: i32) -> bool {
    std::process::Command::new("chrt")
        .args(["-f", "-p", RT_PRIORITY, &tid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A packet on its way, ordered by due time, then arrival.
type Pending = Reverse<(Instant, u64, Vec<u8>)>;

/// Decides each packet's fate: dropped, or due at some instant.
struct Shaper {
    one_way: Duration,
    jitter: Duration,
    loss: f64,
    /// Nanoseconds to serialize one byte at the rate.
    ns_per_byte: Option<f64>,
    /// The longest a packet may wait for the bandwidth.
    max_wait: Duration,
    reorder: bool,
    /// When the bottleneck finishes the packets accepted so far.
    free_at: Option<Instant>,
    last_due: Option<Instant>,
    rng: SplitMix,
}

/// What the shaper decided.
#[derive(Debug, PartialEq)]
enum Fate {
    Lost,
    QueueFull,
    Due(Instant),
}

impl Shaper {
    fn new(p: &Profile, seed: u64) -> Shaper {
        let ns_per_byte = p.rate_bps.map(|r| 8e9 / r as f64);
        let max_wait = match (p.rate_bps, p.queue_limit()) {
            (Some(r), Some(q)) => Duration::from_secs_f64(q as f64 * 8.0 / r as f64),
            _ => Duration::MAX,
        };
        Shaper {
            one_way: p.one_way(),
            jitter: p.jitter,
            loss: p.loss,
            ns_per_byte,
            max_wait,
            reorder: p.reorder,
            free_at: None,
            last_due: None,
            rng: SplitMix(seed),
        }
    }

    fn decide(&mut self, now: Instant, len: usize) -> Fate {
        if self.loss > 0.0 && self.rng.unit() < self.loss {
            return Fate::Lost;
        }
        let sent = match self.ns_per_byte {
            Some(ns) => {
                let start = self.free_at.map_or(now, |f| f.max(now));
                if start - now > self.max_wait {
                    return Fate::QueueFull;
                }
                let done = start + Duration::from_nanos((len as f64 * ns) as u64);
                self.free_at = Some(done);
                done
            }
            None => now,
        };
        let mut due = sent + self.one_way;
        if !self.jitter.is_zero() {
            let j = self.jitter.as_nanos() as f64 * (2.0 * self.rng.unit() - 1.0);
            due = if j >= 0.0 {
                due + Duration::from_nanos(j as u64)
            } else {
                due.checked_sub(Duration::from_nanos((-j) as u64))
                    .unwrap_or(due)
                    .max(sent)
            };
        }
        if !self.reorder {
            due = self.last_due.map_or(due, |l| l.max(due));
        }
        self.last_due = Some(due);
        Fate::Due(due)
    }
}

fn read_loop(
    from: &SyncDevice,
    event: &InterruptEvent,
    mut shaper: Shaper,
    tx: &Sender<(Instant, Vec<u8>)>,
    counters: &Counters,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let n = match from.recv_intr(&mut buf, event) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && event.is_trigger() => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The device went away (namespace gone): nothing more to do.
            Err(_) => return,
        };
        let now = Instant::now();
        counters.received.fetch_add(1, Ordering::Relaxed);
        match shaper.decide(now, n) {
            Fate::Lost => {
                counters.lost.fetch_add(1, Ordering::Relaxed);
            }
            Fate::QueueFull => {
                counters.queue_drops.fetch_add(1, Ordering::Relaxed);
            }
            Fate::Due(due) => {
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
}

fn write_loop(
    to: &SyncDevice,
    rx: Receiver<(Instant, Vec<u8>)>,
    stop: &AtomicBool,
    counters: &Counters,
) {
    let mut queue: BinaryHeap<Pending> = BinaryHeap::new();
    let mut seq = 0u64;
    // Checked at least this often, so a stop is seen even when no packet flows.
    let idle = Duration::from_millis(100);
    while !stop.load(Ordering::Relaxed) {
        let wait = queue.peek().map_or(idle, |Reverse((due, _, _))| {
            due.saturating_duration_since(Instant::now()).min(idle)
        });
        match rx.recv_timeout(wait) {
            Ok((due, packet)) => {
                queue.push(Reverse((due, seq, packet)));
                seq += 1;
                // Take whatever else is already waiting before writing.
                while let Ok((due, packet)) = rx.try_recv() {
                    queue.push(Reverse((due, seq, packet)));
                    seq += 1;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while queue.peek().is_some_and(|Reverse((due, _, _))| *due <= now) {
            let Reverse((_, _, packet)) = queue.pop().expect("peeked");
            match to.send(&packet) {
                Ok(_) => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    counters
                        .delivered_bytes
                        .fetch_add(packet.len() as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    counters.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// SplitMix64: a small, fast generator; plenty for drawing losses and jitter.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed from the kernel's random source (the clock if that fails).
fn seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaper(p: &str) -> Shaper {
        Shaper::new(&p.parse().unwrap(), 7)
    }

    #[test]
    fn delay_and_bandwidth_set_the_due_time() {
        // 8 Mbit/s: 1 µs per byte; 1000-byte packets take 1 ms each.
        let mut s = shaper("10ms,0%,8mbit");
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(s.decide(t0, 1000), Fate::Due(t0 + ms(1) + ms(5)));
        // The second, arriving at once, waits for the first.
        assert_eq!(s.decide(t0, 1000), Fate::Due(t0 + ms(2) + ms(5)));
        // After the link went idle, no wait.
        assert_eq!(s.decide(t0 + ms(10), 1000), Fate::Due(t0 + ms(11) + ms(5)));
    }

    #[test]
    fn a_full_queue_drops() {
        // Queue of 2000 bytes at 8 Mbit/s: 2 ms of waiting at most.
        let mut s = shaper("0,0%,8mbit,queue=2000");
        let t0 = Instant::now();
        let fates: Vec<Fate> = (0..5).map(|_| s.decide(t0, 1000)).collect();
        assert!(matches!(fates[2], Fate::Due(_)), "{fates:?}");
        assert_eq!(fates[3], Fate::QueueFull);
    }

    #[test]
    fn loss_rate_is_close_to_the_setting() {
        let mut s = shaper("0,5%,unlimited");
        let t0 = Instant::now();
        let n = 100_000;
        let lost = (0..n).filter(|_| s.decide(t0, 100) == Fate::Lost).count();
        // Binomial: mean 5000, sd 69; 6 sd either side.
        assert!((4_586..=5_414).contains(&lost), "{lost}");
    }

    #[test]
    fn jitter_keeps_order_unless_reordering_is_asked() {
        for (profile, may_reorder) in [
            ("20ms,0%,unlimited,jitter=5ms", false),
            ("20ms,0%,unlimited,jitter=5ms,reorder", true),
        ] {
            let mut s = shaper(profile);
            let t0 = Instant::now();
            let dues: Vec<Instant> = (0..1000u64)
                .map(
                    |i| match s.decide(t0 + Duration::from_micros(i * 10), 100) {
                        Fate::Due(d) => d,
                        f => panic!("{f:?}"),
                    },
                )
                .collect();
            let ordered = dues.windows(2).all(|w| w[0] <= w[1]);
            assert_eq!(ordered, !may_reorder, "{profile}");
            for (i, d) in dues.iter().enumerate() {
                let sent = t0 + Duration::from_micros(i as u64 * 10);
                assert!(
                    *d >= sent + Duration::from_millis(5),
                    "{profile}: too early"
                );
            }
        }
    }
}
