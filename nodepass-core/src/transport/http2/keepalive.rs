//! HTTP/2 `PING` keep-alive of a carrier: a `PING` every [`INTERVAL`] of quiet, and a carrier
//! whose peer leaves a `PING` unanswered for [`DEAD_AFTER`] intervals is dead.
//!
//! A dead carrier is dropped by the task that drives it, and h2 then ends every stream on it;
//! their readers and writers get `ConnectionReset` (see `to_io` in the parent module), the
//! client opens a new carrier with its next control connection. The pings also keep NAT and
//! proxy idle timers from closing a carrier whose pooled streams are all idle.

use std::io;
use std::time::Duration;

use h2::{Ping, PingPong};

/// Time between the end of one `PING` exchange and the next `PING`.
pub(crate) const INTERVAL: Duration = Duration::from_secs(15);
/// Intervals a `PING` may stay unanswered before the carrier is declared dead.
pub(crate) const DEAD_AFTER: u32 = 3;

/// Ping the peer every `interval` until it fails to answer within `dead_after` intervals, or
/// the connection ends; returns why. Needs the connection driven alongside (the pongs arrive
/// through it). Cancel safe (dropping it stops the pings; a ping in flight is answered and
/// ignored).
pub(crate) async fn watch(mut pong: PingPong, interval: Duration, dead_after: u32) -> io::Error {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(interval * dead_after, pong.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return super::to_io(e),
            Err(_) => {
                return io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("http2 peer left a ping unanswered for {dead_after} intervals"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const I: Duration = Duration::from_secs(10);

    /// Copy `from` to `to` while `open`; a closed cable holds what arrives (the peer goes
    /// silent without closing anything).
    async fn cable(
        mut from: tokio::io::ReadHalf<DuplexStream>,
        mut to: tokio::io::WriteHalf<DuplexStream>,
        open: Arc<AtomicBool>,
    ) {
        let mut buf = vec![0u8; 16 << 10];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 || !open.load(Relaxed) {
                // Silent: swallow everything from now on.
                if n == 0 {
                    return;
                }
                continue;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// A client and a server h2 connection joined by in-memory cables that can be cut.
    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_dead_after_the_set_intervals_and_its_streams_are_reset() {
        let (c, c_far) = tokio::io::duplex(1 << 20);
        let (s, s_far) = tokio::io::duplex(1 << 20);
        let open = Arc::new(AtomicBool::new(true));
        let (cr, cw) = tokio::io::split(c_far);
        let (sr, sw) = tokio::io::split(s_far);
        tokio::spawn(cable(cr, sw, open.clone()));
        tokio::spawn(cable(sr, cw, open.clone()));

        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(s).await.unwrap();
            let (req, mut respond) = conn.accept().await.unwrap().unwrap();
            let _send = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            let _body = req.into_body();
            // Keep driving the connection (it answers pings) until the client is gone.
            while conn.accept().await.is_some() {}
            std::future::pending::<()>().await;
        });
        let (send, mut conn) = h2::client::handshake(c).await.unwrap();
        let pong = conn.ping_pong().unwrap();
        let start = tokio::time::Instant::now();
        let driver = tokio::spawn(async move {
            tokio::select! {
                r = conn => panic!("the connection ended first: {r:?}"),
                e = watch(pong, I, DEAD_AFTER) => (e, tokio::time::Instant::now()),
            }
        });
        let mut send = send.ready().await.unwrap();
        let req = http::Request::post("https://nodepass/nodepass")
            .body(())
            .unwrap();
        let (resp, _tx) = send.send_request(req, false).unwrap();
        let mut body = resp.await.unwrap().into_body();

        // Ten intervals of quiet with an answering peer: still alive.
        tokio::time::sleep(I * 10).await;
        assert!(!driver.is_finished(), "a live peer is not declared dead");

        open.store(false, Relaxed);
        let cut = tokio::time::Instant::now();
        let (err, at) = driver.await.unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        let silent = at - cut;
        assert!(
            silent >= I * DEAD_AFTER && silent <= I * (DEAD_AFTER + 1),
            "declared dead {silent:?} after the peer went silent"
        );
        assert!(at - start > I * 10);
        // The driver dropped the connection: the stream reads a reset, not an end.
        let got = tokio::time::timeout(I, body.data()).await.unwrap();
        let e = super::super::to_io(got.unwrap().unwrap_err());
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        server.abort();
    }
}
