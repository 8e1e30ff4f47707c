//! Shared helpers for the examples: a local TCP echo service and a round trip through it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bound on one round trip in the examples.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);

/// Start a TCP echo service on `127.0.0.1:0`; it stops accepting when `shutdown` is cancelled
/// and its connections are tracked by `tracker`. Returns its address.
pub async fn echo_service(
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let conns = tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.cancelled() => return,
            };
            let Ok((mut stream, _)) = accepted else {
                continue;
            };
            let stop = shutdown.clone();
            conns.spawn(async move {
                let (mut r, mut w) = stream.split();
                tokio::select! {
                    _ = tokio::io::copy(&mut r, &mut w) => {}
                    _ = stop.cancelled() => {}
                }
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// Send `payload` to `addr`, half-close, and read the answer to the end (bounded by
/// [`ROUND_TRIP_TIMEOUT`]).
pub async fn round_trip(addr: SocketAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let (mut r, mut w) = stream.split();
        let mut answer = Vec::with_capacity(payload.len());
        // Write and read at once, so a large payload cannot fill both directions' buffers.
        let send = async {
            w.write_all(payload).await?;
            w.shutdown().await
        };
        let (sent, read) = tokio::join!(send, r.read_to_end(&mut answer));
        sent?;
        read?;
        Ok(answer)
    };
    tokio::time::timeout(ROUND_TRIP_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "round trip timed out"))?
}

/// A deterministic test pattern of `len` bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Log to stderr at `info`, or at the level `RUST_LOG` asks for.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}
