//! Several targets behind one single-end client: the `lbs` strategies, fail-over within a user
//! connection, the latency strategy's choice, primary-backup's return to the primary, UDP
//! sessions that stick to their target, and the per-target statistics. Three real targets on
//! 127.0.0.1 port 0 each; every loop is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use nodepass_core::tunnel::{TargetSnapshot, TunnelState};
use nodepass_core::{Tunnel, TunnelConfig, TunnelHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A TCP target that answers each connection's first byte with its own id byte, after an
/// optional delay before each accept.
struct Target {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Target {
    async fn start(id: u8, accept_delay: Duration) -> Target {
        Self::on(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            id,
            accept_delay,
        )
    }

    fn on(l: TcpListener, id: u8, accept_delay: Duration) -> Target {
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                if !accept_delay.is_zero() {
                    tokio::time::sleep(accept_delay).await;
                }
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    // Probes connect and close without a byte: not a hit.
                    if matches!(s.read(&mut b).await, Ok(1)) {
                        counted.fetch_add(1, Relaxed);
                        let _ = s.write_all(&[id]).await;
                    }
                });
            }
        });
        Target { addr, hits, task }
    }

    /// Close the listener (new connections are refused) and wait until it is gone.
    async fn kill(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }
}

async fn three(delays: [Duration; 3]) -> Vec<Target> {
    let mut out = Vec::new();
    for (i, d) in delays.into_iter().enumerate() {
        out.push(Target::start(i as u8, d).await);
    }
    out
}

async fn client(targets: &[SocketAddr], query: &str, stop: &CancellationToken) -> TunnelHandle {
    let list: Vec<String> = targets.iter().map(|a| a.to_string()).collect();
    let url = format!("client://127.0.0.1:0/{}?mode=1&{query}", list.join(","));
    let cfg: TunnelConfig = url.parse().unwrap();
    let h = Tunnel::bind(cfg).await.unwrap().spawn(stop.child_token());
    h.wait_for(Duration::from_secs(10), |s| *s == TunnelState::Ready)
        .await
        .expect("tunnel ready");
    h
}

/// One user connection through the tunnel: send a byte, return the id of the target that
/// answered, or `None` when the connection failed.
async fn ask(tunnel: SocketAddr) -> Option<u8> {
    let attempt = async {
        let mut s = TcpStream::connect(tunnel).await.ok()?;
        s.write_all(b"?").await.ok()?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.ok()?;
        Some(b[0])
    };
    tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .ok()
        .flatten()
}

fn entry(h: &TunnelHandle) -> SocketAddr {
    h.local_addrs().tunnel.expect("single-end listener")
}

