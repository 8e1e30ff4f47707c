//! Relay tests over loopback sockets.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
    (a.unwrap(), b.unwrap().0)
}

fn ctx() -> RelayCtx {
    RelayCtx {
        stats: Arc::new(Stats::default()),
        rate: None,
        idle_timeout: None,
        hard_stop: CancellationToken::new(),
        zero_copy: true,
        tap: None,
    }
}

/// user <-> [local_in | relay | tunnel_in] <-> far: the relay first hands the user the bytes
/// read ahead on the tunnel ("early"), carries the request, and the far end answers only after
/// the user's EOF (half-close must propagate); counters must be exact.
async fn prefix_then_half_close<F, Fut>(run: F)
where
    F: FnOnce(TcpStream, TcpStream, BytesMut, RelayCtx) -> Fut,
    Fut: std::future::Future<Output = Result<(u64, u64), RelayEnd>> + Send + 'static,
{
    let (mut user, local_in) = pair().await;
    let (tunnel_in, mut far) = pair().await;
    let c = ctx();
    let stats = c.stats.clone();
    let relay = tokio::spawn(run(local_in, tunnel_in, BytesMut::from(&b"early"[..]), c));
    let far_task = tokio::spawn(async move {
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        far.write_all(b"answer after eof").await.unwrap();
        far.shutdown().await.unwrap();
        got
    });
    user.write_all(b"request").await.unwrap();
    user.shutdown().await.unwrap();
    let mut answer = Vec::new();
    user.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"earlyanswer after eof");
    assert_eq!(far_task.await.unwrap(), b"request");
    assert_eq!(relay.await.unwrap().unwrap(), (7, 21));
    let s = stats.snapshot();
    assert_eq!((s.tcp_rx, s.tcp_tx), (7, 21));
}

#[tokio::test]
async fn carries_prefix_then_both_directions_with_half_close() {
    prefix_then_half_close(|local, tunnel, prefix, c| async move {
        relay_tcp(local, tunnel, prefix, &c).await
    })
    .await;
}

#[tokio::test]
async fn idle_timeout_closes_a_quiet_session() {
    let (_user, local_in) = pair().await;
    let (tunnel_in, _far) = pair().await;
    let mut c = ctx();
    c.idle_timeout = Some(Duration::from_millis(50));
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        relay_tcp(local_in, tunnel_in, BytesMut::new(), &c),
    )
    .await
    .expect("relay must end by itself");
    assert!(matches!(res, Err(RelayEnd::Idle)), "{res:?}");
}

#[tokio::test]
async fn hard_stop_ends_the_relay() {
    let (_user, local_in) = pair().await;
    let (tunnel_in, _far) = pair().await;
    let c = ctx();
    c.hard_stop.cancel();
    let res = relay_tcp(local_in, tunnel_in, BytesMut::new(), &c).await;
    assert!(matches!(res, Err(RelayEnd::Stopped)));
}

