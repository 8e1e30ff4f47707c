//! Both ends of a user session: the accepting side ([`accept_loop`], one task per user
//! connection, carried over a pool connection or dialed directly) and the dialing side
//! ([`serve_pool_conn`], which waits for `Open` on a parked pool connection and dials a target).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Ctx;
use super::wire::{Wire, WireError};
use crate::config::Endpoint;
use crate::error::Result;
use crate::pool::{Lent, Parked, Pool};
use crate::protocol::{self, Chunks, Message, StreamKind};
use crate::relay::{RelayEnd, framed, is_peer_disconnect, relay_chunked, relay_stream};
use crate::sniff;
use crate::stats::Stats;
use crate::transport::TunnelStream;
use crate::transport::net::{Accepts, bind_tcp_for, bind_udp, tune_accepted};

/// The user-facing sockets of a tunnel end: TCP and/or UDP on the same address.
#[derive(Debug, Default)]
pub(crate) struct UserSockets {
    pub(crate) tcp: Option<Arc<TcpListener>>,
    pub(crate) udp: Option<Arc<UdpSocket>>,
}

impl UserSockets {
    /// Bind TCP (if `tcp`) and UDP (if `udp`) on `ep`; UDP takes the port TCP got when `ep`
    /// asks for port 0, so users find both on one port.
    pub(crate) async fn bind(ep: &Endpoint, tcp: bool, udp: bool) -> Result<Self> {
        let tcp_l = if tcp {
            Some(bind_tcp_for(ep, Accepts::Users).await?)
        } else {
            None
        };
        let port = match &tcp_l {
            Some(l) => l.local_addr().map(|a| a.port()).unwrap_or(ep.port),
            None => ep.port,
        };
        let udp_s = if udp {
            Some(
                bind_udp(&Endpoint {
                    host: ep.host.clone(),
                    port,
                })
                .await?,
            )
        } else {
            None
        };
        Ok(UserSockets {
            tcp: tcp_l.map(Arc::new),
            udp: udp_s.map(Arc::new),
        })
    }

    /// The bound addresses for a log line: `127.0.0.1:8081 (tcp+udp)`, or `none`.
    pub(crate) fn describe(&self) -> String {
        let tcp = self.tcp.as_ref().and_then(|l| l.local_addr().ok());
        let udp = self.udp.as_ref().and_then(|s| s.local_addr().ok());
        match (tcp, udp) {
            (Some(t), Some(u)) if t == u => format!("{t} (tcp+udp)"),
            (Some(t), Some(u)) => format!("{t} (tcp), {u} (udp)"),
            (Some(t), None) => format!("{t} (tcp)"),
            (None, Some(u)) => format!("{u} (udp)"),
            (None, None) => "none".into(),
        }
    }

    /// Record the bound addresses.
    pub(crate) fn publish(&self, shared: &super::Shared, as_tunnel: bool) {
        let tcp = self.tcp.as_ref().and_then(|l| l.local_addr().ok());
        let udp = self.udp.as_ref().and_then(|s| s.local_addr().ok());
        shared.update_addrs(|a| {
            if as_tunnel {
                a.tunnel = tcp;
            } else {
                a.users = tcp;
            }
            a.users_udp = udp;
        });
    }

    /// Serve both sockets until `cancel`, in the tunnel's tracker.
    pub(crate) fn serve(&self, upstream: Upstream, ctx: &Ctx, cancel: &CancellationToken) {
        if let Some(l) = &self.tcp {
            ctx.tracker.spawn(
                accept_loop(l.clone(), upstream.clone(), ctx.clone(), cancel.clone())
                    .in_current_span(),
            );
        }
        if let Some(s) = &self.udp {
            ctx.tracker.spawn(
                super::udp::serve_users(s.clone(), upstream, ctx.clone(), cancel.clone())
                    .in_current_span(),
            );
        }
    }
}

