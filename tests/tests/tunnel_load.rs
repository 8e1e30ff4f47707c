//! Many parallel sessions with large payloads: every byte arrives, in order, on every
//! connection (SHA-256 of what was sent equals SHA-256 of what came back).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nodepass_tests::payload::exchange;
use nodepass_tests::servers;
use nodepass_tests::tunnel::{eventually, shutdown, start, wait_ready};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const KEY: &str = "load-test-key";
const CONNECTIONS: usize = 50;
const BYTES_PER_CONNECTION: usize = 4 << 20;
/// The bound on the whole transfer (it takes a few seconds on 2 cores in a debug build).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// The bound on warming the pool before the burst (TLS handshakes of a debug build on a busy
/// machine).
const WARM_TIMEOUT: Duration = Duration::from_secs(30);

/// Wait until `h` holds `CONNECTIONS` idle pool connections, so the burst measures relaying,
/// not how fast a starved debug build refills its pool (a user waits at most 5 s for one).
async fn wait_pool_warm(h: &nodepass_core::TunnelHandle) {
    eventually(WARM_TIMEOUT, "the pool holds a connection per user", || {
        let idle = h.stats().pool_idle;
        async move { (idle >= CONNECTIONS as u64).then_some(()) }
    })
    .await;
}

/// Run `CONNECTIONS` parallel echo exchanges through `users`; returns the elapsed time.
async fn parallel_exchanges(users: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..CONNECTIONS {
        set.spawn(async move {
            let s = TcpStream::connect(users).await?;
            exchange(s, 1000 + i as u64, BYTES_PER_CONNECTION).await
        });
    }
    let all = async {
        let mut done = 0;
        while let Some(r) = set.join_next().await {
            let x = r
                .expect("exchange task")
                .expect("exchange through the tunnel");
            assert_eq!(x.received_len, BYTES_PER_CONNECTION as u64);
            assert_eq!(
                x.received_sha256, x.sent_sha256,
                "a connection's bytes differ"
            );
            done += 1;
        }
        done
    };
    let done = tokio::time::timeout(TRANSFER_TIMEOUT, all)
        .await
        .expect("50 x 4 MiB within the transfer timeout");
    assert_eq!(done, CONNECTIONS);
    start.elapsed()
}

fn report(name: &str, elapsed: Duration) {
    let mib = (CONNECTIONS * BYTES_PER_CONNECTION) as f64 / (1 << 20) as f64;
    eprintln!(
        "{name}: {CONNECTIONS} x {} MiB echoed in {:.2} s ({:.0} MiB/s each way)",
        BYTES_PER_CONNECTION >> 20,
        elapsed.as_secs_f64(),
        mib / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_connections_of_4_mib_reverse_flow() {
    let echo = servers::echo().await;
    let server = start(&format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1")).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://{KEY}@{tunnel}/{}?mode=2&min=64",
        echo.addr()
    ))
    .await;
    wait_ready(&client).await;
    wait_pool_warm(&server).await;
    let elapsed = parallel_exchanges(server.local_addrs().users.unwrap()).await;
    report("reverse flow, tls=0", elapsed);

    let total = (CONNECTIONS * BYTES_PER_CONNECTION) as u64;
    eventually(
        Duration::from_secs(5),
        "sessions closed and counted",
        || {
            let (s, c) = (server.stats(), client.stats());
            async move {
                (s.tcp_active == 0 && c.tcp_active == 0 && s.tcp_rx == total && c.tcp_tx == total)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(server.stats().tcp_total, CONNECTIONS as u64);
    assert_eq!(server.stats().refused, 0);
    shutdown(&[&client, &server]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_connections_of_4_mib_forward_flow_tls1() {
    let echo = servers::echo().await;
    let server = start(&format!(
        "server://{KEY}@127.0.0.1:0/{}?mode=2&tls=1",
        echo.addr()
    ))
    .await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = start(&format!(
        "client://{KEY}@{tunnel}/127.0.0.1:0?mode=2&min=64"
    ))
    .await;
    wait_ready(&client).await;
    wait_pool_warm(&client).await;
    let elapsed = parallel_exchanges(client.local_addrs().users.unwrap()).await;
    report("forward flow, tls=1", elapsed);
    eventually(Duration::from_secs(5), "sessions closed", || {
        let (s, c) = (server.stats(), client.stats());
        async move { (s.tcp_active == 0 && c.tcp_active == 0).then_some(()) }
    })
    .await;
    assert_eq!(client.stats().tcp_total, CONNECTIONS as u64);
    shutdown(&[&client, &server]).await;
}
