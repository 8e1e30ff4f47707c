//! The default dialect (`api=nodepass`): what NodePass v1.14 frontends expect of a master.
//! Bare JSON, `{"error"}` bodies, the instance object with NodePass's names and types, create
//! starts, the API key's pseudo-instance and its rotation, `/info`, the event stream, CORS,
//! tcping, and export/import.

mod support;

use http::{Method, StatusCode};
use nodepass_testkit::{free_port, free_ports};
use serde_json::{Value, json};
use support::{Api, DEADLINE, Sse, SseItem, options};

async fn create(api: &Api, body: Value) -> Value {
    let res = api
        .json(Method::POST, "/v1/instances", &body.to_string())
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    res.json()
}

/// Poll `GET /v1/instances/{id}` until `pred` holds (bounded by the deadline).
async fn wait_for(api: &Api, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let v = api.get(&format!("/v1/instances/{id}")).await.json();
        if pred(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn assert_error(res: &support::Res, status: StatusCode) {
    assert_eq!(res.status, status, "{}", res.text());
    let v = res.json();
    assert!(v["error"].is_string(), "{v}");
    assert!(v.get("success").is_none(), "{v}");
}

#[tokio::test]
async fn instances_are_bare_json_with_nodepass_names_and_create_starts() {
    let api = Api::start_nodepass(options(), "log=debug").await;
    let list = api.get("/v1/instances").await;
    assert_eq!(list.status, StatusCode::OK);
    let list = list.json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], "********");
    assert!(!list[0]["url"].as_str().unwrap().contains(&api.key));

    let port = free_port();
    let url = format!("server://s3cret@127.0.0.1:{port}/127.0.0.1:9?mode=2");
    let created = create(&api, json!({ "url": url })).await;
    for (field, kind) in [
        ("id", "string"),
        ("alias", "string"),
        ("type", "string"),
        ("status", "string"),
        ("url", "string"),
        ("config", "string"),
        ("restart", "bool"),
        ("meta", "object"),
        ("mode", "int"),
        ("ping", "int"),
        ("pool", "int"),
        ("tcps", "int"),
        ("udps", "int"),
        ("tcprx", "int"),
        ("tcptx", "int"),
        ("udprx", "int"),
        ("udptx", "int"),
    ] {
        let v = &created[field];
        let ok = match kind {
            "string" => v.is_string(),
            "bool" => v.is_boolean(),
            "object" => v.is_object(),
            _ => v.is_u64(),
        };
        assert!(ok, "{field} should be {kind}: {created}");
    }
    assert_eq!(created["alias"], "");
    assert_eq!(created["restart"], true, "restart defaults to true");
    assert_eq!(created["meta"]["tags"], json!({}));
    assert_eq!(created["type"], "server");
    let shown = created["url"].as_str().unwrap();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("log=debug"),
        "inherits the master's log: {shown}"
    );
    let id = created["id"].as_str().unwrap().to_string();
    wait_for(&api, &id, "runs without an action", |v| {
        v["status"] == "running"
    })
    .await;

    let list = api.get("/v1/instances").await.json();
    assert_eq!(list[0]["id"], "********", "the key comes first");
    assert_eq!(list[1]["id"], id);
    api.stop().await;
}