/// Where accepted user connections go.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    /// Over a pool connection to the other end.
    Pool(Pool),
    /// Straight to the targets (single-end forwarding).
    Direct,
}

/// Accept user connections until `cancel`; each gets its own task in the tunnel's tracker.
pub(crate) async fn accept_loop(
    listener: Arc<TcpListener>,
    upstream: Upstream,
    ctx: Ctx,
    cancel: CancellationToken,
) {
    // A listener on one address is every connection's local address: no `getsockname` each.
    let bound = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        let (user, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ctx.opts.accept_backoff).await;
                    continue;
                }
            },
        };
        // Limits are taken before the work: over the slot limit the user is closed at once.
        let Some(permit) = ctx.slots.try_acquire() else {
            Stats::add(&ctx.shared.stats.refused, 1);
            tracing::debug!(%peer, "slot limit reached, connection refused");
            continue;
        };
        let ctx2 = ctx.clone();
        let upstream = upstream.clone();
        let span = tracing::debug_span!("user", %peer);
        ctx.tracker.spawn(
            async move {
                let _permit = permit;
                handle_user(user, peer, bound, upstream, &ctx2).await;
            }
            .instrument(span),
        );
    }
}

/// `bound`: the listener's address when it is bound to one (the user's `dst`).
async fn handle_user(
    user: TcpStream,
    peer: SocketAddr,
    bound: Option<SocketAddr>,
    upstream: Upstream,
    ctx: &Ctx,
) {
    tune_accepted(&user, Accepts::Users);
    let stats = &ctx.shared.stats;
    if let Some(p) = sniff::check(&user, &ctx.params.block, ctx.opts.sniff_wait).await {
        Stats::add(&stats.refused, 1);
        tracing::warn!(%peer, protocol = p.name(), "blocked by the block rule");
        return;
    }
    let dst = match bound {
        Some(addr) => addr,
        None => user.local_addr().unwrap_or(peer),
    };
    match upstream {
        Upstream::Pool(pool) => {
            // The first bytes ride with the `Open` unless a rate limit must meter them.
            let early = ctx.relay.rate.is_none().then_some(&user);
            let opened =
                open_with_first_bytes(&pool, StreamKind::Tcp, peer, dst, early, ctx.opts.pool_wait)
                    .await;
            let opened = match opened {
                Ok(o) => o,
                Err(e) => {
                    // The unused pool connection was closed with a reset; nothing to relay.
                    tracing::debug!(%peer, error = %e, "user connection failed before its session started");
                    return;
                }
            };
            let Some(Opened { conn, first, lent }) = opened else {
                Stats::add(&stats.refused, 1);
                tracing::warn!(
                    %peer,
                    "no client connected (no tunnel connection came within {}s), user connection closed",
                    ctx.opts.pool_wait.as_secs()
                );
                return;
            };
            Stats::add(&stats.tcp_rx, first as u64);
            let _active = stats.session(false);
            if let Some(mut lent) = lent {
                let chunks = lent.chunks();
                let session = relay_chunked(user, conn, BytesMut::new(), chunks, &ctx.relay);
                let (res, back) = on_loan(session, || lent.write_off()).await;
                // Both directions ended cleanly: the connection is idle again (nothing may
                // follow the far side's end before our next `Open`).
                if let Some((conn, rest)) = back
                    && rest.is_empty()
                {
                    pool.give_back(lent, conn);
                }
                finish(res);
                return;
            }
            finish(relay_stream(user, conn, BytesMut::new(), &ctx.relay).await);
        }
        Upstream::Direct => match ctx.targets.connect_tcp(peer, dst).await {
            Ok((target, addr, lease)) => {
                tracing::debug!(%addr, "target connected");
                let _active = stats.session(false);
                let relay = Arc::new(lease.local_is_user()).relay_ctx(&ctx.relay);
                finish(
                    relay_stream(user, TunnelStream::Plain(target), BytesMut::new(), &relay).await,
                );
            }
            Err(e) => tracing::warn!(
                targets = %targets_text(ctx),
                error = %e,
                "no target reachable, user connection closed"
            ),
        },
    }
}

