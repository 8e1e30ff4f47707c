//! The dialing side: connect a session to a target chosen by the [`Balancer`] (retrying the next
//! target within the same session when a dial fails), send the PROXY header, count the session
//! in the target's statistics, and run the optional TCP-connect probes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::balance::{Balancer, TargetCounters, TargetSnapshot};
use crate::config::{ProxyProtocol, TunnelParams};
use crate::protocol::{StreamKind, proxy};
use crate::relay::{RelayCtx, Tap};
use crate::transport::net::{Dialer, Resolver};

/// The target list of one tunnel.
#[derive(Debug)]
pub(crate) struct Targets {
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) resolver: Resolver,
    pub(crate) dialer: Dialer,
    proxy: ProxyProtocol,
    probe: Option<std::time::Duration>,
}

/// One session counted on a target: `active` until dropped. It also meters the session's bytes
/// (as a relay [`Tap`]) and reports its first response time to the balancer.
#[derive(Debug)]
pub(crate) struct Lease {
    index: usize,
    counters: Arc<TargetCounters>,
    balancer: Arc<Balancer>,
    /// True when the relay's local socket is the target (dialing side of a pool session); false
    /// when the local socket is the user's (single-end forwarding).
    local_is_target: bool,
    start: Instant,
    /// Microseconds after `start` of the first byte sent to the target, plus one (0 = none yet).
    first_out: AtomicU64,
    responded: AtomicBool,
}

impl Lease {
    fn new(t: &Targets, index: usize) -> Self {
        let counters = t.balancer.counters(index).clone();
        counters.active.fetch_add(1, Relaxed);
        counters.total.fetch_add(1, Relaxed);
        Lease {
            index,
            counters,
            balancer: t.balancer.clone(),
            local_is_target: true,
            start: Instant::now(),
            first_out: AtomicU64::new(0),
            responded: AtomicBool::new(false),
        }
    }

    /// The relay context for this session: the tunnel's, with this lease as its tap.
    pub(crate) fn relay_ctx(self: &Arc<Self>, base: &RelayCtx) -> RelayCtx {
        let mut ctx = base.clone();
        ctx.tap = Some(self.clone());
        ctx
    }

    /// Mark the relay's local socket as the user's (the target is the remote end).
    pub(crate) fn local_is_user(mut self) -> Self {
        self.local_is_target = false;
        self
    }

    /// `n` bytes were sent to the target.
    pub(crate) fn sent(&self, n: u64) {
        self.counters.bytes_out.fetch_add(n, Relaxed);
        if self.first_out.load(Relaxed) == 0 {
            let at = self.start.elapsed().as_micros() as u64 + 1;
            let _ = self.first_out.compare_exchange(0, at, Relaxed, Relaxed);
        }
    }

    /// `n` bytes came from the target.
    pub(crate) fn received(&self, n: u64) {
        self.counters.bytes_in.fetch_add(n, Relaxed);
        if !self.responded.swap(true, Relaxed) {
            let sent = self.first_out.load(Relaxed);
            // A target that speaks first gives no response time.
            if sent != 0 {
                let now = self.start.elapsed().as_micros() as u64 + 1;
                let after = std::time::Duration::from_micros(now.saturating_sub(sent));
                self.balancer.responded(self.index, after);
            }
        }
    }
}

impl Tap for Lease {
    fn read(&self, n: u64) {
        if self.local_is_target {
            self.received(n)
        } else {
            self.sent(n)
        }
    }

    fn written(&self, n: u64) {
        if self.local_is_target {
            self.sent(n)
        } else {
            self.received(n)
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.counters.active.fetch_sub(1, Relaxed);
    }
}

/// Whether this end dials the targets in `mode`: a server in forward flow, a client in reverse
/// flow or single-end. (The other end listens on its target address.)
pub(crate) fn dials_targets(is_server: bool, mode: super::Mode) -> bool {
    use super::Mode;
    match mode {
        Mode::Forward => is_server,
        Mode::Reverse | Mode::SingleEnd => !is_server,
        Mode::Pending => false,
    }
}

/// Start the probe task of a run (it ends at once when probes are off); the caller aborts it
/// when the run ends.
pub(crate) fn spawn_probes(ctx: &super::Ctx, is_server: bool) -> tokio::task::JoinHandle<()> {
    let shared = ctx.shared.clone();
    let dials = move || dials_targets(is_server, *crate::sync::lock(&shared.mode));
    let probes = ctx.targets.clone().probe_loop(dials, ctx.stop.clone());
    tokio::spawn(probes.in_current_span())
}

/// Zero the per-target traffic counters of the current run (with the tunnel's `reset`).
pub(crate) fn reset_traffic(shared: &super::Shared) {
    let targets = shared
        .targets
        .lock()
        .expect("targets lock poisoned")
        .clone();
    if let Some(t) = targets {
        t.balancer.reset_traffic();
    }
}

/// The periodic per-target status events of the current run, if any.
pub(crate) fn log_status(shared: &super::Shared) {
    let targets = shared
        .targets
        .lock()
        .expect("targets lock poisoned")
        .clone();
    if let Some(t) = targets {
        t.log_status();
    }
}

impl Targets {
    /// The targets of a new run, published in `shared` for their statistics.
    pub(crate) fn shared(shared: &super::Shared, params: &TunnelParams) -> Arc<Self> {
        let t = Arc::new(Targets::new(params));
        *crate::sync::lock(&shared.targets) = Some(t.clone());
        t
    }

