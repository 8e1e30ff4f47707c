//! The `block` parameter: refuse user connections that open with SOCKS, HTTP or TLS.
//!
//! [`classify`] is a pure function over the first bytes a user sent; [`check`] applies it to a
//! freshly accepted `TcpStream` by peeking (never consuming), so an allowed connection is relayed
//! byte for byte as if nothing had looked at it.
//!
//! Protocols in which the server speaks first (SSH, SMTP, FTP, many databases) send nothing
//! until the target greets them. [`check`] therefore waits at most a short time (by default
//! `TunnelOptions::sniff_wait`, 100 ms) for the first bytes and lets the connection through when none (or too
//! few to decide) arrive: such connections are delayed by at most that wait, never stalled.
//!
//! What counts as each protocol:
//! - SOCKS: `0x05`, a method count of 1..=255 and that many method bytes (a SOCKS5 greeting), or
//!   `0x04` followed by command 1 (CONNECT) or 2 (BIND) (a SOCKS4 request).
//! - HTTP: one of the upper-case methods `GET POST PUT HEAD DELETE OPTIONS PATCH CONNECT TRACE
//!   PRI` followed by a space (`PRI ` also catches the HTTP/2 connection preface).
//! - TLS: a handshake record header `0x16 0x03 0x00..=0x04`.
//!
//! ```ignore
//! // doc-hidden module (cargo feature `fuzzing`): not compiled as a doctest
//! use nodepass_core::config::BlockSet;
//! use nodepass_core::sniff;
//!
//! # async fn demo(listener: tokio::net::TcpListener) -> std::io::Result<()> {
//! let block = BlockSet { socks: true, http: true, tls: false };
//! let (user, _) = listener.accept().await?;
//! if let Some(protocol) = sniff::check(&user, &block, Duration::from_millis(100)).await {
//!     tracing::debug!(%protocol, "blocked");
//!     return Ok(()); // dropping `user` closes it
//! }
//! // relay `user` as usual: its first bytes are still unread
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::BlockSet;

/// The most peeks [`check`] makes on one connection.
const MAX_PEEKS: u32 = 32;
/// The shortest pause between two peeks, so a connection whose bytes trickle in cannot make
/// [`check`] spin.
const MIN_PEEK_INTERVAL: Duration = Duration::from_millis(1);
/// Bytes peeked at once: more than the longest prefix [`classify`] needs (a SOCKS5 greeting with
/// 255 methods is 257 bytes), so a full buffer always decides.
const PEEK_LEN: usize = 512;

/// HTTP request methods that [`classify`] recognises, each followed by a space.
const HTTP_METHODS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI ",
];

/// A protocol that `block` can refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// SOCKS 4 or 5 (`block` digit 1).
    Socks,
    /// HTTP/1.x or the HTTP/2 preface (`block` digit 2).
    Http,
    /// A TLS client hello (`block` digit 3).
    Tls,
}

impl Protocol {
    /// A lower-case name for logs: `socks`, `http` or `tls`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Socks => "socks",
            Protocol::Http => "http",
            Protocol::Tls => "tls",
        }
    }

    fn is_blocked_by(self, block: &BlockSet) -> bool {
        match self {
            Protocol::Socks => block.socks,
            Protocol::Http => block.http,
            Protocol::Tls => block.tls,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the first bytes of a connection say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The bytes are the start of this blocked protocol: refuse the connection.
    Block(Protocol),
    /// The bytes can no longer be the start of any blocked protocol.
    Allow,
    /// Too few bytes to decide: they are a prefix of a blocked protocol's opening.
    NeedMore,
}

/// How one protocol's pattern relates to the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Yes,
    Prefix,
    No,
}

