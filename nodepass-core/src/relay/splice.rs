//! Zero-copy TCP relay on Linux: `splice(2)` through a pipe, socket to socket.
//!
//! The syscalls (`pipe2`, `splice`, `fcntl(F_SETPIPE_SZ)`) come from `rustix`, whose safe
//! wrappers take borrowed descriptors and return owned ones, so this module needs no `unsafe`:
//! every descriptor is an `OwnedFd`, closed exactly once.
//!
//! Used for plain TCP (no TLS) without a rate limit; everything else takes the buffered copy in
//! [`super::relay_tcp`]. Byte counters come from the return values of `splice`, so they are exact.
//! A direction holds a pipe only while data is moving: when its socket runs dry the (empty) pipe
//! goes back to a small per-thread cache, so idle connections cost no pipe descriptors and busy
//! ones rarely create a pipe. EOF on one side becomes a write shutdown on the other (half-close).

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::BytesMut;
use rustix::pipe::{self, PipeFlags, SpliceFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::{Activity, RelayCtx, RelayEnd};

/// Pipe capacity requested per direction (the kernel may grant less; that is fine).
pub(crate) const PIPE_SIZE: usize = 1 << 20;
/// Largest single `splice` call.
const SPLICE_CHUNK: usize = 1 << 20;
/// Empty pipes kept per thread for reuse.
const PIPE_CACHE: usize = 64;

thread_local! {
    /// Empty pipes ready for reuse; only ever touched by the owning thread, never across
    /// `.await`.
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// An empty pipe from this thread's cache, or a new one.
fn take_pipe() -> io::Result<Pipe> {
    match PIPES.with(|c| c.borrow_mut().pop()) {
        Some(p) => Ok(p),
        None => Pipe::new(),
    }
}

/// Return an empty pipe to this thread's cache (closed if the cache is full).
fn give_pipe(p: Pipe) {
    PIPES.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() < PIPE_CACHE {
            c.push(p);
        }
    });
}

/// A non-blocking pipe.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // Best effort: a larger pipe means fewer syscalls; the default (64 KiB) also works.
        let _ = pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
        Ok(Pipe { read, write })
    }
}

/// One non-blocking `splice` between two descriptors (one of them a pipe); `Ok(0)` is EOF on
/// `from`. No offsets: sockets and pipes have no file position.
fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    Ok(pipe::splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
    )?)
}

/// Move everything from `from` to `to` until EOF, then shut down `to`'s write half. Counts the
/// bytes written to `to` into `counter`.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    counter: &AtomicU64,
    tap: impl Fn(u64),
    activity: &Activity,
) -> io::Result<u64> {
    let mut total = 0u64;
    'idle: loop {
        // Wait for data without holding a pipe.
        from.readable().await?;
        let p = take_pipe()?;
        loop {
            let filled =
                match from.try_io(Interest::READABLE, || splice(from, &p.write, SPLICE_CHUNK)) {
                    Ok(0) => {
                        give_pipe(p);
                        break 'idle;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Dry for now: the pipe is empty, hand it back until data returns.
                        give_pipe(p);
                        continue 'idle;
                    }
                    Err(e) => return Err(e),
                };
            activity.touch();
            let mut left = filled;
            while left > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || splice(&p.read, to, left)) {
                    Ok(n) => {
                        left -= n;
                        total += n as u64;
                        counter.fetch_add(n as u64, Relaxed);
                        tap(n as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The pipe may still hold bytes: it is dropped (closed), not cached.
                    Err(e) => return Err(e),
                }
            }
            activity.touch();
        }
    }
    // Half-close: the far side sees EOF and may still answer.
    match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
        Err(e) => return Err(e),
    }
    Ok(total)
}

/// Relay `local` (user or target socket) and `remote` (plain tunnel connection or target) with
/// `splice`, after writing `prefix` to `local`. Returns bytes carried (local→remote,
/// remote→local). Counts `local` reads as `tcp_rx` and `local` writes as `tcp_tx`.
pub(crate) async fn relay(
    local: &mut TcpStream,
    remote: &TcpStream,
    prefix: BytesMut,
    ctx: &RelayCtx,
) -> Result<(u64, u64), RelayEnd> {
    let activity = Activity::new();
    let stats = &ctx.stats;
    if !prefix.is_empty() {
        local.write_all(&prefix).await?;
        stats.tcp_tx.fetch_add(prefix.len() as u64, Relaxed);
        if let Some(t) = &ctx.tap {
            t.written(prefix.len() as u64);
        }
    }
    let tap = ctx.tap.as_deref();
    let local = &*local;
    let up = one_way(
        local,
        remote,
        &stats.tcp_rx,
        |n| {
            if let Some(t) = tap {
                t.read(n)
            }
        },
        &activity,
    );
    let down = one_way(
        remote,
        local,
        &stats.tcp_tx,
        |n| {
            if let Some(t) = tap {
                t.written(n)
            }
        },
        &activity,
    );
    tokio::select! {
        r = async { tokio::try_join!(up, down) } => {
            let (u, d) = r?;
            Ok((u, d + prefix.len() as u64))
        }
        _ = activity.idle_for(ctx.idle_timeout) => Err(RelayEnd::Idle),
        _ = ctx.hard_stop.cancelled() => Err(RelayEnd::Stopped),
    }
}
