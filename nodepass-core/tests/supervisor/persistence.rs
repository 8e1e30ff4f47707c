//! Durable state: a SQLite store reopened after shutdown gives back every instance, the
//! open-at-start rule, and traffic totals carried across instance restarts and reopenings.

use std::path::Path;
use std::sync::{Arc, Weak};

use nodepass_core::Supervisor;
use nodepass_core::store::{SqliteStore, Store, TrafficTotals};
use nodepass_core::supervisor::{CreateInstance, InstanceInfo, InstanceStatus, UpdateInstance};
use nodepass_testkit::temp_dir;
use tokio_util::sync::CancellationToken;

use super::support::*;

/// Open a supervisor on the SQLite file at `path`.
async fn open_file(path: &Path) -> (Supervisor, Weak<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path).expect("open store"));
    let weak = Arc::downgrade(&store);
    let sup = Supervisor::open(store, options(), CancellationToken::new())
        .await
        .expect("open supervisor");
    (sup, weak)
}

/// Shut down and wait until the store (and its file lock) is released.
async fn close(sup: Supervisor, store: Weak<dyn Store>) {
    sup.shutdown().await;
    drop(sup);
    eventually("the store to be released", || store.strong_count() == 0).await;
}

/// What must survive a reopening.
fn identity(i: &InstanceInfo) -> impl PartialEq + std::fmt::Debug + use<> {
    (
        i.id.clone(),
        i.alias.clone(),
        i.kind,
        i.url.clone(),
        i.config.clone(),
        i.restart,
        i.meta.clone(),
        i.created_at,
        i.updated_at,
    )
}

#[tokio::test]
async fn instances_survive_a_reopen_and_start_as_the_operator_left_them() {
    let dir = temp_dir("roundtrip");
    let path = dir.path().join("state.db");
    let (sup, store) = open_file(&path).await;

    let create = |url: &str, alias: &str, restart: bool| CreateInstance {
        url: url.into(),
        alias: Some(alias.into()),
        restart,
        ..Default::default()
    };
    // Started by the operator, no policy: runs again after the reopen.
    let started = sup
        .create(create(SINGLE_URL, "started", false))
        .await
        .unwrap();
    sup.start(&started.id).await.unwrap();
    // Policy on but stopped by the operator: the policy wins at open.
    let policy = sup
        .create(create(SERVER_URL, "policy", true))
        .await
        .unwrap();
    assert_eq!(policy.status, InstanceStatus::Running);
    sup.stop(&policy.id).await.unwrap();
    // Never started: stays stopped.
    let idle = sup.create(create(SINGLE_URL, "idle", false)).await.unwrap();
    // Deleted: gone.
    let gone = sup.create(create(SINGLE_URL, "gone", false)).await.unwrap();
    sup.delete(&gone.id).await.unwrap();
    // Updated: the update survives.
    let mut meta = nodepass_core::store::Meta::default();
    meta.peer.sid = "peer-1".into();
    meta.peer.kind = "client".into();
    meta.tags.insert("zone".into(), "eu ✓".into());
    let update = UpdateInstance {
        alias: Some(None),
        meta: Some(meta.clone()),
        ..Default::default()
    };
    let updated = sup.update(&idle.id, update).await.unwrap();
    assert_eq!(updated.alias, None);
    assert_eq!(updated.meta, meta);
    assert!(updated.updated_at >= updated.created_at);

    let before: Vec<_> = sup.list().iter().map(identity).collect();
    assert_eq!(before.len(), 3);
    close(sup, store).await;

    let (sup, store) = open_file(&path).await;
    let after: Vec<_> = sup.list().iter().map(identity).collect();
    assert_eq!(after, before);
    assert!(matches!(
        sup.get(&gone.id),
        Err(nodepass_core::supervisor::SupervisorError::NotFound(_))
    ));
    for (id, want) in [
        (&started.id, InstanceStatus::Running),
        (&policy.id, InstanceStatus::Running),
    ] {
        wait_status(&sup.instance(id).unwrap(), want).await;
    }
    assert_eq!(sup.get(&idle.id).unwrap().status, InstanceStatus::Stopped);
    close(sup, store).await;
}

#[tokio::test]
async fn traffic_totals_survive_instance_restarts_and_reopening() {
    let dir = temp_dir("traffic");
    let path = dir.path().join("state.db");
    let (sup, store) = open_file(&path).await;
    let stop_echo = CancellationToken::new();
    let echo = echo_server(stop_echo.clone()).await;

    let server = sup
        .create(CreateInstance {
            url: SERVER_URL.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let server = sup.instance(&server.id).unwrap();
    server.start().await.unwrap();
    let addrs = server.local_addrs();
    let client = sup
        .create(CreateInstance {
            url: format!(
                "client://secret-key@{}/{echo}?mode=2&min=2",
                addrs.tunnel.unwrap()
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    let client = sup.instance(&client.id).unwrap();
    client.start().await.unwrap();
    wait_status(&client, InstanceStatus::Running).await;

    // Bytes in equal bytes out, through the server's user port to the echo service.
    let payload: Vec<u8> = (0..65_536u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let n = payload.len() as u64;
    assert_eq!(roundtrip(addrs.users.unwrap(), &payload).await, payload);
    let both = TrafficTotals {
        tcp_in: n,
        tcp_out: n,
        udp_in: 0,
        udp_out: 0,
    };
    eventually("server counters", || server.info().traffic == both).await;
    eventually("client counters", || client.info().traffic == both).await;
    eventually_async("a history sample", || async {
        sup.history(server.id(), 0)
            .await
            .unwrap()
            .last()
            .is_some_and(|s| s.traffic == both)
    })
    .await;

    // An instance restart folds the old tunnel's counters into the totals.
    server.restart().await.unwrap();
    assert_eq!(server.info().traffic, both);
    assert_ne!(server.local_addrs().tunnel, addrs.tunnel, "a new tunnel");

    let (server_id, client_id) = (server.id().to_owned(), client.id().to_owned());
    drop((server, client));
    close(sup, store).await;

    let (sup, store) = open_file(&path).await;
    assert_eq!(sup.get(&server_id).unwrap().traffic, both);
    assert_eq!(sup.get(&client_id).unwrap().traffic, both);
    // Reset is durable too.
    assert!(sup.reset(&server_id).await.unwrap().traffic.is_zero());
    // ... and marked in the history with an all-zero sample, so that readers count from zero.
    let history = sup.history(&server_id, 0).await.unwrap();
    assert!(history.len() >= 2, "{history:?}");
    assert!(history.last().unwrap().traffic.is_zero());
    close(sup, store).await;

    let (sup, store) = open_file(&path).await;
    assert!(sup.get(&server_id).unwrap().traffic.is_zero());
    assert_eq!(sup.get(&client_id).unwrap().traffic, both);
    close(sup, store).await;
    stop_echo.cancel();
}