#[tokio::test]
async fn errors_are_an_error_field_with_the_right_status() {
    let api = Api::start_nodepass(options(), "").await;
    let res = api.req(Method::GET, "/v1/instances").send().await;
    assert_error(&res, StatusCode::UNAUTHORIZED);
    assert_error(
        &api.get("/v1/instances/0badc0de").await,
        StatusCode::NOT_FOUND,
    );
    let res = api
        .json(Method::POST, "/v1/instances", r#"{"url":"bogus://x"}"#)
        .await;
    assert_error(&res, StatusCode::BAD_REQUEST);
    assert!(
        res.json()["error"].as_str().unwrap().contains("url"),
        "{}",
        res.text()
    );
    assert_error(
        &api.get("/v1/tcping?target=").await,
        StatusCode::BAD_REQUEST,
    );
    let res = api
        .authed(Method::DELETE, "/v1/instances/********")
        .send()
        .await;
    assert_error(&res, StatusCode::FORBIDDEN);
    api.stop().await;
}

#[tokio::test]
async fn patch_put_and_delete_behave_as_nodepass() {
    let api = Api::start_nodepass(options(), "").await;
    let url = format!("server://k3y@127.0.0.1:{}/127.0.0.1:9", free_port());
    let id = create(&api, json!({ "url": url, "alias": "a", "restart": false })).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/instances/{id}");
    wait_for(&api, &id, "running", |v| v["status"] == "running").await;
    let patch = |body: Value| {
        let api = &api;
        let path = path.clone();
        async move { api.json(Method::PATCH, &path, &body.to_string()).await }
    };
    for (action, status) in [
        ("stop", "stopped"),
        ("stop", "stopped"),
        ("start", "running"),
        ("start", "running"),
        ("restart", "running"),
        ("reset", "running"),
    ] {
        let res = patch(json!({ "action": action })).await;
        assert_eq!(res.status, StatusCode::OK, "{action}: {}", res.text());
        assert_eq!(res.json()["status"], status, "{action}: {}", res.text());
    }
    let v = patch(json!({ "alias": "", "restart": true,
        "meta": { "peer": { "sid": "s", "type": "t", "alias": "p" }, "tags": { "env": "prod" } } }))
    .await
    .json();
    assert_eq!(v["alias"], "");
    assert_eq!(v["restart"], true);
    assert_eq!(v["meta"]["tags"]["env"], "prod");
    assert_eq!(
        patch(json!({})).await.status,
        StatusCode::OK,
        "an empty patch changes nothing"
    );

    // The URL as shown (masked key), edited and sent back, keeps the stored key.
    let shown = v["url"].as_str().unwrap().to_string();
    let port = free_port();
    let edited = format!("server://****@127.0.0.1:{port}/127.0.0.1:9");
    assert!(shown.starts_with("server://****@"), "{shown}");
    let res = api
        .json(Method::PUT, &path, &json!({ "url": edited }).to_string())
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let backup = api.get("/v1/export").await.json();
    let stored = backup["instances"][0]["url"].as_str().unwrap();
    assert!(
        stored.starts_with(&format!("server://k3y@127.0.0.1:{port}/")),
        "{stored}"
    );

    let res = api.json(Method::PUT, &path, r#"{"action":"stop"}"#).await;
    assert_eq!(
        res.json()["status"],
        "stopped",
        "PUT {{action}} still works"
    );
    assert_eq!(
        api.json(Method::PUT, &path, "{}").await.status,
        StatusCode::BAD_REQUEST
    );

    let res = api.authed(Method::DELETE, &path).send().await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert!(res.body.is_empty());
    assert_eq!(api.get(&path).await.status, StatusCode::NOT_FOUND);
    api.stop().await;
}

#[tokio::test]
async fn the_key_pseudo_instance_rotates_the_key_once() {
    // A generated key (one from NODEPASS_API_KEY cannot be rotated).
    let mut o = options();
    o.api_key = None;
    let mut api = Api::start_nodepass(o, "").await;
    let res = api
        .json(
            Method::PATCH,
            "/v1/instances/********",
            r#"{"action":"restart"}"#,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let new_key = res.json()["url"].as_str().unwrap().to_string();
    assert_eq!(new_key.len(), 64, "{new_key}");
    assert_error(&api.get("/v1/instances").await, StatusCode::UNAUTHORIZED);
    api.key = new_key;
    let list = api.get("/v1/instances").await.json();
    assert_eq!(list[0]["url"], "********", "shown only once");
    api.stop().await;
}

#[tokio::test]
async fn info_has_the_nodepass_fields_and_takes_an_alias() {
    let api = Api::start_nodepass(options(), "").await;
    let res = api
        .json(Method::POST, "/v1/info", r#"{"alias":"edge-1"}"#)
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let info = api.get("/v1/info").await.json();
    for field in [
        "mid",
        "alias",
        "os",
        "arch",
        "noc",
        "cpu",
        "mem_total",
        "mem_used",
        "swap_total",
        "swap_used",
        "netrx",
        "nettx",
        "diskr",
        "diskw",
        "sysup",
        "ver",
        "name",
        "uptime",
        "log",
        "tls",
        "crt",
        "key",
        "version",
    ] {
        assert!(info.get(field).is_some(), "{field} missing: {info}");
    }
    assert_eq!(info["ver"], "v1.14.0");
    assert_eq!(info["alias"], "edge-1");
    assert_eq!(info["name"], "127.0.0.1");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(info["arch"], "amd64");
    }
    let key = api.get("/v1/instances/********").await.json();
    assert_eq!(key["alias"], "edge-1");
    api.stop().await;
}

#[tokio::test]
async fn events_are_instance_events_with_nodepass_log_lines() {
    capture_logs();
    let api = Api::start_nodepass(options(), "log=debug").await;
    let res = api.authed(Method::GET, "/v1/events").open().await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut sse = Sse::new(res);
    let first = sse
        .until(|i| matches!(i, SseItem::Event(..)))
        .await
        .unwrap();
    let SseItem::Event(name, data) = first else {
        unreachable!()
    };
    assert_eq!(name, "instance");
    assert_eq!(data["type"], "initial");
    assert_eq!(data["instance"]["id"], "********");

    let url = format!("server://k@127.0.0.1:{}/127.0.0.1:9", free_port());
    let id = create(&api, json!({ "url": url })).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let log_line = regex_like_nodepass();
    let mut types = Vec::new();
    let mut log = None;
    while log.is_none() || !types.contains(&"create".to_string()) {
        let Some(SseItem::Event(name, data)) = sse.until(|i| matches!(i, SseItem::Event(..))).await
        else {
            panic!("stream ended")
        };
        assert_eq!(name, "instance");
        assert!(data["logs"].is_string(), "{data}");
        types.push(data["type"].as_str().unwrap().to_string());
        if data["type"] == "log" && data["instance"]["id"] == id.as_str() {
            log = Some(data["logs"].as_str().unwrap().to_string());
        }
    }
    let log = log.unwrap();
    assert!(log_line(&log), "not a NodePass log line: {log:?}");
    api.stop().await;
}

/// Install the supervisor's log capture as the global subscriber, once for this test binary.
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber =
            tracing_subscriber::registry().with(nodepass_core::supervisor::LogCapture::new());
        tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
    });
}