/// Poll the snapshots until `pred` holds (bounded: 200 rounds of 10 ms).
async fn snapshots_until(
    h: &TunnelHandle,
    pred: impl Fn(&[TargetSnapshot]) -> bool,
) -> Vec<TargetSnapshot> {
    for _ in 0..200 {
        let s = h.targets();
        if pred(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("target statistics never settled: {:?}", h.targets());
}

#[tokio::test]
async fn round_robin_spreads_evenly_and_counts_per_target() {
    let stop = CancellationToken::new();
    let targets = three([Duration::ZERO; 3]).await;
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let h = client(&addrs, "lbs=0", &stop).await;
    let mut per = [0u64; 3];
    for _ in 0..30 {
        per[ask(entry(&h)).await.expect("answered") as usize] += 1;
    }
    assert_eq!(per, [10, 10, 10]);
    let hits: Vec<u64> = targets.iter().map(|t| t.hits.load(Relaxed)).collect();
    assert_eq!(hits, [10, 10, 10]);
    let snap = snapshots_until(&h, |s| s.iter().all(|t| t.active == 0)).await;
    for (t, addr) in snap.iter().zip(&addrs) {
        assert_eq!(t.address, addr.to_string());
        assert!(t.up && t.selected);
        assert_eq!((t.total, t.failed_dials), (10, 0));
        assert_eq!(
            (t.bytes_out, t.bytes_in),
            (10, 10),
            "one byte each way per connection"
        );
    }
    // The tunnel's reset zeroes the per-target counters too.
    h.reset_traffic();
    for t in h.targets() {
        assert_eq!(
            (t.total, t.bytes_out, t.bytes_in, t.failed_dials),
            (0, 0, 0, 0)
        );
    }
    stop.cancel();
}

#[tokio::test]
async fn a_killed_target_fails_no_user_connection() {
    let stop = CancellationToken::new();
    let mut targets = three([Duration::ZERO; 3]).await;
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let h = client(&addrs, "lbs=0", &stop).await;
    let tunnel = entry(&h);
    // A load of new connections from 4 workers; target 1 dies after 40 of them (of 240).
    let done = Arc::new(AtomicU64::new(0));
    let failed_after = Arc::new(AtomicU64::new(0));
    let is_killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (done, failed_after, is_killed) =
            (done.clone(), failed_after.clone(), is_killed.clone());
        workers.push(tokio::spawn(async move {
            let (mut to_dead, mut after) = (0u64, 0u64);
            for _ in 0..60 {
                let started_after_kill = is_killed.load(Relaxed);
                let got = ask(tunnel).await;
                done.fetch_add(1, Relaxed);
                if started_after_kill {
                    after += 1;
                    match got {
                        None => {
                            failed_after.fetch_add(1, Relaxed);
                        }
                        Some(1) => to_dead += 1,
                        Some(_) => {}
                    }
                }
            }
            (to_dead, after)
        }));
    }
    for _ in 0..2000 {
        if done.load(Relaxed) >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(done.load(Relaxed) >= 40, "load did not start");
    let dead = targets.remove(1);
    let before = dead.hits.load(Relaxed);
    dead.kill().await;
    is_killed.store(true, Relaxed);
    let (mut to_dead, mut after) = (0, 0);
    for w in workers {
        let (d, a) = w.await.unwrap();
        to_dead += d;
        after += a;
    }
    let total = done.load(Relaxed);
    println!(
        "connections: {total}, started after the kill: {after}, failed after the kill: {}, \
         target 1 served {before} before the kill",
        failed_after.load(Relaxed)
    );
    assert_eq!(total, 240);
    assert!(
        after >= 100,
        "only {after} connections started after the kill"
    );
    assert_eq!(
        failed_after.load(Relaxed),
        0,
        "user connections failed after the kill"
    );
    assert_eq!(to_dead, 0, "a connection reached the killed target");
    let snap = h.targets();
    assert!(!snap[1].up, "{snap:?}");
    assert!(snap[1].failed_dials >= 1);
    // Every connection was counted on the one target that carried it.
    let carried: u64 = snap.iter().map(|t| t.total).sum();
    assert_eq!(carried, 240, "{snap:?}");
    assert!(snap[1].total >= before, "{snap:?}");
    stop.cancel();
}

#[tokio::test]
async fn latency_strategy_uses_the_slow_target_only_when_it_is_the_best() {
    let stop = CancellationToken::new();
    // Target 0 (first in the URL, so the initial choice) delays every accept by 40 ms.
    let targets = three([Duration::from_millis(40), Duration::ZERO, Duration::ZERO]).await;
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let h = client(&addrs, "lbs=1&probe=200ms", &stop).await;
    let tunnel = entry(&h);
    // Learn: the first sessions measure the response times.
    for _ in 0..5 {
        ask(tunnel).await.expect("answered");
    }
    let mut got = Vec::new();
    for _ in 0..30 {
        got.push(ask(tunnel).await.expect("answered"));
    }
    assert!(
        !got.contains(&0),
        "the slow target was used while faster ones were up: {got:?}"
    );
    // The two fast targets are equal: the choice may move once (to measure the response time
    // of the one not used yet, which counts as zero until then) but never back and forth.
    let switches = got.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches <= 1, "the choice flapped: {got:?}");
    let snap = h.targets();
    let last = *got.last().unwrap() as usize;
    assert!(
        snap[0].score_us.unwrap() > snap[last].score_us.unwrap(),
        "{snap:?}"
    );
    // Now the slow target is the best one left.
    let mut targets = targets.into_iter();
    let slow = targets.next().unwrap();
    for t in targets {
        t.kill().await;
    }
    for _ in 0..5 {
        assert_eq!(ask(tunnel).await, Some(0));
    }
    assert!(h.targets()[0].selected);
    assert!(slow.hits.load(Relaxed) >= 5);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn primary_backup_falls_back_after_the_interval() {
    let stop = CancellationToken::new();
    let mut targets = three([Duration::ZERO; 3]).await;
    let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let h = client(&addrs, "lbs=2&fallback=1m", &stop).await;
    let tunnel = entry(&h);
    for _ in 0..3 {
        assert_eq!(ask(tunnel).await, Some(0));
    }
    let primary = targets.remove(0).kill().await;
    assert_eq!(ask(tunnel).await, Some(1), "the first backup takes over");
    assert_eq!(ask(tunnel).await, Some(1));
    // The primary comes back on its port; its back-off ends, but the interval has not passed.
    let _back = Target::on(TcpListener::bind(primary).await.unwrap(), 0, Duration::ZERO);
    tokio::time::advance(Duration::from_secs(40)).await;
    assert_eq!(
        ask(tunnel).await,
        Some(1),
        "stays on the backup before the interval"
    );
    assert!(h.targets()[1].selected);
    tokio::time::advance(Duration::from_secs(21)).await;
    assert_eq!(
        ask(tunnel).await,
        Some(0),
        "back on the primary after the interval"
    );
    assert_eq!(ask(tunnel).await, Some(0));
    let snap = h.targets();
    assert!(snap[0].selected && !snap[1].selected, "{snap:?}");
    stop.cancel();
}

/// A UDP target that answers every datagram with its id byte.
async fn udp_target(id: u8) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((_, peer)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&[id], peer).await;
        }
    });
    addr
}

