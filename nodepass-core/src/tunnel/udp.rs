//! UDP sessions, datagram-exact.
//!
//! The accepting side (`serve_users`) owns the user-facing UDP socket. Each new user source
//! address opens a session: one pool connection (dual-end) with `Open { kind: Udp }`, or one
//! connected UDP socket to a target (single-end). Datagrams travel inside the pool connection as
//! length-prefixed frames ([`crate::protocol::datagram`]), so boundaries survive exactly; replies
//! go back to the user address that opened the session, never to another.
//!
//! The dialing side (`serve_open`) connects a UDP socket to a target and relays frames and
//! datagrams both ways.
//!
//! A session ends after [`TunnelOptions::udp_idle`](super::TunnelOptions::udp_idle) without
//! traffic (or `read` when set), releasing its slot and pool connection. A datagram larger than
//! the maximum ([`TunnelOptions::udp_max_datagram`](super::TunnelOptions::udp_max_datagram)) or one
//! that finds its session's queue full is dropped and counted in `udp_dropped`, never truncated.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Ctx;
use super::targets::Lease;
use super::users::{Upstream, open_on_pool};
use super::wire::Wire;
use crate::limit::SlotPermit;
use crate::protocol::StreamKind;
use crate::protocol::datagram;
use crate::relay::Activity;
use crate::stats::Stats;
use crate::transport::TunnelStream;

/// Datagrams queued per session before new ones are dropped.
const SESSION_QUEUE: usize = 512;
/// Bytes of frames coalesced into one tunnel write.
const COALESCE_BYTES: usize = 64 * 1024;
/// Frames from the peer are bounded by the frame format only: the peer enforced its own
/// maximum when it read the datagram from its local socket.
const TUNNEL_FRAME_MAX: usize = u16::MAX as usize;
/// Receive buffer: one byte more than the largest UDP payload, to detect oversize datagrams.
const RECV_BUF: usize = 65536;

/// Apply the tunnel's rate limit (shared with TCP) to `n` bytes read from a local socket.
async fn throttle(ctx: &Ctx, n: usize) {
    if let Some(rate) = &ctx.relay.rate {
        let wait = rate.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The idle timeout of a UDP session under `ctx`.
fn idle_timeout(ctx: &Ctx) -> Duration {
    ctx.params.read_timeout.unwrap_or(ctx.opts.udp_idle)
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>;

/// Serve the user-facing UDP socket until `cancel`.
pub(crate) async fn serve_users(
    socket: Arc<UdpSocket>,
    upstream: Upstream,
    ctx: Ctx,
    cancel: CancellationToken,
) {
    let max = ctx.opts.udp_max_datagram;
    let stats = ctx.shared.stats.clone();
    // Never held across `.await`.
    let sessions: Sessions = Arc::new(Mutex::new(HashMap::new()));
    let local = socket.local_addr().ok();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (n, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems; not fatal.
                    tracing::debug!(error = %e, "udp receive error");
                    continue;
                }
            },
        };
        if n > max {
            Stats::add(&stats.udp_dropped, 1);
            tracing::debug!(%peer, len = n, max, "oversize datagram dropped");
            continue;
        }
        Stats::add(&stats.udp_rx, n as u64);
        throttle(&ctx, n).await;
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        let existing = crate::sync::lock(&sessions).get(&peer).cloned();
        let tx = match existing {
            Some(tx) => tx,
            None => {
                let Some(permit) = ctx.slots.try_acquire() else {
                    Stats::add(&stats.refused, 1);
                    Stats::add(&stats.udp_dropped, 1);
                    tracing::debug!(%peer, "slot limit reached, udp datagram dropped");
                    continue;
                };
                let (tx, rx) = mpsc::channel(SESSION_QUEUE);
                crate::sync::lock(&sessions).insert(peer, tx.clone());
                let session = UserSession {
                    socket: socket.clone(),
                    peer,
                    dst: local.unwrap_or(peer),
                    rx,
                    ctx: ctx.clone(),
                    sessions: sessions.clone(),
                    _permit: permit,
                };
                let upstream = upstream.clone();
                let span = tracing::debug_span!("udp", %peer);
                // A session lives on its own pool connection: a control hiccup that ends this
                // loop does not cut it (only the tunnel's stop does).
                ctx.tracker
                    .spawn(session.run(upstream, ctx.stop.clone()).instrument(span));
                tx
            }
        };
        if tx.try_send(datagram).is_err() {
            Stats::add(&stats.udp_dropped, 1);
        }
    }
}