/// Classify the first bytes a user sent, counting only the protocols enabled in `block`.
///
/// Returns [`Verdict::Allow`] at once when `block` is empty.
pub fn classify(first: &[u8], block: &BlockSet) -> Verdict {
    let mut undecided = false;
    for protocol in [Protocol::Socks, Protocol::Http, Protocol::Tls] {
        if !protocol.is_blocked_by(block) {
            continue;
        }
        let matched = match protocol {
            Protocol::Socks => match_socks(first),
            Protocol::Http => match_http(first),
            Protocol::Tls => match_tls(first),
        };
        match matched {
            Match::Yes => return Verdict::Block(protocol),
            Match::Prefix => undecided = true,
            Match::No => {}
        }
    }
    if undecided {
        Verdict::NeedMore
    } else {
        Verdict::Allow
    }
}

fn match_socks(b: &[u8]) -> Match {
    match b {
        [] | [0x04 | 0x05] => Match::Prefix,
        // SOCKS4: version, command CONNECT (1) or BIND (2).
        [0x04, 1 | 2, ..] => Match::Yes,
        // SOCKS5 greeting: version, method count, then that many methods.
        [0x05, 0, ..] => Match::No,
        [0x05, n, methods @ ..] if methods.len() >= usize::from(*n) => Match::Yes,
        [0x05, ..] => Match::Prefix,
        _ => Match::No,
    }
}

fn match_http(b: &[u8]) -> Match {
    let mut result = Match::No;
    for method in HTTP_METHODS {
        if b.starts_with(method) {
            return Match::Yes;
        }
        if method.starts_with(b) {
            result = Match::Prefix;
        }
    }
    result
}

fn match_tls(b: &[u8]) -> Match {
    match b {
        [0x16, 0x03, 0x00..=0x04, ..] => Match::Yes,
        [] | [0x16] | [0x16, 0x03] => Match::Prefix,
        _ => Match::No,
    }
}

