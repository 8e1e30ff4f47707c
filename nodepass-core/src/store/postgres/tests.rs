//! The shared store suite and the fleet operations against a real PostgreSQL server (started
//! by the harness the end-to-end tests use; skipped with a message when PostgreSQL is not
//! installed, a failure under `CI=true`).

// Shared with the nodepass-tests crate, where its items are its public API.
#[path = "../../../../tests/src/postgres.rs"]
#[allow(unreachable_pub)]
mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::store::tests::{exercise_store, record};
use harness::PgServer;

fn config(server: &PgServer, db: &str, node: &str) -> PostgresConfig {
    let mut c = PostgresConfig::new("127.0.0.1", server.port(), PgServer::USER, db, node);
    c.password = Some(PgServer::PASSWORD.into());
    c.connect_timeout = Duration::from_secs(5);
    c
}

/// Retry `f` until it succeeds, for at most 15 s (the store reconnects with back-off).
async fn eventually<T>(mut f: impl AsyncFnMut() -> Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("still failing: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store() {
    let Some(mut server) = PgServer::start("store") else {
        return;
    };

    // The suite every store passes.
    server.create_db("suite");
    let store = PostgresStore::open(&config(&server, "suite", "a"))
        .await
        .unwrap();
    exercise_store(&store).await;
    drop(store);

    // Concurrent first opens migrate once; a reopen finds the schema.
    server.create_db("fleet");
    let opens = ["a", "b", "c"].map(|n| PostgresStore::open_owned(config(&server, "fleet", n)));
    let [a, b, c] = futures_join3(opens).await;
    let (a, b, c) = (Arc::new(a.unwrap()), b.unwrap(), c.unwrap());
    drop(c);

    // Stores are scoped to their node.
    let r = record(1);
    a.put(&r).await.unwrap();
    assert!(b.load().await.unwrap().is_empty());
    let err = b.put(&r).await.unwrap_err();
    assert!(err.to_string().contains("invalid"), "{err}");
    assert!(
        matches!(&err, StoreError::Invalid { reason } if reason.contains("another node")),
        "{err:?}"
    );
    b.set_traffic(&[(r.id.clone(), TrafficTotals::ZERO)])
        .await
        .unwrap();
    assert_eq!(
        a.load().await.unwrap(),
        std::slice::from_ref(&r),
        "b cannot touch a's row"
    );
    b.set_setting("k", "b").await.unwrap();
    assert_eq!(a.setting("k").await.unwrap(), None, "settings are per node");

    // Another node's change is pending for the owner, merged, and wakes it.
    let mut wake = a.wake_ups(tokio_util::sync::CancellationToken::new());
    tokio::time::timeout(Duration::from_secs(10), wake.recv())
        .await
        .unwrap();
    let stop = Spec {
        desired: Some(Desired::Stopped),
        ..Spec::default()
    };
    let changed = b.change(&r.id, stop).await.unwrap().unwrap();
    assert_eq!(changed.node, "a");
    let alias = Spec {
        set_alias: true,
        alias: Some("x".into()),
        ..Spec::default()
    };
    b.change(&r.id, alias).await.unwrap();
    assert!(
        b.change("0000ffff", Spec::default())
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::timeout(Duration::from_secs(10), wake.recv())
        .await
        .unwrap();
    let owned = a.owned().await.unwrap();
    let pending = owned[0].pending.clone().unwrap();
    assert_eq!(pending.desired, Some(Desired::Stopped));
    assert_eq!(pending.alias.as_deref(), Some("x"));
    a.mark_applied(&r.id, owned[0].spec_version).await.unwrap();
    assert_eq!(a.owned().await.unwrap()[0].pending, None);

    // Creation for another node; a taken id is refused.
    let r2 = record(2);
    b.create_for("a", &r2).await.unwrap();
    assert!(matches!(
        b.create_for("a", &r2).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(a.load().await.unwrap().len(), 2);

    // Nodes and heartbeats.
    a.heartbeat("http://127.0.0.1:1/api", "0.1.0", 5)
        .await
        .unwrap();
    b.heartbeat("http://127.0.0.1:2/api", "0.1.0", 6)
        .await
        .unwrap();
    let nodes = b.nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(nodes.iter().all(|n| n.age_ms >= 0 && n.age_ms < 10_000));

    // The database goes away: calls fail at once as unavailable, and work again after it is
    // back (the store reconnects), with nothing lost.
    server.stop();
    let mut grown = r.clone();
    grown.traffic.tcp_in += 1000;
    let err = a
        .set_traffic(&[(r.id.clone(), grown.traffic)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("unavailable"), "{err}");
    server.restart();
    eventually(async || a.set_traffic(&[(r.id.clone(), grown.traffic)]).await).await;
    let loaded = a.load().await.unwrap();
    assert_eq!(loaded[0].traffic, grown.traffic);
    // The wake-up connection came back too (one wake-up after reconnecting).
    tokio::time::timeout(Duration::from_secs(15), wake.recv())
        .await
        .unwrap();
}

impl PostgresStore {
    async fn open_owned(config: PostgresConfig) -> Result<Self> {
        PostgresStore::open(&config).await
    }
}

async fn futures_join3<F: std::future::Future + Send + 'static>(futs: [F; 3]) -> [F::Output; 3]
where
    F::Output: Send + 'static,
{
    let [x, y, z] = futs.map(tokio::spawn);
    [x.await.unwrap(), y.await.unwrap(), z.await.unwrap()]
}

/// How the design scales: 50 nodes x 200 instances in one database. Prints, for one node, the
/// time of a reconcile read (`owned`), of a full fleet refresh (`fleet`), of a status report of
/// its 200 instances and of a traffic flush of 200 totals; and the time to write one remote
/// change and wake its owner (NOTIFY to LISTEN). A report, not a check:
/// `cargo test -p nodepass-core --lib fleet_scale -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing report"]
async fn fleet_scale() {
    const NODES: u32 = 50;
    const PER_NODE: u32 = 200;
    let Some(server) = PgServer::start("scale") else {
        return;
    };
    server.create_db("scale");
    let mut stores = Vec::new();
    for n in 0..NODES {
        stores.push(Arc::new(
            PostgresStore::open(&config(&server, "scale", &format!("node-{n}")))
                .await
                .unwrap(),
        ));
    }
    let t = Instant::now();
    for (n, store) in stores.iter().enumerate() {
        for i in 0..PER_NODE {
            let mut r = record(u32::try_from(n).unwrap() * PER_NODE + i + 1);
            r.id = format!("{:08x}", u32::try_from(n).unwrap() * PER_NODE + i + 1);
            store.put(&r).await.unwrap();
        }
        store
            .heartbeat("http://127.0.0.1:1/api", "0", 0)
            .await
            .unwrap();
    }
    println!(
        "setup: {} instances on {NODES} nodes in {:?}",
        NODES * PER_NODE,
        t.elapsed()
    );
    let me = &stores[0];
    let runs = 20u32;
    macro_rules! time {
        ($what:expr, $body:expr) => {{
            let t = Instant::now();
            for _ in 0..runs {
                $body;
            }
            println!(
                "{}: {:?} per call (mean of {runs})",
                $what,
                t.elapsed() / runs
            );
        }};
    }
    let ids: Vec<String> = me.load().await.unwrap().into_iter().map(|r| r.id).collect();
    let totals: Vec<(String, TrafficTotals)> = ids
        .iter()
        .map(|id| {
            (
                id.clone(),
                TrafficTotals {
                    tcp_in: 1,
                    ..TrafficTotals::ZERO
                },
            )
        })
        .collect();
    let statuses: Vec<(String, String, Option<String>)> = ids
        .iter()
        .map(|id| (id.clone(), "running".to_owned(), None))
        .collect();
    time!("reconcile read of one node (200 rows)", {
        assert_eq!(me.owned().await.unwrap().len(), 200)
    });
    time!("fleet refresh (10000 rows)", {
        assert_eq!(me.fleet().await.unwrap().len(), 10_000)
    });
    time!("traffic flush of 200 totals", {
        me.set_traffic(&totals).await.unwrap()
    });
    time!("status report of 200 instances (unchanged)", {
        me.report_status(&statuses).await.unwrap()
    });
    time!("heartbeat", {
        me.heartbeat("http://127.0.0.1:1/api", "0", 0)
            .await
            .unwrap()
    });
    time!("node list (50 nodes)", {
        assert_eq!(me.nodes().await.unwrap().len(), 50)
    });
    let owner = &stores[NODES as usize - 1];
    let mut wake = owner.wake_ups(tokio_util::sync::CancellationToken::new());
    wake.recv().await.unwrap();
    let target = owner.load().await.unwrap()[0].id.clone();
    let t = Instant::now();
    for _ in 0..runs {
        let spec = Spec {
            restart: Some(true),
            ..Spec::default()
        };
        me.change(&target, spec).await.unwrap().unwrap();
        wake.recv().await.unwrap();
    }
    println!(
        "remote change + NOTIFY until the owner is woken: {:?} (mean of {runs})",
        t.elapsed() / runs
    );
}
