//! Status transitions, valid and invalid, through the Supervisor and Instance handles.

use std::time::Duration;

use nodepass_core::supervisor::{
    CreateInstance, EventKind, InstanceKind, InstanceStatus, SupervisorError, UpdateInstance,
};

use super::support::*;

fn create(url: &str) -> CreateInstance {
    CreateInstance {
        url: url.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn start_stop_restart_delete_and_the_refused_transitions() {
    let (sup, _token) = open_memory().await;
    let mut events = sup.subscribe();

    let info = sup.create(create(SERVER_URL)).await.unwrap();
    assert_eq!(info.status, InstanceStatus::Stopped);
    assert_eq!(info.kind, InstanceKind::Server);
    assert_eq!(info.id.len(), 8);
    assert!(
        info.id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(info.url, "server://****@127.0.0.1:0/127.0.0.1:0?mode=1");
    assert!(
        info.config
            .starts_with("server://****@127.0.0.1:0/127.0.0.1:0?"),
        "{}",
        info.config
    );
    let e = next_event(&mut events, |_| true).await;
    assert_eq!(e.kind, EventKind::Create);
    assert_eq!(e.instance.unwrap().id, info.id);
    let id = info.id.clone();
    let instance = sup.instance(&id).unwrap();

    // stopped: stop is refused.
    assert!(matches!(
        sup.stop(&id).await,
        Err(SupervisorError::Conflict(_))
    ));

    let running = sup.start(&id).await.unwrap();
    assert_eq!(running.status, InstanceStatus::Running);
    assert_eq!(running.mode, "reverse");
    assert!(instance.local_addrs().tunnel.is_some());
    assert!(instance.local_addrs().users.is_some());
    next_event(&mut events, |e| is_update(e, &id, InstanceStatus::Starting)).await;
    next_event(&mut events, |e| is_update(e, &id, InstanceStatus::Running)).await;

    // running: start is refused, and nothing changes.
    let Err(SupervisorError::Conflict(msg)) = sup.start(&id).await else {
        panic!("second start accepted")
    };
    assert!(msg.contains("already running"), "{msg}");
    assert_eq!(sup.get(&id).unwrap().status, InstanceStatus::Running);

    // restart from running: a new tunnel (new ports).
    let before = instance.local_addrs().tunnel;
    assert_eq!(
        sup.restart(&id).await.unwrap().status,
        InstanceStatus::Running
    );
    assert_ne!(instance.local_addrs().tunnel, before);

    let stopped = instance.stop().await.unwrap();
    assert_eq!(stopped.status, InstanceStatus::Stopped);
    assert_eq!(stopped.uptime, 0);
    assert!(instance.local_addrs().tunnel.is_none());
    next_event(&mut events, |e| is_update(e, &id, InstanceStatus::Stopped)).await;

    // restart from stopped is a start.
    assert_eq!(
        instance.restart().await.unwrap().status,
        InstanceStatus::Running
    );

    // delete stops first.
    sup.delete(&id).await.unwrap();
    let e = next_event(&mut events, |e| e.kind == EventKind::Delete).await;
    assert_eq!(e.instance.unwrap().status, InstanceStatus::Stopped);
    assert!(matches!(sup.get(&id), Err(SupervisorError::NotFound(_))));
    assert!(matches!(
        instance.start().await,
        Err(SupervisorError::NotFound(_))
    ));
    assert!(matches!(
        sup.delete(&id).await,
        Err(SupervisorError::NotFound(_))
    ));
    assert!(sup.list().is_empty());
    sup.shutdown().await;
}

#[tokio::test]
async fn create_validates_everything_first() {
    let (sup, _token) = open_memory().await;
    let field = |r: Result<_, SupervisorError>| match r {
        Err(SupervisorError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(field(sup.create(create("master://:9090")).await), "url");
    assert_eq!(
        field(sup.create(create("server://k@:1/:2?nope=1")).await),
        "url"
    );
    let mut long_alias = create(SINGLE_URL);
    long_alias.alias = Some("a".repeat(257));
    assert_eq!(field(sup.create(long_alias).await), "alias");
    let mut long_tag = create(SINGLE_URL);
    long_tag.meta.tags.insert("env".into(), "x".repeat(257));
    assert_eq!(field(sup.create(long_tag).await), "meta.tags.env");
    assert!(sup.list().is_empty(), "nothing created");

    let info = sup.create(create(SINGLE_URL)).await.unwrap();
    let mut update = UpdateInstance {
        alias: Some(Some("ok".into())),
        ..Default::default()
    };
    update.meta = Some(Default::default());
    update.meta.as_mut().unwrap().peer.sid = "s".repeat(300);
    assert_eq!(field(sup.update(&info.id, update).await), "meta.peer.sid");
    assert_eq!(
        sup.get(&info.id).unwrap().alias,
        None,
        "validated completely first"
    );
    assert_eq!(field(sup.replace_url(&info.id, "client://").await), "url");
    assert!(matches!(
        sup.get("00000000"),
        Err(SupervisorError::NotFound(_))
    ));
    sup.shutdown().await;
}

#[tokio::test]
async fn a_bind_error_is_an_error_status_and_start_is_allowed_from_it() {
    let (sup, _token) = open_memory().await;
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let url = format!("client://hunter2@127.0.0.1:{port}/127.0.0.1:9?mode=1");
    let info = sup.create(create(&url)).await.unwrap();
    let failed = sup.start(&info.id).await.unwrap();
    assert_eq!(failed.status, InstanceStatus::Error);
    let error = failed.error.unwrap();
    assert!(
        error.starts_with(&format!("cannot bind 127.0.0.1:{port}: ")),
        "{error}"
    );
    assert!(!failed.url.contains("hunter2"));
    // No restart policy: it stays in error.
    let instance = sup.instance(&info.id).unwrap();
    assert_eq!(instance.info().status, InstanceStatus::Error);

    drop(blocker);
    assert_eq!(
        sup.start(&info.id).await.unwrap().status,
        InstanceStatus::Running
    );
    sup.shutdown().await;
}

#[tokio::test]
async fn a_client_without_its_server_is_starting_with_an_error_then_degraded_running() {
    let mut quick = options();
    quick.start_wait = Duration::from_millis(300);
    let store = std::sync::Arc::new(nodepass_core::store::MemoryStore::new());
    let sup = nodepass_core::Supervisor::open(store, quick, Default::default())
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let echo = echo_server(stop.clone()).await;
    let server = sup.create(create(SERVER_URL)).await.unwrap();
    let server = sup.instance(&server.id).unwrap();
    server.start().await.unwrap();
    wait_status(&server, InstanceStatus::Running).await;
    let tunnel = server.local_addrs().tunnel.unwrap();
    let client_url = format!("client://secret-key@{tunnel}/{echo}?mode=2&min=2");
    let client = sup.create(create(&client_url)).await.unwrap();
    let client = sup.instance(&client.id).unwrap();
    client.start().await.unwrap();
    wait_status(&client, InstanceStatus::Running).await;
    assert_eq!(client.info().error, None);

    // Losing the server: still running (it reconnects by itself), with the error shown.
    server.stop().await.unwrap();
    let degraded = |i: &nodepass_core::supervisor::InstanceInfo| {
        i.status == InstanceStatus::Running && i.error.is_some()
    };
    eventually("a degraded client", || degraded(&client.info())).await;

    // Not connected since this start: starting, with the error; start answers after start_wait.
    client.stop().await.unwrap();
    let started = client.start().await.unwrap();
    assert_eq!(started.status, InstanceStatus::Starting);
    eventually("a client error while starting", || {
        client.info().error.is_some()
    })
    .await;
    let info = client.info();
    assert_eq!(info.status, InstanceStatus::Starting);
    assert!(!info.error.unwrap().contains("secret-key"));
    stop.cancel();
    sup.shutdown().await;
}

#[tokio::test]
async fn shutdown_by_token_stops_everything_and_closes_events() {
    let (sup, token) = open_memory().await;
    let mut events = sup.subscribe();
    let mut req = create(SINGLE_URL);
    req.restart = true;
    let info = sup.create(req).await.unwrap();
    assert_eq!(info.status, InstanceStatus::Running);
    token.cancel();
    next_event(&mut events, |e| e.kind == EventKind::Shutdown).await;
    assert_eq!(within("events to close", events.recv()).await, None);
    assert_eq!(sup.get(&info.id).unwrap().status, InstanceStatus::Stopped);
    assert!(matches!(
        sup.start(&info.id).await,
        Err(SupervisorError::ShuttingDown)
    ));
    assert!(matches!(
        sup.create(create(SINGLE_URL)).await,
        Err(SupervisorError::ShuttingDown)
    ));
    sup.shutdown().await; // idempotent
    assert_eq!(sup.subscribe().recv().await, None);
}
