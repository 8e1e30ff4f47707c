//! Listen-address conflicts: refused at create, start and URL change while the other instance
//! is running or starting; allowed once it stopped. Port 0 never conflicts.

use nodepass_core::supervisor::{CreateInstance, InstanceStatus, SupervisorError};
use nodepass_testkit::free_port;

use super::support::*;

fn req(url: String) -> CreateInstance {
    CreateInstance {
        url,
        ..Default::default()
    }
}

fn conflict_message<T: std::fmt::Debug>(r: Result<T, SupervisorError>) -> String {
    match r {
        Err(SupervisorError::Conflict(m)) => m,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn listen_conflicts_name_the_other_instance_and_the_address() {
    let (sup, _token) = open_memory().await;
    let port = free_port();
    let a = sup
        .create(CreateInstance {
            url: format!("server://k@127.0.0.1:{port}/127.0.0.1:0?mode=1"),
            restart: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(a.status, InstanceStatus::Running);

    // Same port, overlapping host (equal, or the other listens on all addresses).
    for url in [
        format!("client://127.0.0.1:{port}/127.0.0.1:9?mode=1"),
        format!("server://k@:{port}/127.0.0.1:9"),
        format!("server://k@0.0.0.0:1/127.0.0.1:{port}?mode=1"),
    ] {
        let msg = conflict_message(sup.create(req(url.clone())).await);
        assert!(
            msg.contains(&a.id) && msg.contains(&port.to_string()),
            "{url}: {msg}"
        );
    }
    assert_eq!(sup.list().len(), 1, "nothing created");

    // Another host on the same port, or port 0, or a dual-end client: fine.
    sup.create(req(format!("client://127.0.0.2:{port}/127.0.0.1:9?mode=1")))
        .await
        .unwrap();
    let zero = sup.create(req(SINGLE_URL.into())).await.unwrap();
    sup.create(req(format!(
        "client://k@127.0.0.1:{port}/127.0.0.1:9?mode=2"
    )))
    .await
    .unwrap();

    // Start and URL change are checked too.
    sup.start(&zero.id).await.unwrap();
    let clash = format!("client://127.0.0.1:{port}/127.0.0.1:9?mode=1");
    let msg = conflict_message(sup.replace_url(&zero.id, &clash).await);
    assert!(msg.contains(&a.id), "{msg}");
    assert_eq!(sup.get(&zero.id).unwrap().url, SINGLE_URL, "unchanged");

    // Once the other one stopped, the address is free for this one.
    sup.stop(&a.id).await.unwrap();
    sup.replace_url(&zero.id, &clash).await.unwrap();
    let zero_status = sup.instance(&zero.id).unwrap();
    wait_status(&zero_status, InstanceStatus::Running).await;
    let msg = conflict_message(sup.start(&a.id).await);
    assert!(msg.contains(&zero.id), "{msg}");
    assert_eq!(sup.get(&a.id).unwrap().status, InstanceStatus::Stopped);
    sup.shutdown().await;
}
