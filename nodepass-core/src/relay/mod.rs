//! Carrying TCP user sessions (with half-close); UDP sessions are relayed by the tunnel's
//! `udp` module as length-prefixed datagrams.
//!
//! [`relay_tcp`] copies both directions between a local socket (user or target) and a tunnel
//! connection until both are done: an EOF on one side becomes a shutdown of the other side's
//! write half, so half-closed protocols keep working. The local side is [`Metered`]: it counts
//! bytes into the tunnel's [`Stats`], records activity for the idle timeout (`read`) and applies
//! the tunnel's shared rate limit (`rate`).

mod copy;
pub(crate) mod framed;
mod metered;
#[cfg(target_os = "linux")]
pub(crate) mod splice;

pub(crate) use metered::{Activity, Metered, Prefixed};

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::limit::RateLimiter;
use crate::protocol::Chunks;
use crate::stats::Stats;
use crate::transport::TunnelStream;

/// Relay buffer size per direction, borrowed only while data moves. Measured
/// (docs/benchmarks.md): 16 KiB buffers cut TLS bulk throughput by a third against 64 KiB, and
/// 256 KiB carried 13-25 % more than 64 KiB (fewer reads, writes and wake-ups per byte).
pub(crate) const RELAY_BUFFER: usize = 256 * 1024;

/// What every relay of one tunnel shares.
#[derive(Debug, Clone)]
pub(crate) struct RelayCtx {
    /// The tunnel's counters.
    pub stats: Arc<Stats>,
    /// The tunnel's rate limit, if any.
    pub rate: Option<RateLimiter>,
    /// Close a session idle for longer than this.
    pub idle_timeout: Option<Duration>,
    /// Cancelled when the tunnel's shutdown grace period is over.
    pub hard_stop: CancellationToken,
    /// Use `splice(2)` for plain TCP without a rate limit (Linux).
    pub zero_copy: bool,
    /// Extra accounting of this session's local socket (a target's statistics), if any.
    pub tap: Option<Arc<dyn Tap>>,
}

/// Extra accounting of one session's local socket, besides the tunnel's [`Stats`] (used for
/// per-target statistics). Called on the relay's hot path: keep it to a few atomic operations.
pub(crate) trait Tap: Send + Sync + std::fmt::Debug {
    /// `n` bytes were read from the local socket.
    fn read(&self, n: u64);
    /// `n` bytes were written to the local socket.
    fn written(&self, n: u64);
}

/// Relay a local TCP socket with a tunnel connection (or a target socket): `splice(2)` on
/// Linux for plain TCP without a rate limit, the buffered [`relay_tcp`] otherwise. Same
/// counters, half-close, idle timeout and stop behaviour either way.
///
/// A relay that ends on a reset or abort by either peer, or is cut by the tunnel's hard stop,
/// closes *both* sockets with a reset (`SO_LINGER` 0): the reset travels on across the
/// tunnel to the far user or target, which so never mistakes a cut stream for a complete one.
pub(crate) async fn relay_stream(
    mut local: TcpStream,
    mut remote: TunnelStream,
    prefix: BytesMut,
    ctx: &RelayCtx,
) -> Result<(u64, u64), RelayEnd> {
    // The relay borrows both sockets, so the last close can still be turned into a reset once
    // the outcome is known (no second handle: that was two `dup`s and two `close`s per session).
    let res = relay_stream_inner(&mut local, &mut remote, prefix, ctx).await;
    if is_abort(&res) {
        reset_on_close(&local, &remote);
    }
    res
}

/// Make both sockets of an aborted relay close with a reset (`SO_LINGER` 0). An HTTP/2 or
/// QUIC stream shares its connection: dropped unfinished, it is reset on its own.
fn reset_on_close(local: &TcpStream, remote: &TunnelStream) {
    let _ = socket2::SockRef::from(local).set_linger(Some(Duration::ZERO));
    remote.abort_on_close();
}

/// Whether a relay's end must reach both peers as a reset. Only a reset or abort is passed
/// on: a broken pipe (the peer stopped reading) must not discard the other direction's data
/// still queued in the kernel.
fn is_abort(res: &Result<(u64, u64), RelayEnd>) -> bool {
    match res {
        Err(RelayEnd::Io(e)) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        ),
        Err(RelayEnd::Stopped) => true,
        _ => false,
    }
}

