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
    }
}

#[tokio::test]
async fn carries_prefix_then_both_directions_with_half_close() {
    // user <-> [local_in | relay | tunnel_in] <-> far
    let (mut user, local_in) = pair().await;
    let (tunnel_in, mut far) = pair().await;
    let c = ctx();
    let stats = c.stats.clone();
    let relay = tokio::spawn(async move {
        relay_tcp(local_in, tunnel_in, BytesMut::from(&b"early"[..]), &c).await
    });
    // The far end answers only after the user's EOF: half-close must propagate.
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
    // The user first gets the prefix (bytes read ahead on the tunnel), then the answer.
    user.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"earlyanswer after eof");
    assert_eq!(far_task.await.unwrap(), b"request");
    let (up, down) = relay.await.unwrap().unwrap();
    assert_eq!((up, down), (7, 21));
    let s = stats.snapshot();
    assert_eq!((s.tcp_rx, s.tcp_tx), (7, 21));
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
