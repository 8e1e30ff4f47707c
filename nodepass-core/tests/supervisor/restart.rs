//! The auto-restart policy, on paused time: delays double from `restart_min` to `restart_max`,
//! only `restart: true` instances are restarted, and a stop cancels a pending restart.

use std::time::Duration;

use nodepass_core::supervisor::{CreateInstance, InstanceStatus};
use tokio::time::Instant;

use super::support::*;

/// Far more virtual time than any wait below needs.
const VIRTUAL_LIMIT: Duration = Duration::from_secs(3600);

fn blocked_single_end(restart: bool) -> (std::net::TcpListener, CreateInstance) {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let req = CreateInstance {
        url: format!("client://127.0.0.1:{port}/127.0.0.1:9?mode=1"),
        restart,
        ..Default::default()
    };
    (blocker, req)
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_with_doubling_delays_until_the_port_is_free() {
    let (sup, _token) = open_memory().await;
    let mut events = sup.subscribe();
    let (blocker, req) = blocked_single_end(true);
    let info = sup.create(req).await.unwrap();
    assert_eq!(info.status, InstanceStatus::Error);
    assert!(
        info.error.as_deref().unwrap().starts_with("cannot bind"),
        "{info:?}"
    );
    let id = info.id;
    // The first failure, at creation.
    next_event_in(&mut events, VIRTUAL_LIMIT, |e| {
        is_update(e, &id, InstanceStatus::Error)
    })
    .await;

    let mut failed_at = Instant::now();
    let mut gaps = Vec::new();
    for _ in 0..6 {
        next_event_in(&mut events, VIRTUAL_LIMIT, |e| {
            is_update(e, &id, InstanceStatus::Starting)
        })
        .await;
        gaps.push(failed_at.elapsed());
        next_event_in(&mut events, VIRTUAL_LIMIT, |e| {
            is_update(e, &id, InstanceStatus::Error)
        })
        .await;
        failed_at = Instant::now();
    }
    let secs: Vec<_> = gaps.iter().map(|g| g.as_millis().div_ceil(1000)).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32], "{gaps:?}");

    // The next attempt (after 60 s, the cap) finds the port free.
    drop(blocker);
    next_event_in(&mut events, VIRTUAL_LIMIT, |e| {
        is_update(e, &id, InstanceStatus::Running)
    })
    .await;
    let waited = failed_at.elapsed();
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
        "{waited:?}"
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn stop_cancels_a_pending_restart_and_no_policy_means_no_restart() {
    let (sup, _token) = open_memory().await;
    let (_blocker, with_policy) = blocked_single_end(true);
    let (_blocker2, without) = blocked_single_end(false);
    let a = sup.create(with_policy).await.unwrap();
    let b = sup.create(without).await.unwrap();
    assert_eq!(a.status, InstanceStatus::Error);
    assert_eq!(b.status, InstanceStatus::Stopped);
    assert_eq!(
        sup.start(&b.id).await.unwrap().status,
        InstanceStatus::Error
    );

    // Stopping a failed instance that waits to restart.
    assert_eq!(
        sup.stop(&a.id).await.unwrap().status,
        InstanceStatus::Stopped
    );
    let mut events = sup.subscribe();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(sup.get(&a.id).unwrap().status, InstanceStatus::Stopped);
    assert_eq!(
        sup.get(&b.id).unwrap().status,
        InstanceStatus::Error,
        "{:?}",
        sup.get(&b.id)
    );
    sup.shutdown().await;
    // Nothing but stats, flushes and the shutdown happened in those ten minutes.
    while let Some(e) = events.recv().await {
        assert!(
            e.instance
                .as_ref()
                .is_none_or(|i| i.status != InstanceStatus::Starting),
            "unexpected restart: {e:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn turning_the_policy_on_applies_from_the_next_failure() {
    let (sup, _token) = open_memory().await;
    let (_blocker, req) = blocked_single_end(false);
    let info = sup.create(req).await.unwrap();
    let id = info.id;
    sup.start(&id).await.unwrap();
    let update = nodepass_core::supervisor::UpdateInstance {
        restart: Some(true),
        ..Default::default()
    };
    assert!(sup.update(&id, update).await.unwrap().restart);
    // Started again by the operator, it now fails and is retried after restart_min.
    let started = Instant::now();
    assert_eq!(sup.start(&id).await.unwrap().status, InstanceStatus::Error);
    let mut events = sup.subscribe();
    next_event_in(&mut events, VIRTUAL_LIMIT, |e| {
        is_update(e, &id, InstanceStatus::Starting)
    })
    .await;
    let after_failure = started.elapsed();
    assert!(after_failure >= Duration::from_secs(1), "{after_failure:?}");
    assert!(
        after_failure < Duration::from_millis(1100),
        "{after_failure:?}"
    );
    sup.shutdown().await;
}
