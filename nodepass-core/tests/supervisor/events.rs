//! Events and logs: lagging subscribers get a resync, failed store writes change nothing and
//! announce nothing, log lines become `log` events, and no key ever shows.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use nodepass_core::Supervisor;
use nodepass_core::store::{MemoryStore, Store};
use nodepass_core::supervisor::{
    CreateInstance, EventKind, InstanceStatus, SupervisorError, UpdateInstance,
};
use tokio_util::sync::CancellationToken;

use super::support::*;

fn is_store<T>(r: Result<T, SupervisorError>) -> bool {
    matches!(r, Err(SupervisorError::Store(_)))
}

fn alias(a: &str) -> UpdateInstance {
    UpdateInstance {
        alias: Some(Some(a.into())),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_lagging_subscriber_is_told_to_resync() {
    let mut small = options();
    small.event_capacity = 4;
    let sup = Supervisor::open(
        Arc::new(MemoryStore::new()),
        small,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut slow = sup.subscribe();
    let info = sup
        .create(CreateInstance {
            url: SINGLE_URL.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 0..20 {
        sup.update(&info.id, alias(&format!("alias {i}")))
            .await
            .unwrap();
    }
    let first = slow.recv().await.unwrap();
    assert_eq!(first.kind, EventKind::Resync);
    assert!(first.instance.is_none());
    // Then the newest events, in order, ending with the last change.
    let last = next_event(&mut slow, |e| {
        e.instance
            .as_ref()
            .is_some_and(|i| i.alias.as_deref() == Some("alias 19"))
    })
    .await;
    assert_eq!(last.kind, EventKind::Update);
    sup.shutdown().await;
}

#[tokio::test]
async fn a_failed_store_write_changes_nothing_and_announces_nothing() {
    let store = Arc::new(FlakyStore::default());
    let (sup, _token) = open(store.clone()).await;
    let stopped = sup
        .create(CreateInstance {
            url: SINGLE_URL.into(),
            alias: Some("stopped".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let running = sup
        .create(CreateInstance {
            url: SERVER_URL.into(),
            restart: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.status, InstanceStatus::Running);
    let running_addr = sup.instance(&running.id).unwrap().local_addrs();
    let before = sup.list();
    let mut events = sup.subscribe();

    store.fail.store(true, Ordering::SeqCst);
    assert!(is_store(
        sup.create(CreateInstance {
            url: SINGLE_URL.into(),
            ..Default::default()
        })
        .await
    ));
    assert!(is_store(sup.update(&stopped.id, alias("changed")).await));
    assert!(is_store(sup.start(&stopped.id).await));
    assert!(is_store(
        sup.replace_url(&stopped.id, "client://127.0.0.1:0/127.0.0.1:7?mode=1")
            .await
    ));
    assert!(is_store(sup.delete(&stopped.id).await));
    assert!(is_store(sup.stop(&running.id).await));
    assert!(is_store(sup.restart(&running.id).await));
    assert!(is_store(sup.reset(&running.id).await));

    let after = sup.list();
    assert_eq!(after.len(), before.len());
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(
            (&a.id, &a.alias, &a.url, a.status),
            (&b.id, &b.alias, &b.url, b.status)
        );
    }
    assert_eq!(
        sup.instance(&running.id).unwrap().local_addrs(),
        running_addr,
        "not restarted"
    );
    assert_eq!(store.inner.load().await.unwrap().len(), 2);

    // The first event after the failures is the first successful change.
    store.fail.store(false, Ordering::SeqCst);
    sup.update(&stopped.id, alias("after")).await.unwrap();
    let e = next_event(&mut events, |e| {
        !matches!(e.kind, EventKind::Stats | EventKind::Log)
    })
    .await;
    assert_eq!(e.kind, EventKind::Update);
    assert_eq!(e.instance.unwrap().alias.as_deref(), Some("after"));
    sup.shutdown().await;
}

#[tokio::test]
async fn log_lines_are_captured_per_instance_and_no_key_shows_anywhere() {
    const KEY: &str = "hunter2-very-secret";
    capture_logs();
    let (sup, _token) = open_memory().await;
    let mut events = sup.subscribe();
    let stop_echo = CancellationToken::new();
    let echo = echo_server(stop_echo.clone()).await;
    let server = sup
        .create(CreateInstance {
            url: format!("server://{KEY}@127.0.0.1:0/127.0.0.1:0?mode=1&log=debug"),
            restart: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let server = sup.instance(&server.id).unwrap();
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client = sup
        .create(CreateInstance {
            url: format!("client://{KEY}@{tunnel}/{echo}?mode=2&min=2&log=debug"),
            restart: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let client = sup.instance(&client.id).unwrap();
    wait_status(&client, InstanceStatus::Running).await;
    assert_eq!(
        roundtrip(server.local_addrs().users.unwrap(), b"ping").await,
        b"ping"
    );

    let log = next_event(&mut events, |e| {
        e.kind == EventKind::Log && e.instance.as_ref().is_some_and(|i| i.id == client.id())
    })
    .await;
    assert!(!log.logs.as_ref().unwrap().is_empty());
    eventually("the server's client-connected line", || {
        server
            .logs()
            .iter()
            .any(|l| l.message.contains("client connected"))
    })
    .await;
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.message == "instance created")
    );
    assert!(
        client
            .logs()
            .iter()
            .any(|l| l.message.contains("connected to the server"))
    );
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.message.contains("connected to the server")),
        "lines stay with their instance"
    );

    // Gather everything a caller can see and look for the key.
    let mut seen = String::new();
    for i in [&server, &client] {
        seen += &format!("{:?} {:?} {:?}", i, i.info(), i.logs());
        seen += &serde_json::to_string(&i.info()).unwrap();
    }
    seen += &format!("{sup:?} {:?}", sup.list());
    sup.stop(server.id()).await.unwrap();
    sup.shutdown().await;
    while let Some(e) = events.recv().await {
        seen += &serde_json::to_string(&e).unwrap();
    }
    assert!(seen.contains(server.id()));
    assert!(!seen.contains(KEY), "the key leaked");
    stop_echo.cancel();
}

#[tokio::test]
async fn totals_that_could_not_be_written_are_written_once_the_store_recovers() {
    let store = Arc::new(FlakyStore::default());
    let (sup, _token) = open(store.clone()).await;
    let stop_echo = CancellationToken::new();
    let echo = echo_server(stop_echo.clone()).await;
    let created = sup
        .create(CreateInstance {
            url: format!("client://127.0.0.1:0/{echo}?mode=1"),
            restart: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let forwarder = sup.instance(&created.id).unwrap();
    let listen = forwarder.local_addrs().tunnel.unwrap();
    let stored = || async { store.inner.load().await.unwrap()[0].traffic };

    store.fail.store(true, Ordering::SeqCst);
    assert_eq!(roundtrip(listen, &[7; 1000]).await, [7; 1000]);
    eventually("counted", || forwarder.info().traffic.tcp_in == 1000).await;
    // Stopping fails (it must record the operator's wish first), and so do the flushes: the
    // counted bytes are in memory only.
    assert!(is_store(sup.stop(forwarder.id()).await));
    assert_eq!(forwarder.info().status, InstanceStatus::Running);
    assert!(stored().await.is_zero());

    store.fail.store(false, Ordering::SeqCst);
    eventually_async("the next flush", || async { stored().await.tcp_in == 1000 }).await;
    assert_eq!(stored().await, forwarder.info().traffic);
    sup.shutdown().await;
    stop_echo.cancel();
}