/// `2026-12-01 16:08:52.687 INFO message`.
fn regex_like_nodepass() -> impl Fn(&str) -> bool {
    |line: &str| {
        let b = line.as_bytes();
        let digits =
            |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
        let (level, rest) = line
            .get(24..)
            .unwrap_or("")
            .split_once(' ')
            .unwrap_or(("", ""));
        digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[10] == b' '
            && b[13] == b':'
            && b[19] == b'.'
            && digits(20..23)
            && b[23] == b' '
            && ["DEBUG", "INFO", "WARN", "ERROR"].contains(&level)
            && !rest.is_empty()
    }
}

#[tokio::test]
async fn preflights_are_answered_before_the_key_check() {
    let api = Api::start_nodepass(options(), "").await;
    let res = api
        .req(Method::OPTIONS, "/v1/events")
        .header("origin", "http://127.0.0.1:21110")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-api-key,cache-control")
        .send()
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let h = |n: &str| {
        res.headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(h("access-control-allow-origin"), "*");
    assert!(h("access-control-allow-headers").contains("Cache-Control"));
    assert!(h("access-control-allow-methods").contains("PATCH"));
    api.stop().await;
}

#[tokio::test]
async fn tcping_answers_with_latency_in_milliseconds() {
    let api = Api::start_nodepass(options(), "").await;
    let target = api.addr.to_string();
    let v = api.get(&format!("/v1/tcping?target={target}")).await.json();
    assert_eq!(v["connected"], true, "{v}");
    assert!(v["latency"].is_u64(), "{v}");
    assert!(v["error"].is_null(), "{v}");
    api.stop().await;
}

#[tokio::test]
async fn export_then_import_recreates_the_instances() {
    let api = Api::start_nodepass(options(), "").await;
    let url = format!("client://k3y@127.0.0.1:{}/127.0.0.1:9", free_port());
    create(
        &api,
        json!({ "url": url, "alias": "c", "restart": false,
        "meta": { "tags": { "team": "ops" } } }),
    )
    .await;
    let backup = api.get("/v1/export").await.json();
    assert_eq!(backup["format"], "nodepass-backup");
    assert_eq!(
        backup["instances"][0]["url"],
        format!("{url}?log=info"),
        "a backup keeps the key (and the inherited log level)"
    );
    let id = backup["instances"][0]["id"].as_str().unwrap();
    api.authed(Method::DELETE, &format!("/v1/instances/{id}"))
        .send()
        .await;

    let mut body = backup.clone();
    body["instances"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "id": "bad", "url": "nope://x" }));
    let res = api
        .json(Method::POST, "/v1/import", &body.to_string())
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let report = res.json();
    assert_eq!(report["imported"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["skipped"][0]["source"], "bad", "{report}");
    let list = api.get("/v1/instances").await.json();
    assert_eq!(list[1]["alias"], "c");
    assert_eq!(list[1]["restart"], false);
    assert_eq!(list[1]["meta"]["tags"]["team"], "ops");

    // Importing from a master that masks its keys (ours) skips every instance, saying why.
    let from = format!("http://{}/api", api.addr);
    let res = api
        .json(
            Method::POST,
            "/v1/import",
            &json!({ "from": from, "key": api.key }).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let report = res.json();
    assert!(
        report["imported"].as_array().unwrap().is_empty(),
        "{report}"
    );
    assert!(
        report["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("masked"),
        "{report}"
    );
    let res = api
        .json(
            Method::POST,
            "/v1/import",
            &json!({ "from": from, "key": "wrong" }).to_string(),
        )
        .await;
    assert_error(&res, StatusCode::BAD_GATEWAY);
    api.stop().await;
}

/// As the Go master: a server reports mode 0 until a client has connected, then its mode (1,
/// reverse, here: its target can be bound on this host); a dual-end client reports 2.
#[tokio::test]
async fn a_server_reports_its_mode_once_a_client_connected() {
    let api = Api::start_nodepass(options(), "").await;
    let [tunnel, target, users] = free_ports();
    let server = create(
        &api,
        json!({ "url": format!("server://mode-key@127.0.0.1:{tunnel}/127.0.0.1:{target}") }),
    )
    .await;
    let sid = server["id"].as_str().unwrap().to_string();
    let s = wait_for(&api, &sid, "server running", |v| v["status"] == "running").await;
    assert_eq!(s["mode"], 0, "no client yet: {s}");
    let client = create(
        &api,
        json!({ "url": format!("client://mode-key@127.0.0.1:{tunnel}/127.0.0.1:{users}") }),
    )
    .await;
    let cid = client["id"].as_str().unwrap().to_string();
    wait_for(&api, &sid, "server mode 1 once the client connected", |v| {
        v["mode"] == 1
    })
    .await;
    wait_for(&api, &cid, "client mode 2", |v| v["mode"] == 2).await;
    api.stop().await;
}