#[tokio::test]
async fn udp_sessions_stay_on_their_target() {
    let stop = CancellationToken::new();
    let mut addrs = Vec::new();
    for id in 0..3 {
        addrs.push(udp_target(id).await);
    }
    let h = client(&addrs, "lbs=0&notcp=1", &stop).await;
    let entry = h.local_addrs().users_udp.expect("udp listener");
    let mut users = Vec::new();
    for _ in 0..3 {
        let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        u.connect(entry).await.unwrap();
        users.push(u);
    }
    let mut seen = vec![Vec::new(); 3];
    // Interleave the users' datagrams: each session must keep its own target.
    for round in 0..10 {
        for (u, seen) in users.iter().zip(&mut seen) {
            let mut b = [0u8; 16];
            u.send(&[round]).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(5), u.recv(&mut b))
                .await
                .expect("reply")
                .unwrap();
            assert_eq!(n, 1);
            seen.push(b[0]);
        }
    }
    for s in &seen {
        assert!(
            s.iter().all(|&x| x == s[0]),
            "a session changed target: {s:?}"
        );
    }
    let mut firsts: Vec<u8> = seen.iter().map(|s| s[0]).collect();
    firsts.sort();
    assert_eq!(firsts, [0, 1, 2], "new sessions are spread round-robin");
    let snap = h.targets();
    for t in &snap {
        assert_eq!((t.total, t.bytes_out, t.bytes_in), (1, 10, 10), "{snap:?}");
    }
    stop.cancel();
}