/// The configured targets for a log line: `10.0.0.1:80, 10.0.0.2:80`.
fn targets_text(ctx: &Ctx) -> String {
    let list: Vec<String> = ctx.params.targets.iter().map(|t| t.to_string()).collect();
    list.join(", ")
}

/// Take a pool connection (waiting up to `wait`) and send `Open` on it; one retry with another connection if the
/// first turns out dead on write.
pub(crate) async fn open_on_pool(
    pool: &Pool,
    kind: StreamKind,
    src: SocketAddr,
    dst: SocketAddr,
    wait: Duration,
) -> Option<TunnelStream> {
    match open_with_first_bytes(pool, kind, src, dst, None, wait).await {
        Ok(opened) => opened.map(|o| o.conn),
        // Without a user socket to read there is no user error.
        Err(_) => None,
    }
}

/// Largest number of the user's first bytes sent in the same write as `Open` (one TLS record).
const FIRST_BYTES_MAX: usize = 16 * 1024;

/// A session opened on a pool connection.
pub(crate) struct Opened {
    pub(crate) conn: TunnelStream,
    /// User bytes sent with the `Open`.
    pub(crate) first: usize,
    /// The session travels in chunks and the connection, lent, can be reused after it.
    pub(crate) lent: Option<Lent>,
}

/// [`open_on_pool`], and when `user` is given, whatever the user has already sent (at most
/// [`FIRST_BYTES_MAX`], read without waiting) travels in the same write as the `Open`: one
/// segment (one TLS record) instead of two, and the far side finds the first bytes with the
/// `Open`, so it can write them to the target right after connecting. The far side relays
/// optimistically: nothing waits for a confirmation of the target connection (a refused
/// target resets the tunnel connection, which the relay passes on to the user). A TCP session
/// on a TLS connection of a pool whose ends agreed to reuse travels in chunks
/// ([`Opened::lent`]). Returns `None` when no pool connection came in time, or the user
/// socket's error (a reset before the session started: the pool connection is then closed
/// with a reset, unused).
pub(crate) async fn open_with_first_bytes(
    pool: &Pool,
    kind: StreamKind,
    src: SocketAddr,
    dst: SocketAddr,
    user: Option<&TcpStream>,
    wait: Duration,
) -> std::io::Result<Option<Opened>> {
    let mut early = BytesMut::new();
    for attempt in 0..2 {
        let Some((mut conn, lent)) = pool.take_for(wait, kind == StreamKind::Tcp).await else {
            return Ok(None);
        };
        if attempt == 0
            && let Some(user) = user
        {
            // Read once, after the (possibly waited-for) take: the bytes stay in `early` for
            // the retry.
            if let Err(e) = read_ready(user, &mut early, FIRST_BYTES_MAX) {
                conn.abort_on_close();
                return Err(e);
            }
        }
        let chunks = lent.as_ref().map_or(Chunks::Off, Lent::chunks);
        let mut frame = BytesMut::with_capacity(48 + 4 + early.len());
        let open = Message::Open {
            kind,
            src,
            dst,
            chunks,
        };
        protocol::encode(&open, &mut frame);
        if chunks != Chunks::Off {
            framed::put_chunk(&mut frame, chunks, &early);
        } else {
            frame.extend_from_slice(&early);
        }
        match write_flushed(&mut conn, &frame).await {
            Ok(()) => {
                return Ok(Some(Opened {
                    conn,
                    first: early.len(),
                    lent,
                }));
            }
            Err(e) => tracing::debug!(error = %e, "pool connection dead on open, trying another"),
        }
    }
    Ok(None)
}