/// [`relay_stream`] for a chunked session (`Open`'s `chunks`, see [`framed`]) on a pool
/// connection of its own; `prefix` holds the bytes already read off `remote` after the `Open`.
/// Wide chunks on a plain connection are spliced, like [`relay_stream`], without a rate limit.
/// Besides the outcome, gives back the connection and the bytes read past the session when
/// both directions ended cleanly: it can carry the next `Open`.
pub(crate) async fn relay_chunked(
    mut local: TcpStream,
    remote: TunnelStream,
    prefix: BytesMut,
    chunks: Chunks,
    ctx: &RelayCtx,
) -> (
    Result<(u64, u64), RelayEnd>,
    Option<(TunnelStream, BytesMut)>,
) {
    #[cfg(target_os = "linux")]
    if let TunnelStream::Plain(tcp) = &remote
        && chunks == Chunks::Wide
        && ctx.zero_copy
        && ctx.rate.is_none()
    {
        return match splice::relay_chunked(&local, tcp, prefix, ctx).await {
            Ok((carried, rest)) => (Ok(carried), Some((remote, rest))),
            Err(end) => {
                let res = Err(end);
                if is_abort(&res) {
                    reset_on_close(&local, &remote);
                }
                (res, None)
            }
        };
    }
    let mut framed = framed::Framed::new(remote, prefix, chunks);
    let res = relay_tcp(&mut local, &mut framed, BytesMut::new(), ctx).await;
    if is_abort(&res) {
        reset_on_close(&local, framed.get_ref());
        return (res, None);
    }
    let back = (res.is_ok() && framed.reusable()).then(|| framed.into_parts());
    (res, back)
}

async fn relay_stream_inner(
    local: &mut TcpStream,
    remote: &mut TunnelStream,
    prefix: BytesMut,
    ctx: &RelayCtx,
) -> Result<(u64, u64), RelayEnd> {
    #[cfg(target_os = "linux")]
    if let TunnelStream::Plain(tcp) = remote
        && ctx.zero_copy
        && ctx.rate.is_none()
    {
        return splice::relay(local, tcp, prefix, ctx).await;
    }
    relay_tcp(local, remote, prefix, ctx).await
}

/// Why a relay ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayEnd {
    /// The session was idle longer than the `read` timeout.
    #[error("idle timeout")]
    Idle,
    /// The tunnel stopped.
    #[error("tunnel stopped")]
    Stopped,
    /// A socket error (resets are ordinary peer behaviour).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Relay a TCP session between `local` (user or target socket) and `tunnel`, sending `prefix`
/// (bytes already read off the tunnel after the `Open`) to `local` first. Returns the bytes
/// carried (local→tunnel, tunnel→local) when both directions ended normally.
pub(crate) async fn relay_tcp<L, T>(
    local: L,
    tunnel: T,
    prefix: BytesMut,
    ctx: &RelayCtx,
) -> Result<(u64, u64), RelayEnd>
where
    L: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut local = Metered::tcp(local, ctx.stats.clone(), ctx.rate.clone(), activity.clone())
        .with_tap(ctx.tap.clone());
    let mut tunnel = Prefixed::new(prefix, tunnel);
    let copy = copy::copy_bidirectional(&mut local, &mut tunnel);
    bounded(copy, &activity, ctx).await
}

/// Run a relay's directions (`both`) until done, the idle timeout, or the tunnel's hard stop.
fn bounded<'a, T, B>(
    both: B,
    activity: &'a Activity,
    ctx: &'a RelayCtx,
) -> Bounded<B, impl Future<Output = ()> + 'a, WaitForCancellationFuture<'a>>
where
    B: Future<Output = io::Result<T>>,
{
    Bounded {
        both,
        idle: activity.idle_for(ctx.idle_timeout),
        stop: ctx.hard_stop.cancelled(),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`bounded`]. A struct, not an `async fn` around `select!`, so that each
    /// future is stored once: such an `async fn` keeps its argument and the copy `select!`
    /// moves it into side by side, and every session task carries this future (nested, that
    /// doubled a session task's size at each level).
    struct Bounded<B, I, S> {
        #[pin]
        both: B,
        #[pin]
        idle: I,
        #[pin]
        stop: S,
    }
}

impl<T, B, I, S> Future for Bounded<B, I, S>
where
    B: Future<Output = io::Result<T>>,
    I: Future<Output = ()>,
    S: Future<Output = ()>,
{
    type Output = Result<T, RelayEnd>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.both.poll(cx) {
            return Poll::Ready(r.map_err(RelayEnd::Io));
        }
        if this.idle.poll(cx).is_ready() {
            return Poll::Ready(Err(RelayEnd::Idle));
        }
        if this.stop.poll(cx).is_ready() {
            return Poll::Ready(Err(RelayEnd::Stopped));
        }
        Poll::Pending
    }
}

/// True for errors that are ordinary peer behaviour (logged at debug, not as failures).
pub(crate) fn is_peer_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests;
