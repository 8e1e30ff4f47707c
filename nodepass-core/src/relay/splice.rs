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
//!
//! [`relay_chunked`] carries a session on a reusable plain pool connection in wide chunks
//! ([`super::framed`]'s layout): the same splices, with each chunk's 4-byte length written
//! (`MSG_MORE`) and read on its own, and a zero length instead of the write shutdown.
//!
//! Small messages (interactive traffic: requests, keystrokes, pings) are not spliced: after a
//! wake-up that moved at most [`HEAD_READ`] bytes, the next one starts with a `recv` of that
//! size and a single `send` (with the chunk's length in front), two syscalls instead of a
//! splice in, a splice out (and a length) and a splice that finds the socket dry. A `recv`
//! shorter than asked shows the socket had nothing more, so it clears the socket's readiness
//! as tokio's own `poll_read` does (see [`read_some`]). A `recv` that fills the buffer sends
//! it and goes on with `splice` for the rest.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::{Buf, BufMut, BytesMut};
use futures_util::future::try_join;
use rustix::pipe::{self, PipeFlags, SpliceFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::{Activity, RelayCtx, RelayEnd, bounded, framed};
use crate::protocol::Chunks;

/// Pipe capacity requested per direction (the kernel may grant less; that is fine).
pub(crate) const PIPE_SIZE: usize = 1 << 20;
/// Size of the `recv` that starts a wake-up after a small one, in both directions: at most
/// this much is copied through user space before `splice` takes over (see the module doc).
const HEAD_READ: usize = 2048;
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

/// Move `n` bytes that are in pipe `p` to `to`, counting them as they go.
async fn drain(
    p: &Pipe,
    to: &TcpStream,
    n: usize,
    counter: &AtomicU64,
    tap: &impl Fn(u64),
) -> io::Result<u64> {
    let mut left = n;
    while left > 0 {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || splice(&p.read, to, left)) {
            Ok(n) => {
                left -= n;
                counter.fetch_add(n as u64, Relaxed);
                tap(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // The pipe may still hold bytes: the caller drops it (closed), not cached.
            Err(e) => return Err(e),
        }
    }
    Ok(n as u64)
}

/// Write all of `buf` to `to`; `more` holds it back for the data that follows (`MSG_MORE`),
/// so a chunk's length leaves in the same segment as its bytes.
async fn send_all(to: &TcpStream, mut buf: &[u8], more: bool) -> io::Result<()> {
    let flags = if more { libc::MSG_MORE } else { 0 };
    while !buf.is_empty() {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || {
            socket2::SockRef::from(to).send_with_flags(buf, flags)
        }) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `recv` into `buf` (at most its `remaining_mut`). A read shorter than that shows the
/// socket's receive queue was empty at that moment (a TCP `recv` returns less than asked only
/// then), so the socket's readiness is cleared with it, as tokio's `poll_read` does: the next
/// wait goes to the reactor instead of a `recv` that would find nothing. Data arriving during
/// the call raises a newer readiness event, which the clearing leaves alone. `WouldBlock`
/// when there was nothing to read; `Ok(0)` is EOF.
fn read_some<B: BufMut>(from: &TcpStream, buf: &mut B) -> io::Result<usize> {
    let want = buf.remaining_mut();
    let mut got = 0;
    let res = from.try_io(Interest::READABLE, || {
        got = from.try_read_buf(buf)?;
        if 0 < got && got < want {
            // Short: drained. Cleared by `try_io` with the readiness seen before the read.
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match res {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// What a wake-up's first, copying read found (see [`head`]).
enum Head {
    /// EOF on the reading side.
    End,
    /// Nothing to read after all (readiness cleared).
    Dry,
    /// This many bytes read and sent on; `full` when the read filled its buffer (more may be
    /// waiting: go on with `splice`).
    Moved { n: usize, full: bool },
}

/// Start a wake-up with one `recv` of up to [`HEAD_READ`] bytes and pass them on in one write,
/// behind a wide chunk length with `chunks`. The buffer lives on the stack only until the
/// write: what the socket does not take at once is copied out and written after an await.
async fn head(from: &TcpStream, to: &TcpStream, chunks: bool) -> io::Result<Head> {
    let (n, rest) = {
        let mut buf = [0u8; 4 + HEAD_READ];
        let n = match read_some(from, &mut &mut buf[4..]) {
            Ok(0) => return Ok(Head::End),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Head::Dry),
            Err(e) => return Err(e),
        };
        let out = if chunks {
            buf[..4].copy_from_slice(&framed::length(Chunks::Wide, n));
            &buf[..4 + n]
        } else {
            &buf[4..4 + n]
        };
        let sent = match to.try_write(out) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        (n, BytesMut::from(&out[sent..]))
    };
    send_all(to, &rest, false).await?;
    Ok(Head::Moved {
        n,
        full: n == HEAD_READ,
    })
}

/// Half-close: the far side sees EOF and may still answer.
fn shutdown_write(to: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

/// Move everything from `from` to `to` until EOF, then end `to`'s direction: a write
/// shutdown, or with `chunks` a wide chunk length before each piece and a zero length at the
/// end ([`super::framed`]'s layout, so the connection can carry another session). Counts the
/// bytes written to `to` (lengths excluded) into `counter`.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    chunks: bool,
    counter: &AtomicU64,
    tap: impl Fn(u64),
    activity: &Activity,
) -> io::Result<u64> {
    let mut total = 0u64;
    // Whether the last wake-up moved a small message: then this one starts with a copy.
    let mut small = true;
    'idle: loop {
        // Wait for data without holding a pipe.
        from.readable().await?;
        let mut moved = 0;
        if small {
            match head(from, to, chunks).await? {
                Head::End => break 'idle,
                Head::Dry => continue 'idle,
                Head::Moved { n, full } => {
                    activity.touch();
                    total += n as u64;
                    counter.fetch_add(n as u64, Relaxed);
                    tap(n as u64);
                    if !full {
                        continue 'idle;
                    }
                    moved = n;
                }
            }
        }
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
                        small = moved <= HEAD_READ;
                        continue 'idle;
                    }
                    Err(e) => return Err(e),
                };
            moved += filled;
            activity.touch();
            if chunks {
                send_all(to, &framed::length(Chunks::Wide, filled), true).await?;
            }
            total += drain(&p, to, filled, counter, &tap).await?;
            activity.touch();
        }
    }
    if chunks {
        send_all(to, &[0; 4], false).await?;
    } else {
        shutdown_write(to)?;
    }
    Ok(total)
}

/// The reading direction of a wide-chunked session: move each chunk's bytes from `from` (the
/// tunnel connection) to `to`, reading exactly up to the zero length that ends the direction
/// (nothing past it), then shut down `to`'s write half. `prefix` holds bytes already read from
/// `from`; what is left of it past the end is returned with the byte count.
async fn from_chunks(
    from: &TcpStream,
    to: &TcpStream,
    mut prefix: BytesMut,
    counter: &AtomicU64,
    tap: impl Fn(u64),
    activity: &Activity,
) -> io::Result<(u64, BytesMut)> {
    let mut total = 0u64;
    let mut small = true;
    loop {
        let mut hdr = [0u8; 4];
        let mut got = 0;
        while got < hdr.len() {
            if !prefix.is_empty() {
                hdr[got] = prefix[0];
                prefix.advance(1);
                got += 1;
                continue;
            }
            // After a small chunk (interactive traffic), the length and with it the next small
            // chunk whole: one `recv` and one `send` instead of a `recv` and two `splice`s.
            // After a large one (bulk), only the length, so bulk stays spliced.
            from.readable().await?;
            let want = if small { HEAD_READ } else { hdr.len() - got };
            prefix.reserve(want);
            match read_some(from, &mut (&mut prefix).limit(want)) {
                Ok(0) => return Err(framed::cut()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let mut left = framed::parse_length(Chunks::Wide, hdr);
        if left == 0 {
            break;
        }
        small = left <= HEAD_READ;
        activity.touch();
        if !prefix.is_empty() {
            let n = left.min(prefix.len());
            send_all(to, &prefix[..n], false).await?;
            prefix.advance(n);
            left -= n;
            total += n as u64;
            counter.fetch_add(n as u64, Relaxed);
            tap(n as u64);
        }
        while left > 0 {
            from.readable().await?;
            let p = take_pipe()?;
            while left > 0 {
                let filled = match from.try_io(Interest::READABLE, || splice(from, &p.write, left))
                {
                    Ok(0) => return Err(framed::cut()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                left -= filled;
                total += drain(&p, to, filled, counter, &tap).await?;
            }
            give_pipe(p);
            activity.touch();
        }
    }
    shutdown_write(to)?;
    Ok((total, prefix))
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
    let (read, written) = taps(ctx);
    let local = &*local;
    let up = one_way(local, remote, false, &stats.tcp_rx, read, &activity);
    let down = one_way(remote, local, false, &stats.tcp_tx, written, &activity);
    let (u, d) = bounded(try_join(up, down), &activity, ctx).await?;
    Ok((u, d + prefix.len() as u64))
}

/// [`relay`] for a session in wide chunks on a plain pool connection ([`super::framed`]'s
/// layout, spliced: each chunk's length is a small write of its own, and its bytes stay in the
/// kernel, except small chunks read with their length after a small one). `prefix` holds the
/// bytes already read off `remote` after the `Open`. Returns the bytes carried and what was
/// read past the session's end (nothing from a well-behaved peer) when both directions ended
/// cleanly: `remote` can then carry the next `Open`.
pub(crate) async fn relay_chunked(
    local: &TcpStream,
    remote: &TcpStream,
    prefix: BytesMut,
    ctx: &RelayCtx,
) -> Result<((u64, u64), BytesMut), RelayEnd> {
    let activity = Activity::new();
    let stats = &ctx.stats;
    let (read, written) = taps(ctx);
    let up = one_way(local, remote, true, &stats.tcp_rx, read, &activity);
    let down = from_chunks(remote, local, prefix, &stats.tcp_tx, written, &activity);
    let (u, (d, rest)) = bounded(try_join(up, down), &activity, ctx).await?;
    Ok(((u, d), rest))
}

/// The extra accounting of the local socket's reads and writes ([`RelayCtx::tap`]).
fn taps(ctx: &RelayCtx) -> (impl Fn(u64) + '_, impl Fn(u64) + '_) {
    let tap = ctx.tap.as_deref();
    (
        move |n| {
            if let Some(t) = tap {
                t.read(n)
            }
        },
        move |n| {
            if let Some(t) = tap {
                t.written(n)
            }
        },
    )
}