/// One user's UDP session on the accepting side.
struct UserSession {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    dst: SocketAddr,
    rx: mpsc::Receiver<Bytes>,
    ctx: Ctx,
    sessions: Sessions,
    _permit: SlotPermit,
}

impl UserSession {
    async fn run(mut self, upstream: Upstream, cancel: CancellationToken) {
        let stats = self.ctx.shared.stats.clone();
        let _active = stats.session(true);
        let end = match upstream {
            Upstream::Pool(pool) => {
                match open_on_pool(
                    &pool,
                    StreamKind::Udp,
                    self.peer,
                    self.dst,
                    self.ctx.opts.pool_wait,
                )
                .await
                {
                    Some(conn) => self.over_tunnel(conn, &cancel).await,
                    None => {
                        Stats::add(&stats.refused, 1);
                        Err(io::Error::other("no pool connection available"))
                    }
                }
            }
            Upstream::Direct => match self.ctx.targets.connect_udp().await {
                Ok((target, lease)) => self.direct(target, &lease, &cancel).await,
                Err(e) => Err(e),
            },
        };
        crate::sync::lock(&self.sessions).remove(&self.peer);
        match end {
            Ok(()) => tracing::debug!("udp session ended"),
            Err(e) => tracing::debug!(error = %e, "udp session ended"),
        }
    }

    /// Relay between this user and a pool connection.
    async fn over_tunnel(
        &mut self,
        conn: TunnelStream,
        cancel: &CancellationToken,
    ) -> io::Result<()> {
        let stats = self.ctx.shared.stats.clone();
        let activity = Activity::new();
        let idle = idle_timeout(&self.ctx);
        let (mut rd, mut wr) = tokio::io::split(conn);
        let mut out = BytesMut::with_capacity(COALESCE_BYTES);
        let mut inbuf = BytesMut::with_capacity(RECV_BUF);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = self.ctx.relay.hard_stop.cancelled() => return Ok(()),
                _ = activity.idle_for(Some(idle)) => return Ok(()),
                d = self.rx.recv() => {
                    let Some(d) = d else { return Ok(()) };
                    activity.touch();
                    datagram::encode(&d, &mut out);
                    // Coalesce what is already queued into one write.
                    while out.len() < COALESCE_BYTES {
                        match self.rx.try_recv() {
                            Ok(d) => datagram::encode(&d, &mut out),
                            Err(_) => break,
                        }
                    }
                    wr.write_all(&out).await?;
                    // Message transports (WebSocket, HTTP/2) gather writes until a flush.
                    wr.flush().await?;
                    out.clear();
                }
                r = rd.read_buf(&mut inbuf) => {
                    if r? == 0 {
                        return Ok(());
                    }
                    activity.touch();
                    while let Some(d) = datagram::decode(&mut inbuf, TUNNEL_FRAME_MAX).map_err(io::Error::other)? {
                        match self.socket.send_to(&d, self.peer).await {
                            Ok(n) => Stats::add(&stats.udp_tx, n as u64),
                            Err(e) => tracing::debug!(error = %e, "udp send to user failed"),
                        }
                    }
                    inbuf.reserve(RECV_BUF);
                }
            }
        }
    }

    /// Relay between this user and a target directly (single-end).
    async fn direct(
        &mut self,
        target: UdpSocket,
        lease: &Lease,
        cancel: &CancellationToken,
    ) -> io::Result<()> {
        let stats = self.ctx.shared.stats.clone();
        let activity = Activity::new();
        let idle = idle_timeout(&self.ctx);
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = self.ctx.relay.hard_stop.cancelled() => return Ok(()),
                _ = activity.idle_for(Some(idle)) => return Ok(()),
                d = self.rx.recv() => {
                    let Some(d) = d else { return Ok(()) };
                    activity.touch();
                    match target.send(&d).await {
                        Ok(n) => lease.sent(n as u64),
                        Err(e) => tracing::debug!(error = %e, "udp send to target failed"),
                    }
                }
                r = target.recv(&mut buf) => {
                    activity.touch();
                    let Some(n) = from_target(r, &self.ctx) else { continue };
                    lease.received(n as u64);
                    throttle(&self.ctx, n).await;
                    match self.socket.send_to(&buf[..n], self.peer).await {
                        Ok(n) => Stats::add(&stats.udp_tx, n as u64),
                        Err(e) => tracing::debug!(error = %e, "udp send to user failed"),
                    }
                }
            }
        }
    }
}