/// Push `len` pseudo-random bytes from the user through `run` to an echo-less sink that hashes
/// them, then answer with another `len` bytes after the user's EOF (half-close), and check
/// hashes and counters on both directions.
async fn carry_64_mib<F, Fut>(run: F)
where
    F: FnOnce(TcpStream, TcpStream, RelayCtx) -> Fut,
    Fut: std::future::Future<Output = Result<(u64, u64), RelayEnd>> + Send + 'static,
{
    use ring::digest::{Context, SHA256};
    const LEN: usize = 64 << 20;
    fn chunk(seed: u64, i: usize) -> Vec<u8> {
        let mut x = seed ^ (i as u64).wrapping_mul(0x9e3779b97f4a7c15) | 1;
        (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }
    let (mut user, local_in) = pair().await;
    let (tunnel_in, mut far) = pair().await;
    let c = ctx();
    let stats = c.stats.clone();
    let relay = tokio::spawn(run(local_in, tunnel_in, c));
    let far_task = tokio::spawn(async move {
        let mut h = Context::new(&SHA256);
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0;
        loop {
            let k = far.read(&mut buf).await.unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k;
        }
        // The user's EOF arrived; answer anyway (half-close).
        let mut sent = Context::new(&SHA256);
        for i in 0..LEN / (64 * 1024) {
            let c = chunk(2, i);
            sent.update(&c);
            far.write_all(&c).await.unwrap();
        }
        far.shutdown().await.unwrap();
        (n, h.finish(), sent.finish())
    });
    let writer = tokio::spawn(async move {
        let mut sent = Context::new(&SHA256);
        let (mut r, mut w) = user.split();
        let send = async {
            for i in 0..LEN / (64 * 1024) {
                let c = chunk(1, i);
                sent.update(&c);
                w.write_all(&c).await.unwrap();
            }
            w.shutdown().await.unwrap();
        };
        let recv = async {
            let mut h = Context::new(&SHA256);
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0;
            loop {
                let k = r.read(&mut buf).await.unwrap();
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                n += k;
            }
            (n, h.finish())
        };
        let ((), got) = tokio::join!(send, recv);
        (sent.finish(), got)
    });
    let (user_sent, (user_got_n, user_got)) =
        tokio::time::timeout(Duration::from_secs(120), writer)
            .await
            .unwrap()
            .unwrap();
    let (far_n, far_got, far_sent) = far_task.await.unwrap();
    assert_eq!(far_n, LEN);
    assert_eq!(
        far_got.as_ref(),
        user_sent.as_ref(),
        "upstream bytes differ"
    );
    assert_eq!(user_got_n, LEN);
    assert_eq!(
        user_got.as_ref(),
        far_sent.as_ref(),
        "downstream bytes differ"
    );
    let (up, down) = relay.await.unwrap().unwrap();
    assert_eq!((up, down), (LEN as u64, LEN as u64));
    let s = stats.snapshot();
    assert_eq!((s.tcp_rx, s.tcp_tx), (LEN as u64, LEN as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_path_carries_64_mib_each_way_exactly() {
    carry_64_mib(
        |local, tunnel, c| async move { relay_tcp(local, tunnel, BytesMut::new(), &c).await },
    )
    .await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_path_carries_64_mib_each_way_exactly() {
    carry_64_mib(|mut local, tunnel, c| async move {
        super::splice::relay(&mut local, &tunnel, BytesMut::new(), &c).await
    })
    .await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn splice_path_sends_the_prefix_first_and_propagates_half_close() {
    prefix_then_half_close(|mut local, tunnel, prefix, c| async move {
        super::splice::relay(&mut local, &tunnel, prefix, &c).await
    })
    .await;
}

type Chunked = (
    Result<(u64, u64), RelayEnd>,
    Option<(TunnelStream, BytesMut)>,
);

/// Relay `local_in` with the plain tunnel connection `tunnel_in` in wide chunks, spliced or
/// copied; the task and the counters.
fn spawn_wide(
    local_in: TcpStream,
    tunnel_in: TcpStream,
    prefix: BytesMut,
    zero_copy: bool,
) -> (tokio::task::JoinHandle<Chunked>, Arc<Stats>) {
    let mut c = ctx();
    c.zero_copy = zero_copy;
    let stats = c.stats.clone();
    let remote = TunnelStream::Plain(tunnel_in);
    let task =
        tokio::spawn(
            async move { relay_chunked(local_in, remote, prefix, Chunks::Wide, &c).await },
        );
    (task, stats)
}

/// user <-> [local_in | chunked relay | tunnel_in] <-> far, where `far` speaks chunks: the
/// relay hands the user the chunk begun in the prefix (its rest arrives on the socket), carries
/// 300 KB up (several chunks, more than a pipe holds at once), passes the half-close both ways
/// as zero lengths, and gives the connection back unread past the session's end: the bytes
/// that follow it are still there for the next `Open`.
async fn chunked_session_then_reuse(zero_copy: bool) {
    let (mut user, local_in) = pair().await;
    let (tunnel_in, mut far) = pair().await;
    // The `Open` was followed by the start of a chunk: its length and two of its five bytes.
    let prefix = BytesMut::from(&[0, 0, 0, 5, b'e', b'a'][..]);
    let (relay, stats) = spawn_wide(local_in, tunnel_in, prefix, zero_copy);
    let up: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let far_task = tokio::spawn(async move {
        far.write_all(b"rly").await.unwrap();
        let mut framed = framed::Framed::new(far, BytesMut::new(), Chunks::Wide);
        let mut got = Vec::new();
        framed.read_to_end(&mut got).await.unwrap();
        framed.write_all(b" answer").await.unwrap();
        framed.shutdown().await.unwrap();
        assert!(framed.reusable());
        let (mut far, _) = framed.into_parts();
        far.write_all(b"next").await.unwrap();
        (got, far)
    });
    user.write_all(&up).await.unwrap();
    user.shutdown().await.unwrap();
    let mut answer = Vec::new();
    user.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"early answer");
    let (got, _far) = far_task.await.unwrap();
    assert!(got == up, "zero_copy={zero_copy}: upstream bytes differ");
    let (res, back) = relay.await.unwrap();
    assert_eq!(res.unwrap(), (300_000, 12), "zero_copy={zero_copy}");
    let s = stats.snapshot();
    assert_eq!((s.tcp_rx, s.tcp_tx), (300_000, 12));
    let (mut conn, rest) = back.expect("the connection comes back");
    let mut next = rest.to_vec();
    while next.len() < 4 {
        let mut b = [0u8; 4];
        let n = conn.read(&mut b[..4 - next.len()]).await.unwrap();
        assert_ne!(n, 0, "the connection closed");
        next.extend_from_slice(&b[..n]);
    }
    assert_eq!(next, b"next");
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spliced_chunked_session_ends_cleanly_and_the_connection_carries_on() {
    chunked_session_then_reuse(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copied_chunked_session_ends_cleanly_and_the_connection_carries_on() {
    chunked_session_then_reuse(false).await;
}

/// A tunnel connection that closes inside a chunked session is an abort: the relay gives no
/// connection back and resets the user, who gets the bytes before the cut and then a reset,
/// never a clean end of stream.
async fn cut_chunked_session(zero_copy: bool) {
    let (mut user, local_in) = pair().await;
    let (tunnel_in, mut far) = pair().await;
    let (relay, _) = spawn_wide(local_in, tunnel_in, BytesMut::new(), zero_copy);
    // A chunk of ten announced, two sent, then the connection ends.
    far.write_all(&[0, 0, 0, 10, b'a', b'b']).await.unwrap();
    far.shutdown().await.unwrap();
    let (res, back) = relay.await.unwrap();
    let err = match res {
        Err(RelayEnd::Io(e)) => e,
        other => panic!("zero_copy={zero_copy}: {other:?}"),
    };
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    assert!(back.is_none());
    let mut got = Vec::new();
    let end = user.read_to_end(&mut got).await;
    assert_eq!(got, b"ab", "zero_copy={zero_copy}");
    assert_eq!(
        end.unwrap_err().kind(),
        io::ErrorKind::ConnectionReset,
        "zero_copy={zero_copy}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_cut_spliced_chunked_session_resets_the_user() {
    cut_chunked_session(true).await;
}

#[tokio::test]
async fn a_cut_copied_chunked_session_resets_the_user() {
    cut_chunked_session(false).await;
}

/// Message sizes for the ping-pong tests: below, at and above the size of a wake-up's first
/// copying read (2 KiB), and large ones that go on with `splice`, mixed so each direction
/// switches between the copy and the splice path several times.
const PING_SIZES: [usize; 10] = [1, 7, 2047, 2048, 2049, 5000, 300_000, 3, 65_536, 1];

/// The user sends each message of `PING_SIZES` (40 rounds) and waits for the far side's
/// echo before the next, through `relay_in` and `tunnel_in`; the far side echoes through
/// `echo`. A wake-up lost to a wrongly cleared readiness would stall a round (the test has a
/// deadline); every echo must match its message byte for byte, and the counters the total.
async fn ping_pong(
    mut user: TcpStream,
    relay: tokio::task::JoinHandle<(u64, u64)>,
    stats: Arc<Stats>,
    echo: tokio::task::JoinHandle<()>,
) {
    let mut total = 0u64;
    let rounds = async {
        for round in 0..40usize {
            let len = PING_SIZES[round % PING_SIZES.len()];
            let msg: Vec<u8> = (0..len).map(|i| (i * 13 + round) as u8).collect();
            let mut back = vec![0u8; len];
            let (mut r, mut w) = user.split();
            // Concurrently: a large message's echo comes back while it is still being sent.
            let (sent, got) = tokio::join!(w.write_all(&msg), r.read_exact(&mut back));
            sent.unwrap();
            got.unwrap();
            assert!(
                back == msg,
                "round {round}: the echo of {len} bytes differs"
            );
            total += len as u64;
        }
        user.shutdown().await.unwrap();
        let mut rest = Vec::new();
        user.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing after the last echo");
    };
    tokio::time::timeout(Duration::from_secs(60), rounds)
        .await
        .expect("every round trip completes");
    echo.await.unwrap();
    assert_eq!(relay.await.unwrap(), (total, total));
    let s = stats.snapshot();
    assert_eq!((s.tcp_rx, s.tcp_tx), (total, total));
}

/// Read whatever arrives and write it back until EOF, then shut down.
async fn echo_back<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) -> S {
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..1_000_000 {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).await.unwrap();
    }
    s.shutdown().await.unwrap();
    s
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_path_carries_small_and_large_messages_back_and_forth() {
    let (user, mut local_in) = pair().await;
    let (tunnel_in, far) = pair().await;
    let c = ctx();
    let stats = c.stats.clone();
    let relay = tokio::spawn(async move {
        super::splice::relay(&mut local_in, &tunnel_in, BytesMut::new(), &c)
            .await
            .unwrap()
    });
    let echo = tokio::spawn(async move {
        echo_back(far).await;
    });
    ping_pong(user, relay, stats, echo).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spliced_chunked_session_carries_small_and_large_messages_back_and_forth() {
    let (user, local_in) = pair().await;
    let (tunnel_in, far) = pair().await;
    let (task, stats) = spawn_wide(local_in, tunnel_in, BytesMut::new(), true);
    let relay = tokio::spawn(async move {
        let (res, back) = task.await.unwrap();
        assert!(
            back.is_some(),
            "the connection comes back after a clean end"
        );
        res.unwrap()
    });
    let echo = tokio::spawn(async move {
        let framed = echo_back(framed::Framed::new(far, BytesMut::new(), Chunks::Wide)).await;
        assert!(framed.reusable());
    });
    ping_pong(user, relay, stats, echo).await;
}