    pub(crate) fn new(params: &TunnelParams) -> Self {
        Targets {
            balancer: Arc::new(Balancer::new(params.targets.clone(), params.balance)),
            resolver: Resolver::new(params.dns_ttl),
            dialer: Dialer::new(params.dial),
            proxy: params.proxy,
            probe: params.balance.probe,
        }
    }

    /// Snapshots of every target.
    pub(crate) fn snapshot(&self) -> Vec<TargetSnapshot> {
        self.balancer.snapshot(Instant::now())
    }

    /// Connect to a target chosen by the strategy; a failed dial marks that target down and
    /// the next one is tried, so the session fails only when every target fails. Then send the
    /// PROXY header (if configured) describing the user `src` and the address it reached, `dst`.
    pub(crate) async fn connect_tcp(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<(TcpStream, SocketAddr, Lease)> {
        let mut last = None;
        for i in self.balancer.order(Instant::now()) {
            let ep = self.balancer.endpoint(i);
            let addrs = match self.resolver.resolve(ep).await {
                Ok(a) => a,
                Err(e) => {
                    self.balancer.dial_failed(i, Instant::now());
                    last = Some(io::Error::other(e.to_string()));
                    continue;
                }
            };
            for addr in addrs {
                let started = Instant::now();
                match self.dialer.connect(addr).await {
                    Ok(mut s) => {
                        self.balancer
                            .dial_succeeded(i, started.elapsed(), Instant::now());
                        self.send_proxy_header(&mut s, src, dst).await?;
                        return Ok((s, addr, Lease::new(self, i)));
                    }
                    Err(e) => {
                        tracing::debug!(target = %addr, error = %e, "target dial failed, trying the next");
                        last = Some(e);
                    }
                }
            }
            self.balancer.dial_failed(i, Instant::now());
            self.resolver.forget(ep);
        }
        Err(last.unwrap_or_else(|| io::Error::other("no target configured")))
    }

    /// A UDP socket connected to a target chosen by the strategy (the session keeps it for its
    /// lifetime); resolution and socket errors move on to the next target.
    pub(crate) async fn connect_udp(&self) -> io::Result<(UdpSocket, Lease)> {
        let mut last = None;
        for i in self.balancer.order(Instant::now()) {
            let ep = self.balancer.endpoint(i);
            let addrs = match self.resolver.resolve(ep).await {
                Ok(a) => a,
                Err(e) => {
                    self.balancer.dial_failed(i, Instant::now());
                    last = Some(io::Error::other(e.to_string()));
                    continue;
                }
            };
            for addr in addrs {
                let sock = match self.dialer.udp_socket(addr).await {
                    Ok(s) => s,
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                };
                match sock.connect(addr).await {
                    Ok(()) => return Ok((sock, Lease::new(self, i))),
                    Err(e) => last = Some(e),
                }
            }
            self.balancer.dial_failed(i, Instant::now());
        }
        Err(last.unwrap_or_else(|| io::Error::other("no target configured")))
    }

    async fn send_proxy_header(
        &self,
        s: &mut TcpStream,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<()> {
        if self.proxy == ProxyProtocol::Off {
            return Ok(());
        }
        let mut header = BytesMut::new();
        proxy::encode(self.proxy, src, dst, StreamKind::Tcp, &mut header);
        s.write_all(&header).await
    }

    /// Probe every target with a TCP connect each `probe` interval until `stop` (nothing when
    /// probes are off). Only the end that dials the targets probes them: `dials` says whether
    /// this end does, now (the mode of a dual-end client is known only after its handshake).
    pub(crate) async fn probe_loop(
        self: Arc<Self>,
        dials: impl Fn() -> bool,
        stop: CancellationToken,
    ) {
        let Some(every) = self.probe else { return };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !dials() {
                continue;
            }
            let probes = (0..self.balancer.len()).map(|i| self.probe_one(i));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = futures_join_all(probes) => {}
            }
        }
    }

    async fn probe_one(&self, i: usize) {
        let ep = self.balancer.endpoint(i);
        let started = Instant::now();
        let result = match self.resolver.resolve(ep).await {
            Ok(addrs) => {
                let mut ok = None;
                for addr in addrs {
                    let t = Instant::now();
                    if self.dialer.connect(addr).await.is_ok() {
                        ok = Some(t.elapsed());
                        break;
                    }
                }
                ok
            }
            Err(_) => None,
        };
        if result.is_none() {
            tracing::debug!(target = %ep, elapsed = ?started.elapsed(), "target probe failed");
        }
        self.balancer.probed(i, result, Instant::now());
    }

    /// One periodic status event per target (target `nodepass::event`).
    pub(crate) fn log_status(&self) {
        if self.balancer.len() < 2 && self.probe.is_none() {
            return;
        }
        for t in self.snapshot() {
            tracing::info!(
                target: "nodepass::event",
                address = %t.address, up = t.up, selected = t.selected,
                probe_latency_ms = t.probe_latency_us.map(|us| us as f64 / 1000.0),
                active = t.active, total = t.total, failed_dials = t.failed_dials,
                bytes_in = t.bytes_in, bytes_out = t.bytes_out,
                "target status"
            );
        }
    }
}

/// Await every future (they run concurrently in this task).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