/// Account for one receive from a target socket: the datagram's length when it is to be
/// relayed; `None` for a receive error (logged) or an oversize datagram (dropped, counted).
fn from_target(r: io::Result<usize>, ctx: &Ctx) -> Option<usize> {
    let stats = &ctx.shared.stats;
    match r {
        Ok(n) if n > ctx.opts.udp_max_datagram => {
            Stats::add(&stats.udp_dropped, 1);
            None
        }
        Ok(n) => {
            Stats::add(&stats.udp_rx, n as u64);
            Some(n)
        }
        Err(e) => {
            tracing::debug!(error = %e, "udp receive from target failed");
            None
        }
    }
}

/// The dialing side of a UDP session opened on a pool connection.
pub(crate) async fn serve_open(wire: Wire<TunnelStream>, ctx: &Ctx) -> io::Result<()> {
    let stats = ctx.shared.stats.clone();
    let _active = stats.session(true);
    let (target, lease) = ctx.targets.connect_udp().await?;
    let (conn, mut inbuf) = wire.into_parts();
    let (mut rd, mut wr) = tokio::io::split(conn);
    let activity = Activity::new();
    let idle = idle_timeout(ctx);
    let max = ctx.opts.udp_max_datagram;
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = BytesMut::with_capacity(COALESCE_BYTES);
    loop {
        // Frames already buffered (read ahead with the Open) go first.
        while let Some(d) =
            datagram::decode(&mut inbuf, TUNNEL_FRAME_MAX).map_err(io::Error::other)?
        {
            activity.touch();
            match target.send(&d).await {
                Ok(n) => {
                    Stats::add(&stats.udp_tx, n as u64);
                    lease.sent(n as u64);
                }
                Err(e) => tracing::debug!(error = %e, "udp send to target failed"),
            }
        }
        inbuf.reserve(RECV_BUF);
        tokio::select! {
            _ = ctx.stop.cancelled() => return Ok(()),
            _ = ctx.relay.hard_stop.cancelled() => return Ok(()),
            _ = activity.idle_for(Some(idle)) => return Ok(()),
            r = rd.read_buf(&mut inbuf) => {
                if r? == 0 {
                    return Ok(());
                }
            }
            r = target.recv(&mut buf) => {
                activity.touch();
                let Some(n) = from_target(r, ctx) else { continue };
                lease.received(n as u64);
                throttle(ctx, n).await;
                datagram::encode(&buf[..n], &mut out);
                // Coalesce replies already waiting in the socket.
                while out.len() < COALESCE_BYTES {
                    match target.try_recv(&mut buf) {
                        Ok(n) if n <= max => {
                            Stats::add(&stats.udp_rx, n as u64);
                            lease.received(n as u64);
                            throttle(ctx, n).await;
                            datagram::encode(&buf[..n], &mut out);
                        }
                        Ok(_) => {
                            stats.udp_dropped.fetch_add(1, Relaxed);
                        }
                        Err(_) => break,
                    }
                }
                wr.write_all(&out).await?;
                // Message transports (WebSocket, HTTP/2) gather writes until a flush.
                wr.flush().await?;
                out.clear();
            }
        }
    }
}
