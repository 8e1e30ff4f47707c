//! Memory of the tunnel processes: RSS idle (pool filled), then with many idle tunneled
//! connections open, and the difference per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;

use super::IO_TIMEOUT;
use crate::process::{self, Proc};
use crate::procfs;
use crate::report::Metrics;
use crate::subject::Endpoint;

/// Threads opening connections at once (a tunnel's pool refills on demand meanwhile).
const OPENERS: usize = 8;
/// Descriptors kept aside for everything but the held connections: the tunnel's idle pool
/// (it grows when openers find it empty, up to the server's `max`, 1 024 by default) and 256
/// for the rest. With 256 alone a grown pool could run a tunnel process out of descriptors
/// near the end of the run (a reset at about 9 860 of 9 872 connections at tls=1).
const SPARE_FDS: u64 = 1024 + 256;

/// Measure the endpoint's processes idle, then holding `wanted` connections: fewer if the
/// descriptor limit does not allow as many (each connection costs two descriptors in the
/// harness, the user side and the target side, and at least two in each tunnel process), or if
/// the tunnel refuses more (then the figures are for the connections it took, with a note).
pub fn run(endpoint: &Endpoint, wanted: usize) -> anyhow::Result<Metrics> {
    anyhow::ensure!(!endpoint.procs.is_empty(), "no processes to measure");
    let procs = &endpoint.procs;
    process::settle(procs, Duration::from_millis(500), Duration::from_secs(5));
    let idle = rss(procs)?;
    let idle_fds = fds(procs)?;

    let mut m = Metrics::default();
    let capacity = connection_capacity();
    let n = wanted.min(capacity);
    if n < wanted {
        m.note(format!(
            "{n} connections instead of {wanted}: the open-files limit allows no more"
        ));
    }
    let (held, failure) = open(endpoint.addr, n);
    if let Some(e) = failure {
        m.note(format!(
            "only {} of {n} connections opened, then: {e:#}",
            held.len()
        ));
    }
    anyhow::ensure!(!held.is_empty(), "no connection could be opened");
    process::settle(procs, Duration::from_millis(300), Duration::from_secs(5));
    let loaded = rss(procs)?;
    let loaded_fds = fds(procs)?;
    let count = held.len();
    drop(held);

    m.show("connections", count);
    let per = |idle: u64, loaded: u64| (loaded as f64 - idle as f64) / count as f64;
    let mut total_per_conn = 0.0;
    for (i, p) in procs.iter().enumerate() {
        let role = p.role();
        total_per_conn += per(idle[i], loaded[i]);
        m.show(format!("{role}_idle_kib"), idle[i]);
        m.add(format!("{role}_loaded_kib"), loaded[i]);
        m.show(format!("{role}_kib_per_conn"), per(idle[i], loaded[i]));
        m.add(
            format!("{role}_fds_per_conn"),
            per(idle_fds[i], loaded_fds[i]),
        );
    }
    m.show("kib_per_conn", total_per_conn);
    m.add("wanted_connections", wanted);
    Ok(m)
}

fn fds(procs: &[Proc]) -> anyhow::Result<Vec<u64>> {
    procs
        .iter()
        .map(|p| {
            let n = procfs::fd_count(p.pid())
                .with_context(|| format!("descriptors of the {}", p.role()))?;
            Ok(n as u64)
        })
        .collect()
}

fn rss(procs: &[Proc]) -> anyhow::Result<Vec<u64>> {
    procs
        .iter()
        .map(|p| procfs::rss_kib(p.pid()).with_context(|| format!("RSS of the {}", p.role())))
        .collect()
}

/// How many connections the descriptor limit allows (the tunnel processes inherit the
/// harness's limit).
fn connection_capacity() -> usize {
    let (soft, _) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
    (soft.saturating_sub(SPARE_FDS) / 2) as usize
}

/// Open up to `n` connections, each confirmed end to end by a 1-byte echo, and keep them.
/// Each opener stops at its first failure, which is returned beside what was opened.
fn open(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, Option<anyhow::Error>) {
    let per_thread = n.div_ceil(OPENERS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|t| {
                let mine = per_thread.min(n.saturating_sub(t * per_thread));
                scope.spawn(move || {
                    let mut mine_open = Vec::with_capacity(mine);
                    for _ in 0..mine {
                        match open_one(addr) {
                            Ok(s) => mine_open.push(s),
                            // A broken path would fail every further attempt.
                            Err(e) => return (mine_open, Some(e)),
                        }
                    }
                    (mine_open, None)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        let mut failure = None;
        for h in handles {
            let (opened, err) = h.join().expect("opener thread panicked");
            all.extend(opened);
            failure = failure.or(err);
        }
        (all, failure)
    })
}

fn open_one(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).context("connect")?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(b"m").context("send the echo byte")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .context("no echo: the path closed the connection or timed out")?;
    Ok(s)
}