/// Append to `out` what `s` has already received, at most `max` bytes, without waiting (a
/// non-blocking `recv`): 0 when nothing is there yet or at EOF (which the relay then sees
/// itself); a socket error (a reset) is returned, as it is consumed by the read.
fn read_ready(s: &TcpStream, out: &mut BytesMut, max: usize) -> std::io::Result<usize> {
    let start = out.len();
    out.resize(start + max, 0);
    // The socket is non-blocking (tokio's), so this `recv` never waits. Reading behind
    // tokio's back is fine: its readiness is only a hint, re-armed by the next `WouldBlock`.
    let sock = socket2::SockRef::from(s);
    let res = match std::io::Read::read(&mut &*sock, &mut out[start..]) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    };
    out.truncate(start + *res.as_ref().unwrap_or(&0));
    res
}

/// Write `bytes` and flush (TLS records leave the session buffer at once).
async fn write_flushed(conn: &mut TunnelStream, bytes: &[u8]) -> std::io::Result<()> {
    conn.write_all(bytes).await?;
    conn.flush().await
}

fn finish(res: Result<(u64, u64), RelayEnd>) {
    match res {
        Ok((up, down)) => tracing::debug!(up, down, "session closed"),
        Err(RelayEnd::Io(e)) if is_peer_disconnect(&e) => {
            tracing::debug!(error = %e, "session closed by peer")
        }
        Err(RelayEnd::Io(e)) => tracing::debug!(error = %e, "session ended with an error"),
        Err(e) => tracing::debug!(reason = %e, "session closed"),
    }
}

/// The dialing side of a parked pool connection: wait for `Open` (or the end of the session),
/// then dial a target and relay.
pub(crate) async fn serve_pool_conn(
    mut wire: Wire<TunnelStream>,
    mut parked: Parked,
    ctx: Ctx,
    session: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = session.cancelled() => return,
            // The pool shrank: closing this connection tells the other side to drop its end.
            _ = parked.retired() => return,
            m = wire.recv() => m,
        };
        // `parked` is dropped (asking the filler for a replacement) once the target is connected:
        // the refill dial then does not compete with this session's critical path. A chunked
        // session lends it instead, and the connection comes back for the next `Open`.
        let (kind, src, dst, chunks) = match msg {
            Ok(Message::Open {
                kind,
                src,
                dst,
                chunks,
            }) => match kind {
                StreamKind::Tcp => (kind, src, dst, chunks),
                StreamKind::Udp => (kind, src, dst, Chunks::Off),
            },
            Ok(other) => {
                tracing::warn!(
                    got = other.name(),
                    "unexpected message on a pool connection"
                );
                return;
            }
            Err(WireError::Closed) => return,
            Err(e) => {
                tracing::debug!(error = %e, "pool connection lost");
                return;
            }
        };
        let span = tracing::debug_span!("session", %src);
        if chunks == Chunks::Off {
            return serve_open(wire, parked, ctx, kind, src, dst)
                .instrument(span)
                .await;
        }
        match serve_chunked(wire, &mut parked, &ctx, (src, dst), chunks)
            .instrument(span)
            .await
        {
            // The session ended cleanly: wait for the next `Open`.
            Some(back) => {
                wire = back;
                parked.repay();
            }
            None => return,
        }
    }
}

