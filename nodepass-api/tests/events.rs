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

/// The `update` events of one dialect: `(event name, data)` pairs whose change kind is
/// `update` for the instance `id` (NodePass: `event: instance` with `type: update`).
async fn next_update(sse: &mut support::Sse, nodepass: bool, id: &str) -> serde_json::Value {
    let item = sse
        .until(|i| match i {
            SseItem::Event(e, d) if nodepass => {
                e == "instance" && d["type"] == "update" && d["instance"]["id"] == id
            }
            SseItem::Event(e, d) => e == "update" && d["instance"]["id"] == id,
            _ => false,
        })
        .await
        .expect("the stream is open");
    data(item)["instance"].clone()
}

/// A PATCH or PUT that must answer 200.
async fn change(api: &Api, method: Method, id: &str, body: serde_json::Value) {
    let res = api
        .json(method, &format!("/v1/instances/{id}"), &body.to_string())
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
}

/// Every change of an instance's settings goes out as `update` with the changed instance, in
/// both dialects: alias, restart policy, metadata, and a new URL with a new tunnel key (which
/// never appears in the stream).
async fn settings_changes_are_update_events(nodepass: bool) {
    let api = if nodepass {
        Api::start_nodepass(options(), "").await
    } else {
        Api::start(options()).await
    };
    let url = "server://first-secret@127.0.0.1:0/127.0.0.1:0";
    let res = api
        .json(
            Method::POST,
            "/v1/instances",
            &json!({ "url": url }).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let created = res.json();
    let created = if nodepass {
        created
    } else {
        created["data"].clone()
    };
    let id = created["id"].as_str().unwrap().to_string();
    let res = api.authed(Method::GET, "/v1/events").open().await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut sse = support::Sse::new(res);

    change(&api, Method::PATCH, &id, json!({"alias": "edge"})).await;
    let i = next_update(&mut sse, nodepass, &id).await;
    assert_eq!(i["alias"], "edge", "{i}");

    change(&api, Method::PATCH, &id, json!({"restart": false})).await;
    let i = next_update(&mut sse, nodepass, &id).await;
    assert_eq!(i["restart"], false, "{i}");

    let meta = json!({"peer": {"sid": "7", "type": "1", "alias": "peer"}, "tags": {"env": "prod"}});
    change(&api, Method::PATCH, &id, json!({ "meta": meta })).await;
    let i = next_update(&mut sse, nodepass, &id).await;
    assert_eq!(i["meta"]["tags"]["env"], "prod", "{i}");
    assert_eq!(i["meta"]["peer"]["sid"], "7", "{i}");

    // A new tunnel key (and port): the update shows the new URL, masked.
    let url = "server://second-secret@127.0.0.1:0/127.0.0.1:0?log=warn";
    change(&api, Method::PUT, &id, json!({ "url": url })).await;
    let i = loop {
        let i = next_update(&mut sse, nodepass, &id).await;
        if i["url"].as_str().is_some_and(|u| u.contains("log=warn")) {
            break i;
        }
    };
    let url = i["url"].as_str().unwrap();
    assert!(
        url.starts_with("server://****@127.0.0.1:0/127.0.0.1:0?"),
        "{url}"
    );

    // Nothing sent so far showed a tunnel key.
    let stop = tokio::spawn(api.stop());
    let mut rest = Vec::new();
    while let Some(item) = sse.next().await {
        rest.push(format!("{item:?}"));
    }
    for text in &rest {
        assert!(
            !text.contains("first-secret") && !text.contains("second-secret"),
            "{text}"
        );
    }
    tokio::time::timeout(support::DEADLINE, stop)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn settings_changes_are_update_events_in_the_nodepass_dialect() {
    settings_changes_are_update_events(true).await;
}

#[tokio::test]
async fn settings_changes_are_update_events_in_the_envelope_dialect() {
    settings_changes_are_update_events(false).await;
}

/// A rotation of the API key (either way) goes out as an `update` of the key's pseudo-instance
/// `********` in the NodePass dialect, as the Go master sends it, but with the key masked.
#[tokio::test]
async fn a_key_rotation_is_an_update_of_the_key_pseudo_instance() {
    // A generated key (one from NODEPASS_API_KEY cannot be rotated).
    let mut o = options();
    o.api_key = None;
    let mut api = Api::start_nodepass(o, "").await;
    let res = api.authed(Method::GET, "/v1/events").open().await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut sse = support::Sse::new(res);
    let mut new_keys = Vec::new();
    for (method, path, body) in [
        (
            Method::PATCH,
            "/v1/instances/********",
            r#"{"action":"restart"}"#,
        ),
        (Method::POST, "/v1/key/rotate", ""),
    ] {
        let res = if body.is_empty() {
            api.authed(method, path).send().await
        } else {
            api.json(method, path, body).await
        };
        assert_eq!(res.status, StatusCode::OK, "{path}: {}", res.text());
        let v = res.json();
        let key = v["url"].as_str().or(v["key"].as_str()).unwrap().to_string();
        api.key = key.clone();
        new_keys.push(key);
        let i = next_update(&mut sse, true, "********").await;
        assert_eq!(i["url"], "********", "{i}");
        assert_eq!(i["type"], "", "{i}");
    }
    let stop = tokio::spawn(api.stop());
    let mut rest = Vec::new();
    while let Some(item) = sse.next().await {
        rest.push(format!("{item:?}"));
    }
    for text in &rest {
        for key in &new_keys {
            assert!(
                !text.contains(key.as_str()),
                "a new key in the stream: {text}"
            );
        }
    }
    tokio::time::timeout(support::DEADLINE, stop)
        .await
        .unwrap()
        .unwrap();
}
