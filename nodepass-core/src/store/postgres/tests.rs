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

    // The newest write wins: a local change of the owner drops the same field of an older
    // pending change from another master (other fields stay pending); a remote change written
    // after the local one is kept; a taken change is gone.
    let mut r3 = record(3);
    r3.desired = Desired::Running;
    a.put(&r3).await.unwrap();
    let remote = Spec {
        set_alias: true,
        alias: Some("remote".into()),
        restart: Some(!r3.restart),
        ..Spec::default()
    };
    b.change(&r3.id, remote).await.unwrap();
    r3.alias = Some("local".into());
    a.put(&r3).await.unwrap();
    let row = a.fleet_instance(&r3.id).await.unwrap().unwrap();
    assert_eq!(row.record.alias.as_deref(), Some("local"));
    let pending = row
        .pending
        .clone()
        .expect("the restart policy is still pending");
    assert!(!pending.set_alias && pending.alias.is_none(), "{pending:?}");
    assert_eq!(pending.restart, Some(!r3.restart));
    let later = Spec {
        set_alias: true,
        alias: Some("later".into()),
        ..Spec::default()
    };
    b.change(&r3.id, later).await.unwrap();
    let row = a.fleet_instance(&r3.id).await.unwrap().unwrap();
    let pending = row.pending.clone().unwrap();
    assert_eq!(
        pending.alias.as_deref(),
        Some("later"),
        "newer than the local one"
    );
    assert!(
        !a.take_spec(&r3.id, row.spec_version - 1).await.unwrap(),
        "a change merged in since the read is not taken"
    );
    assert!(a.take_spec(&r3.id, row.spec_version).await.unwrap());
    assert_eq!(
        a.fleet_instance(&r3.id).await.unwrap().unwrap().pending,
        None
    );
    // A taken change stays listed until it is finished: an owner that stops in between (here:
    // a fresh store of node A, as after a restart) finds it and applies it again.
    let a_again = PostgresStore::open(&config(&server, "fleet", "a"))
        .await
        .unwrap();
    let taken = a_again.taken_specs().await.unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].0, r3.id);
    assert_eq!(taken[0].1.alias.as_deref(), Some("later"));
    assert!(b.taken_specs().await.unwrap().is_empty(), "B took nothing");
    a_again.finish_spec(&r3.id).await.unwrap();
    assert!(a.taken_specs().await.unwrap().is_empty());
    // A local stop supersedes a pending remote restart; the emptied change is cleared.
    let restart = Spec {
        desired: Some(Desired::Running),
        restart_now: true,
        ..Spec::default()
    };
    b.change(&r3.id, restart).await.unwrap();
    r3.desired = Desired::Stopped;
    a.put(&r3).await.unwrap();
    assert_eq!(
        a.fleet_instance(&r3.id).await.unwrap().unwrap().pending,
        None
    );

    // The incremental refresh: a full read, then only what was written or deleted since.
    let full = b.fleet_since(None).await.unwrap();
    assert!(full.full);
    assert_eq!(full.instances.len(), 3);
    let quiet = b.fleet_since(Some(full.watermark)).await.unwrap();
    assert!(!quiet.full);
    assert!(
        quiet.instances.is_empty() && quiet.deleted.is_empty(),
        "{quiet:?}"
    );
    let mut counted = r3.traffic;
    counted.udp_out = counted.udp_out.wrapping_add(7);
    a.set_traffic(&[(r3.id.clone(), counted), (r2.id.clone(), r2.traffic)])
        .await
        .unwrap();
    a.delete(&r2.id).await.unwrap();
    let delta = b.fleet_since(Some(quiet.watermark)).await.unwrap();
    assert_eq!(
        delta
            .instances
            .iter()
            .map(|f| (f.record.id.as_str(), f.record.traffic))
            .collect::<Vec<_>>(),
        [(r3.id.as_str(), counted)],
        "only the row whose traffic changed"
    );
    assert_eq!(delta.deleted, [(r2.id.clone(), "a".to_owned())]);
    let after = b.fleet_since(Some(delta.watermark)).await.unwrap();
    assert!(
        after.instances.is_empty() && after.deleted.is_empty(),
        "{after:?}"
    );
    let statuses = [
        (r3.id.clone(), "error".to_owned(), Some("boom".to_owned())),
        (r.id.clone(), "stopped".to_owned(), None),
    ];
    a.report_status(&statuses).await.unwrap();
    let reported = b.fleet_since(Some(after.watermark)).await.unwrap();
    assert_eq!(
        reported
            .instances
            .iter()
            .map(|f| (f.record.id.as_str(), f.status.as_str(), f.error.as_deref()))
            .collect::<Vec<_>>(),
        [(r3.id.as_str(), "error", Some("boom"))],
        "only the status that changed"
    );

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
    let totals = |ids: &[String], n: u64| -> Vec<(String, TrafficTotals)> {
        ids.iter()
            .map(|id| {
                let t = TrafficTotals {
                    tcp_in: n,
                    ..TrafficTotals::ZERO
                };
                (id.clone(), t)
            })
            .collect()
    };
    let statuses: Vec<(String, String, Option<String>)> = ids
        .iter()
        .map(|id| (id.clone(), "running".to_owned(), None))
        .collect();
    time!("reconcile read of one node (200 rows)", {
        assert_eq!(me.owned().await.unwrap().len(), 200)
    });
    time!("full fleet refresh (10000 rows)", {
        assert_eq!(me.fleet().await.unwrap().len(), 10_000)
    });
    let mut round = 0;
    time!("traffic flush of 200 changed totals", {
        round += 1;
        me.set_traffic(&totals(&ids, round)).await.unwrap()
    });
    time!("traffic flush of 200 unchanged totals", {
        me.set_traffic(&totals(&ids, round)).await.unwrap()
    });
    let mut watermark = me.fleet_since(None).await.unwrap().watermark;
    time!("incremental refresh, nothing changed", {
        let delta = me.fleet_since(Some(watermark)).await.unwrap();
        assert!(delta.instances.is_empty());
        watermark = delta.watermark;
    });
    let other = &stores[1];
    let other_ids: Vec<String> = other
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut spent = Duration::ZERO;
    for n in 0..u64::from(runs) {
        other.set_traffic(&totals(&other_ids, n + 1)).await.unwrap();
        let t = Instant::now();
        let delta = me.fleet_since(Some(watermark)).await.unwrap();
        spent += t.elapsed();
        assert_eq!(delta.instances.len(), 200);
        watermark = delta.watermark;
    }
    println!(
        "incremental refresh after another node's flush (200 rows changed): {:?} per call (mean of {runs})",
        spent / runs
    );
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