/// A chunked TCP session ([`Message::Open`]'s `chunks`) on a parked connection, lent to it
/// (see [`crate::pool`]): dial a target and relay; the connection back when both directions
/// ended cleanly. A session that outlives [`crate::pool::LOAN`] has its connection replaced.
async fn serve_chunked(
    wire: Wire<TunnelStream>,
    parked: &mut Parked,
    ctx: &Ctx,
    (src, dst): (SocketAddr, SocketAddr),
    chunks: Chunks,
) -> Option<Wire<TunnelStream>> {
    let stats = &ctx.shared.stats;
    let Some(_permit) = ctx.slots.try_acquire() else {
        Stats::add(&stats.refused, 1);
        tracing::debug!("slot limit reached, session refused");
        return None;
    };
    if !ctx.params.tcp {
        tracing::warn!("tcp session refused: notcp=1");
        return None;
    }
    parked.lend();
    let (target, lease) = dial_target(ctx, &wire, src, dst).await?;
    let _active = stats.session(false);
    let relay = Arc::new(lease).relay_ctx(&ctx.relay);
    let (stream, prefix) = wire.into_parts();
    let session = relay_chunked(target, stream, prefix, chunks, &relay);
    let (res, back) = on_loan(session, || parked.write_off()).await;
    finish(res);
    back.map(|(stream, buf)| Wire { stream, buf })
}

/// Run a chunked `session`; if it outlives [`crate::pool::LOAN`], `write_off` its connection
/// (the pool replaces it) and let it go on.
fn on_loan<F: Future, W: FnOnce()>(session: F, write_off: W) -> OnLoan<F, W> {
    OnLoan {
        session,
        loan: tokio::time::sleep(crate::pool::LOAN),
        write_off: Some(write_off),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`on_loan`]: a struct so that the session's future is stored once (an
    /// `async fn` that pins its argument holds it twice, in every session task).
    struct OnLoan<F, W> {
        #[pin]
        session: F,
        #[pin]
        loan: tokio::time::Sleep,
        write_off: Option<W>,
    }
}

impl<F: Future, W: FnOnce()> Future for OnLoan<F, W> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.session.poll(cx) {
            return Poll::Ready(out);
        }
        if this.write_off.is_some()
            && this.loan.poll(cx).is_ready()
            && let Some(write_off) = this.write_off.take()
        {
            write_off();
        }
        Poll::Pending
    }
}

/// Dial the target of a session opened on `wire`. When none is reachable, say so and reset
/// the pool connection: the user sees a reset, as when dialing an unreachable target directly.
async fn dial_target(
    ctx: &Ctx,
    wire: &Wire<TunnelStream>,
    src: SocketAddr,
    dst: SocketAddr,
) -> Option<(TcpStream, super::targets::Lease)> {
    match ctx.targets.connect_tcp(src, dst).await {
        Ok((target, addr, lease)) => {
            tracing::debug!(%addr, "target connected");
            Some((target, lease))
        }
        Err(e) => {
            tracing::warn!(
                targets = %targets_text(ctx),
                error = %e,
                "no target reachable, session closed"
            );
            wire.stream.abort_on_close();
            None
        }
    }
}

/// One session on a pool connection whose `Open` was read: dial a target and relay.
async fn serve_open(
    wire: Wire<TunnelStream>,
    parked: Parked,
    ctx: Ctx,
    kind: StreamKind,
    src: SocketAddr,
    dst: SocketAddr,
) {
    let stats = &ctx.shared.stats;
    let Some(_permit) = ctx.slots.try_acquire() else {
        Stats::add(&stats.refused, 1);
        tracing::debug!("slot limit reached, session refused");
        return;
    };
    match kind {
        StreamKind::Tcp => {
            if !ctx.params.tcp {
                tracing::warn!("tcp session refused: notcp=1");
                return;
            }
            let connected = dial_target(&ctx, &wire, src, dst).await;
            drop(parked);
            let Some((target, lease)) = connected else {
                return;
            };
            let _active = stats.session(false);
            let (stream, prefix) = wire.into_parts();
            let relay = Arc::new(lease).relay_ctx(&ctx.relay);
            finish(relay_stream(target, stream, prefix, &relay).await);
        }
        StreamKind::Udp => {
            drop(parked);
            if !ctx.params.udp {
                tracing::warn!("udp session refused: noudp=1");
                return;
            }
            if let Err(e) = super::udp::serve_open(wire, &ctx).await {
                tracing::debug!(error = %e, "udp session ended");
            }
        }
    }
}