#[tokio::test]
async fn a_forward_flow_server_balances_and_probes_its_targets() {
    let stop = CancellationToken::new();
    let mut targets = three([Duration::ZERO; 3]).await;
    let list: Vec<String> = targets.iter().map(|t| t.addr.to_string()).collect();
    let url = format!(
        "server://k@127.0.0.1:0/{}?mode=2&lbs=0&probe=200ms",
        list.join(",")
    );
    let server = Tunnel::bind(url.parse::<TunnelConfig>().unwrap())
        .await
        .unwrap()
        .spawn(stop.child_token());
    let port = server.local_addrs().tunnel.unwrap().port();
    let client = client_dual(port, &stop).await;
    let users = client
        .local_addrs()
        .users
        .expect("forward-flow user listener");
    let mut per = [0u64; 3];
    for _ in 0..9 {
        per[ask(users).await.expect("answered") as usize] += 1;
    }
    assert_eq!(per, [3, 3, 3]);
    let snap = snapshots_until(&server, |s| s.iter().all(|t| t.active == 0)).await;
    for t in &snap {
        assert_eq!((t.total, t.bytes_out, t.bytes_in), (3, 3, 3), "{snap:?}");
    }
    // The client listens on its target address: it never dials it.
    assert!(client.targets().iter().all(|t| t.total == 0));
    // Without any user traffic, the probes notice a dead target.
    targets.remove(2).kill().await;
    let snap = snapshots_until(&server, |s| !s[2].up).await;
    assert!(snap[0].up && snap[1].up, "{snap:?}");
    assert!(snap[0].probe_latency_us.is_some(), "{snap:?}");
    for _ in 0..6 {
        assert_ne!(ask(users).await, Some(2));
    }
    stop.cancel();
}

/// A dual-end client of the server on 127.0.0.1:`port`, listening for users on port 0.
async fn client_dual(port: u16, stop: &CancellationToken) -> TunnelHandle {
    let url = format!("client://k@127.0.0.1:{port}/127.0.0.1:0?mode=2&min=4");
    let h = Tunnel::bind(url.parse::<TunnelConfig>().unwrap())
        .await
        .unwrap()
        .spawn(stop.child_token());
    h.wait_for(Duration::from_secs(10), |s| *s == TunnelState::Ready)
        .await
        .expect("client ready");
    h
}

#[tokio::test]
async fn the_supervisor_shows_the_targets_in_the_instance_and_its_stats_events() {
    use nodepass_core::store::MemoryStore;
    use nodepass_core::supervisor::{CreateInstance, EventKind, InstanceStatus, SupervisorOptions};
    let targets = three([Duration::ZERO; 3]).await;
    let list: Vec<String> = targets.iter().map(|t| t.addr.to_string()).collect();
    let token = CancellationToken::new();
    let mut options = SupervisorOptions::default();
    options.stats_interval = Duration::from_millis(100);
    let sup = nodepass_core::Supervisor::open(Arc::new(MemoryStore::new()), options, token.clone())
        .await
        .unwrap();
    let mut events = sup.subscribe();
    let info = sup
        .create(CreateInstance {
            url: format!("client://127.0.0.1:0/{}?mode=1", list.join(",")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(info.targets.is_empty(), "stopped: no targets shown");
    let info = sup.start(&info.id).await.unwrap();
    assert_eq!(info.status, InstanceStatus::Running);
    let instance = sup.instance(&info.id).unwrap();
    let entry = instance.local_addrs().tunnel.unwrap();
    for _ in 0..3 {
        ask(entry).await.expect("answered");
    }
    let shown = instance.info().targets;
    let addresses: Vec<&str> = shown.iter().map(|t| t.address.as_str()).collect();
    assert_eq!(addresses, list);
    assert!(shown.iter().all(|t| t.total == 1 && t.up), "{shown:?}");
    // The periodic stats event carries them too (bounded: 50 events).
    let mut found = false;
    for _ in 0..50 {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event")
            .expect("event stream open");
        if e.kind == EventKind::Stats
            && let Some(i) = &e.instance
            && i.targets.iter().map(|t| t.total).sum::<u64>() == 3
        {
            found = true;
            break;
        }
    }
    assert!(found, "no stats event with the targets");
    token.cancel();
}
