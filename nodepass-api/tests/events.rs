//! `GET /v1/events` over real HTTP: initial events, changes as they happen, stats, heartbeat,
//! the stream limit, and the shutdown event.

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use support::{Api, SseItem, options};

fn is_event(item: &SseItem, name: &str) -> bool {
    matches!(item, SseItem::Event(e, _) if e == name)
}

fn data(item: SseItem) -> serde_json::Value {
    match item {
        SseItem::Event(_, d) => d,
        other => panic!("not an event: {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_shows_every_change_and_ends_with_shutdown() {
    let mut o = options();
    o.heartbeat_interval = Duration::from_millis(300);
    let api = Api::start(o).await;
    let first = api
        .create(json!({"url": "server://secret-key@127.0.0.1:0/127.0.0.1:0", "alias": "one"}))
        .await;
    let first_id = first["id"].as_str().unwrap().to_string();

    let res = api.authed(Method::GET, "/v1/events").open().await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let mut sse = support::Sse::new(res);

    // retry hint, then one initial event per instance.
    assert!(matches!(sse.next().await, Some(SseItem::Retry(3000))));
    let initial = data(sse.next().await.unwrap());
    assert_eq!(initial["type"], "initial");
    assert_eq!(initial["instance"]["id"], first_id.as_str());
    assert!(initial["time"].as_str().unwrap().ends_with('Z'));

    // create, update (start), stats, delete, each with the instance.
    let second = api
        .create(json!({"url": "server://other-secret@127.0.0.1:0/127.0.0.1:0", "restart": true}))
        .await;
    let second_id = second["id"].as_str().unwrap().to_string();
    let created = data(sse.until(|i| is_event(i, "create")).await.unwrap());
    assert_eq!(created["instance"]["id"], second_id.as_str());
    assert_eq!(created["type"], "create");
    let stats = data(
        sse.until(|i| matches!(i, SseItem::Event(e, d) if e == "stats" && d["instance"]["id"] == second_id.as_str()))
            .await
            .unwrap(),
    );
    assert!(stats["instance"]["tcp_in"].is_u64(), "{stats}");
    let patched = api
        .json(
            Method::PATCH,
            &format!("/v1/instances/{first_id}"),
            r#"{"alias":"renamed"}"#,
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    let update = data(
        sse.until(|i| matches!(i, SseItem::Event(e, d) if e == "update" && d["instance"]["alias"] == "renamed"))
            .await
            .unwrap(),
    );
    assert_eq!(update["instance"]["id"], first_id.as_str());
    let heartbeat = sse
        .until(|i| matches!(i, SseItem::Comment(_)))
        .await
        .unwrap();
    assert!(matches!(heartbeat, SseItem::Comment(c) if c == "heartbeat"));
    let deleted = api
        .authed(Method::DELETE, &format!("/v1/instances/{second_id}"))
        .send()
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let delete = data(sse.until(|i| is_event(i, "delete")).await.unwrap());
    assert_eq!(delete["instance"]["id"], second_id.as_str());

    // Shutdown: a last event, then the stream ends. Nothing in it showed a key.
    let stop = tokio::spawn(api.stop());
    let mut seen = Vec::new();
    while let Some(item) = sse.next().await {
        seen.push(item);
    }
    let last = seen.last().expect("a shutdown event");
    assert!(is_event(last, "shutdown"), "{seen:?}");
    for item in &seen {
        let text = format!("{item:?}");
        assert!(
            !text.contains("secret-key") && !text.contains("other-secret"),
            "{text}"
        );
    }
    tokio::time::timeout(support::DEADLINE, stop)
        .await
        .unwrap()
        .unwrap();
}

/// Install the supervisor's log capture as the global subscriber, once for this test binary
/// (what the `nodepass` executable must do for `log` events to carry lines).
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber =
            tracing_subscriber::registry().with(nodepass_core::supervisor::LogCapture::new());
        tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
    });
}

#[tokio::test]
async fn instance_log_lines_arrive_as_log_events() {
    capture_logs();
    let api = Api::start(options()).await;
    let res = api.authed(Method::GET, "/v1/events").open().await;
    let mut sse = support::Sse::new(res);
    let created = api
        .create(json!({"url": "server://log-secret@127.0.0.1:0/127.0.0.1:0", "restart": true}))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let log = data(
        sse.until(|i| matches!(i, SseItem::Event(e, d) if e == "log" && d["instance"]["id"] == id.as_str()))
            .await
            .unwrap(),
    );
    let lines = log["logs"].as_array().expect("log events carry lines");
    assert!(!lines.is_empty(), "{log}");
    for line in lines {
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(["debug", "info", "warn", "error"].contains(&line["level"].as_str().unwrap()));
        assert!(
            !line["message"].as_str().unwrap().contains("log-secret"),
            "{line}"
        );
    }
    drop(sse);
    api.stop().await;
}

#[tokio::test]
async fn too_many_streams_are_refused() {
    let mut o = options();
    o.max_event_streams = 2;
    let api = Api::start(o).await;
    let a = api.authed(Method::GET, "/v1/events").open().await;
    let b = api.authed(Method::GET, "/v1/events").open().await;
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let c = api.get("/v1/events").await;
    assert_eq!(c.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(c.error_code(), "RATE_LIMITED");
    // A closed stream frees its slot (bounded wait for the server to notice).
    drop(a);
    let deadline = tokio::time::Instant::now() + support::DEADLINE;
    loop {
        let d = api.authed(Method::GET, "/v1/events").open().await;
        if d.status() == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
    api.stop().await;
}
