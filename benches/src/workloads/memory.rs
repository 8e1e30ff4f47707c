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
/// Descriptors kept aside for everything but the held connections.
const SPARE_FDS: u64 = 256;

/// Measure the endpoint's processes idle, then holding `wanted` connections (fewer if the
/// descriptor limit does not allow as many: each connection costs two descriptors in the
/// harness, the user side and the target side, and two in each tunnel process).
pub fn run(endpoint: &Endpoint, wanted: usize) -> anyhow::Result<Metrics> {
    anyhow::ensure!(!endpoint.procs.is_empty(), "no processes to measure");
    let procs = &endpoint.procs;
    process::settle(procs, Duration::from_millis(500), Duration::from_secs(5));
    let idle = rss(procs)?;

    let n = wanted.min(connection_capacity());
    let held = open(endpoint.addr, n)?;
    process::settle(procs, Duration::from_millis(300), Duration::from_secs(5));
    let loaded = rss(procs)?;
    drop(held);

    let mut m = Metrics::default();
    m.show("connections", n);
    let mut total_per_conn = 0.0;
    for ((p, i), l) in procs.iter().zip(&idle).zip(&loaded) {
        let per_conn = (*l as f64 - *i as f64) / n.max(1) as f64;
        total_per_conn += per_conn;
        m.show(format!("{}_idle_kib", p.role()), *i);
        m.add(format!("{}_loaded_kib", p.role()), *l);
        m.show(format!("{}_kib_per_conn", p.role()), per_conn);
    }
    m.show("kib_per_conn", total_per_conn);
    m.add("wanted_connections", wanted);
    Ok(m)
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

/// Open `n` connections, each confirmed end to end by a 1-byte echo, and keep them.
fn open(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let per_thread = n.div_ceil(OPENERS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|t| {
                let mine = per_thread.min(n.saturating_sub(t * per_thread));
                scope.spawn(move || {
                    // Stop at the first failure: a broken path would fail every attempt.
                    (0..mine)
                        .map(|i| open_one(addr).with_context(|| format!("idle connection {i}")))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for h in handles {
            all.extend(h.join().expect("opener thread panicked")?);
        }
        Ok(all)
    })
}

fn open_one(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(b"m")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(s)
}