/// Decide whether a freshly accepted user connection opens with a protocol blocked by `block`.
///
/// Returns `None` at once when `block` is empty. Otherwise peeks at the stream (consuming
/// nothing) until [`classify`] decides, returning `Some(protocol)` for a blocked opening and
/// `None` when the bytes are allowed. Also returns `None` when `wait` has passed since the call
/// without a decision (a protocol where the server speaks first), at end of stream, and on a read
/// error (left for the relay to meet). It makes at most a fixed number of peeks and pauses
/// between them, so it never spins.
///
/// Cancel safety: safe; it never consumes bytes from the stream.
pub async fn check(stream: &TcpStream, block: &BlockSet, wait: Duration) -> Option<Protocol> {
    if block.is_empty() {
        return None;
    }
    let deadline = Instant::now() + wait;
    // Spread the peeks over the wait so that `MAX_PEEKS` always reaches the deadline: the first
    // peek waits for data, after that there is one peek per interval, so at most
    // `wait / interval + 2` (18, or fewer for a tiny wait) peeks happen before the deadline.
    let interval = (wait / (MAX_PEEKS / 2)).max(MIN_PEEK_INTERVAL);
    let mut buf = [0u8; PEEK_LEN];
    for _ in 0..MAX_PEEKS {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_elapsed) => return None,
            Ok(Err(_)) | Ok(Ok(0)) => return None,
            Ok(Ok(n)) => n,
        };
        match classify(&buf[..n], block) {
            Verdict::Block(protocol) => return Some(protocol),
            Verdict::Allow => return None,
            Verdict::NeedMore => {}
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Bytes already waiting make `peek` return at once, so pause before looking again. The
        // next peek happens even when this pause ends at the deadline: `timeout_at` polls the
        // peek before it looks at the clock, so bytes that arrived meanwhile still count.
        tokio::time::sleep_until((Instant::now() + interval).min(deadline)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const NONE: BlockSet = BlockSet {
        socks: false,
        http: false,
        tls: false,
    };
    const SOCKS: BlockSet = BlockSet {
        socks: true,
        ..NONE
    };
    const HTTP: BlockSet = BlockSet { http: true, ..NONE };
    const TLS: BlockSet = BlockSet { tls: true, ..NONE };
    const ALL: BlockSet = BlockSet {
        socks: true,
        http: true,
        tls: true,
    };

    #[test]
    fn classify_table() {
        use Verdict::*;
        let cases: &[(&[u8], BlockSet, Verdict)] = &[
            // SOCKS5 greetings.
            (&[0x05, 0x01, 0x00], SOCKS, Block(Protocol::Socks)),
            (&[0x05, 0x02, 0x00, 0x02], ALL, Block(Protocol::Socks)),
            (&[0x05, 0x02, 0x00], SOCKS, NeedMore),
            (&[0x05], SOCKS, NeedMore),
            (&[0x05, 0x00], SOCKS, Allow),
            (&[0x05, 0x01, 0x00], HTTP, Allow),
            // SOCKS4 requests.
            (
                &[0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1, 0],
                SOCKS,
                Block(Protocol::Socks),
            ),
            (&[0x04, 0x02], SOCKS, Block(Protocol::Socks)),
            (&[0x04], SOCKS, NeedMore),
            (&[0x04, 0x03], SOCKS, Allow),
            (&[0x04, 0x01], TLS, Allow),
            // HTTP.
            (b"GET / HTTP/1.1\r\n", HTTP, Block(Protocol::Http)),
            (b"POST /x HTTP/1.0\r\n", ALL, Block(Protocol::Http)),
            (
                b"CONNECT example.com:443 HTTP/1.1\r\n",
                HTTP,
                Block(Protocol::Http),
            ),
            (b"OPTIONS * HTTP/1.1\r\n", HTTP, Block(Protocol::Http)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                HTTP,
                Block(Protocol::Http),
            ),
            (b"DELETE ", HTTP, Block(Protocol::Http)),
            (b"GET / HTTP/1.1\r\n", SOCKS, Allow),
            (b"GE", HTTP, NeedMore),
            (b"GET", HTTP, NeedMore),
            (b"P", HTTP, NeedMore),
            (b"CONNEC", HTTP, NeedMore),
            (b"GETX", HTTP, Allow),
            (b"get / HTTP/1.1\r\n", HTTP, Allow),
            (b"BREW /pot HTTP/1.1\r\n", HTTP, Allow),
            // TLS.
            (
                &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01],
                TLS,
                Block(Protocol::Tls),
            ),
            (&[0x16, 0x03, 0x03], ALL, Block(Protocol::Tls)),
            (&[0x16, 0x03, 0x00], TLS, Block(Protocol::Tls)),
            (&[0x16, 0x03, 0x04], TLS, Block(Protocol::Tls)),
            (&[0x16, 0x03, 0x05], TLS, Allow),
            (&[0x16, 0x02, 0x01], TLS, Allow),
            (&[0x17, 0x03, 0x03], TLS, Allow),
            (&[0x16], TLS, NeedMore),
            (&[0x16, 0x03], TLS, NeedMore),
            (&[0x16, 0x03, 0x01], HTTP, Allow),
            // Everything else.
            (b"SSH-2.0-OpenSSH_9.6\r\n", ALL, Allow),
            (&[0x9f, 0x3c, 0x00, 0xff, 0x12], ALL, Allow),
            (b"\x00\x00\x00\x08hello!!!", ALL, Allow),
            (b"", ALL, NeedMore),
            (b"", NONE, Allow),
            (b"GET / HTTP/1.1\r\n", NONE, Allow),
            (&[0x16, 0x03, 0x01], NONE, Allow),
        ];
        for (i, (first, block, expected)) in cases.iter().enumerate() {
            assert_eq!(
                classify(first, block),
                *expected,
                "case {i}: {first:?} with {block:?}"
            );
        }
    }

    #[test]
    fn every_prefix_of_a_blocked_opening_needs_more() {
        let openings: [(&[u8], Protocol); 3] = [
            (b"OPTIONS * HTTP/1.1\r\n", Protocol::Http),
            (&[0x05, 0x03, 0x00, 0x01, 0x02], Protocol::Socks),
            (&[0x16, 0x03, 0x01], Protocol::Tls),
        ];
        for (opening, protocol) in openings {
            let decided = (0..=opening.len())
                .find(|&i| classify(&opening[..i], &ALL) != Verdict::NeedMore)
                .expect("decided by the full opening");
            assert_eq!(
                classify(&opening[..decided], &ALL),
                Verdict::Block(protocol)
            );
            assert_eq!(classify(opening, &ALL), Verdict::Block(protocol));
        }
    }

    #[test]
    fn largest_socks5_greeting_fits_the_peek_buffer() {
        let mut greeting = vec![0x05, 0xff];
        greeting.extend(0..=254u8);
        assert!(greeting.len() <= PEEK_LEN);
        assert_eq!(classify(&greeting, &SOCKS), Verdict::Block(Protocol::Socks));
        assert_eq!(
            classify(&greeting[..greeting.len() - 1], &SOCKS),
            Verdict::NeedMore
        );
    }

    /// A connected pair on loopback: `(accepted, client)`.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        (accepted, client)
    }

    /// Read exactly `n` bytes, with a deadline so a broken test cannot hang.
    async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .expect("read timed out")
            .unwrap();
        buf
    }

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n";

    #[tokio::test]
    async fn http_request_is_blocked_and_not_consumed() {
        let (mut user, mut client) = pair().await;
        client.write_all(REQUEST).await.unwrap();
        let verdict = check(&user, &HTTP, Duration::from_secs(5)).await;
        assert_eq!(verdict, Some(Protocol::Http));
        assert_eq!(read_n(&mut user, REQUEST.len()).await, REQUEST);
    }

    #[tokio::test]
    async fn opening_split_across_writes_is_assembled() {
        let (user, mut client) = pair().await;
        let writer = tokio::spawn(async move {
            client.write_all(&[0x16]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(&[0x03, 0x01, 0x00, 0x05]).await.unwrap();
            client
        });
        let verdict = check(&user, &TLS, Duration::from_secs(5)).await;
        assert_eq!(verdict, Some(Protocol::Tls));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn empty_block_set_returns_at_once() {
        let (user, mut client) = pair().await;
        client.write_all(REQUEST).await.unwrap();
        let start = Instant::now();
        assert_eq!(check(&user, &NONE, Duration::from_secs(5)).await, None);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn ssh_banner_is_allowed_and_not_consumed() {
        let banner = b"SSH-2.0-OpenSSH_9.6\r\n";
        let (mut user, mut client) = pair().await;
        client.write_all(banner).await.unwrap();
        assert_eq!(check(&user, &ALL, Duration::from_secs(5)).await, None);
        assert_eq!(read_n(&mut user, banner.len()).await, banner);
    }

    #[tokio::test]
    async fn silent_client_gets_through_after_the_wait() {
        let wait = Duration::from_millis(50);
        let (mut user, mut client) = pair().await;
        let start = Instant::now();
        assert_eq!(check(&user, &ALL, wait).await, None);
        let elapsed = start.elapsed();
        assert!(elapsed >= wait, "returned before the wait: {elapsed:?}");
        assert!(
            elapsed < Duration::from_secs(2),
            "took too long: {elapsed:?}"
        );
        // The connection is untouched: what the user sends now arrives whole.
        client.write_all(REQUEST).await.unwrap();
        assert_eq!(read_n(&mut user, REQUEST.len()).await, REQUEST);
    }

    #[tokio::test]
    async fn undecided_prefix_gets_through_after_the_wait_and_is_kept() {
        let wait = Duration::from_millis(50);
        let (mut user, mut client) = pair().await;
        client.write_all(b"GE").await.unwrap();
        let start = Instant::now();
        assert_eq!(check(&user, &HTTP, wait).await, None);
        assert!(start.elapsed() >= wait);
        assert_eq!(read_n(&mut user, 2).await, b"GE");
    }

    #[tokio::test]
    async fn end_of_stream_is_allowed() {
        let (user, client) = pair().await;
        drop(client);
        let start = Instant::now();
        assert_eq!(check(&user, &ALL, Duration::from_secs(5)).await, None);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
