//! Fleet mode end to end: a real PostgreSQL server and three `nodepass` masters (executables)
//! as nodes A, B and C sharing it. An instance created on A for node B runs on B; its traffic
//! shows on A; C stops it; the database restarts while traffic flows and no counted byte is
//! lost (B keeps counting and writes its totals once the database is back; a write request on
//! B meanwhile gets 503); B is killed and A reports it down, its instance still on B. A's event
//! stream and metrics show B's instance (created, running, its traffic), and A serves its
//! traffic history from the database; A's backup has it and an import on C recreates it on B.
//!
//! Needs PostgreSQL's server binaries (Debian's `postgresql`): fails under `CI=true` without
//! them, skips with a message otherwise.

mod master_support;

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use master_support::{MasterProcess, Sse, echo_server, echo_through, free_port, payload, temp_dir};
use nodepass_tests::postgres::PgServer;
use serde_json::{Value, json};

const KEY: &str = "fleet-e2e-api-key-3b9d";
const WAIT: Duration = Duration::from_secs(20);

fn start(pg: &PgServer, node: &str, password_file: Option<&std::path::Path>) -> MasterProcess {
    let mut url = format!(
        "master://127.0.0.1:0/api?log=info&api=envelope&store={}&node={node}",
        pg.url("fleet")
    );
    let mut env = vec![
        ("NODEPASS_API_KEY", KEY),
        ("NODEPASS_FLEET_INTERVAL", "300ms"),
    ];
    match password_file {
        Some(file) => url.push_str(&format!("&store_password_file={}", file.display())),
        None => env.push(("NODEPASS_STORE_PASSWORD", PgServer::PASSWORD)),
    }
    MasterProcess::start_url(&url, &env)
}

async fn call(
    m: &MasterProcess,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = m.req(method, path).header("x-api-key", KEY);
    if let Some(body) = body {
        req = req.json(&body.to_string());
    }
    let res = req.send().await;
    let json = if res.text().is_empty() {
        Value::Null
    } else {
        res.json()
    };
    (res.status, json)
}

/// Poll `f` every 50 ms until it returns `Some`, at most [`WAIT`].
async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn instance(m: &MasterProcess, id: &str) -> Value {
    let (status, v) = call(m, Method::GET, &format!("/v1/instances/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["data"].clone()
}

/// The instance, or `None` while the master does not know it yet.
async fn try_instance(m: &MasterProcess, id: &str) -> Option<Value> {
    let (status, v) = call(m, Method::GET, &format!("/v1/instances/{id}"), None).await;
    (status == StatusCode::OK).then(|| v["data"].clone())
}

async fn node_health(m: &MasterProcess, name: &str) -> Option<String> {
    let (status, v) = call(m, Method::GET, "/v1/nodes", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["data"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| n["health"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_share_one_database() {
    let Some(mut pg) = PgServer::start("fleet") else {
        return;
    };
    pg.create_db("fleet");
    let dir = temp_dir("fleet");
    let password_file = dir.path().join("db-password");
    std::fs::write(&password_file, format!("{}\n", PgServer::PASSWORD)).unwrap();

    let a = start(&pg, "A", None);
    let b = start(&pg, "B", Some(&password_file));
    let c = start(&pg, "C", None);
    for name in ["A", "B", "C"] {
        until(&format!("node {name} up on A"), async || {
            (node_health(&a, name).await.as_deref() == Some("up")).then_some(())
        })
        .await;
    }

    // A's event stream, open before anything is created.
    let events = a
        .req(Method::GET, "/v1/events")
        .header("x-api-key", KEY)
        .open()
        .await;
    assert_eq!(events.status(), StatusCode::OK);
    let mut sse = Sse::new(events);

    // Created on A, owned by B: B runs it (a single-end client forwarding to an echo server).
    let echo = echo_server().await;
    let port = free_port();
    let url = format!("client://127.0.0.1:{port}/{echo}?mode=1");
    let (status, created) = call(
        &a,
        Method::POST,
        "/v1/instances",
        Some(json!({ "url": url, "node": "B", "alias": "on-b" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["data"]["node"], "B");
    assert_eq!(instance(&a, &id).await["node"], "B", "A shows it at once");
    until("B runs it", async || {
        let v = try_instance(&b, &id).await?;
        (v["status"] == "running").then_some(())
    })
    .await;
    assert_eq!(instance(&b, &id).await["node"], "B");
    until("A sees it running", async || {
        (instance(&a, &id).await["status"] == "running").then_some(())
    })
    .await;

    // Traffic through B shows on A.
    let first = payload(64 * 1024, 1);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let back = until("the tunnel to answer", async || {
        echo_through(addr, &first).await
    })
    .await;
    assert_eq!(back, first);
    let counted = until("A to show the traffic", async || {
        let v = instance(&a, &id).await["tcp_in"].as_u64().unwrap();
        (v >= first.len() as u64).then_some(v)
    })
    .await;

    // A's event stream saw it created, then running on B, then its traffic (as B wrote it).
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "A's events: {seen:?}");
        let (event, data) = sse.next_event().await.expect("the stream stays open");
        if data["instance"]["id"] != id.as_str() {
            continue;
        }
        assert_eq!(data["instance"]["node"], "B", "{data}");
        let tcp_in = data["instance"]["tcp_in"].as_u64().unwrap_or(0);
        seen.push((event.clone(), data["instance"]["status"].clone(), tcp_in));
        if tcp_in >= first.len() as u64 && matches!(event.as_str(), "stats" | "update") {
            break;
        }
    }
    assert_eq!(seen[0].0, "create", "{seen:?}");
    assert!(
        seen.iter().any(|(e, s, _)| e == "update" && s == "running"),
        "{seen:?}"
    );
    drop(sse);
    // A's metrics list it with its node and the traffic B counted.
    let metrics = a
        .req(Method::GET, "/v1/metrics")
        .header("x-api-key", KEY)
        .send()
        .await;
    assert_eq!(metrics.status, StatusCode::OK);
    let line = format!(
        r#"nodepass_instance_traffic_bytes_total{{id="{id}",protocol="tcp",direction="in",node="B"}} "#
    );
    let text = metrics.text();
    let on_metrics: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line:?} in\n{text}"))
        .parse()
        .unwrap();
    assert!(on_metrics >= counted, "{on_metrics} < {counted}");

    // The database restarts during traffic: B keeps forwarding and counting, refuses writes
    // with 503 meanwhile, and writes its totals once the database is back.
    pg.stop();
    let second = payload(96 * 1024, 2);
    assert_eq!(
        echo_through(addr, &second).await.as_deref(),
        Some(&second[..])
    );
    let (status, refused) = call(
        &b,
        Method::POST,
        "/v1/instances",
        Some(json!({ "url": format!("client://127.0.0.1:{}/{echo}?mode=1", free_port()) })),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    pg.restart();
    let b_total = instance(&b, &id).await["tcp_in"].as_u64().unwrap();
    assert!(
        b_total >= counted + second.len() as u64,
        "{b_total} < {counted} + {}",
        second.len()
    );
    until("A to show every byte B counted", async || {
        let on_a = instance(&a, &id).await["tcp_in"].as_u64().unwrap();
        let on_b = instance(&b, &id).await["tcp_in"].as_u64().unwrap();
        (on_a == on_b && on_b == b_total).then_some(())
    })
    .await;

    // Stopped from C.
    let (status, stopped) = call(
        &c,
        Method::PUT,
        &format!("/v1/instances/{id}"),
        Some(json!({ "action": "stop" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    until("B to stop it", async || {
        (instance(&b, &id).await["status"] == "stopped").then_some(())
    })
    .await;
    until("A to see it stopped", async || {
        (instance(&a, &id).await["status"] == "stopped").then_some(())
    })
    .await;
    assert!(
        echo_through(addr, b"gone?").await.is_none(),
        "the listener is closed"
    );

    // The fleet's backup on A has B's instance (full URL, node B); imported on C, the copy is
    // created for B, which adopts and runs it.
    let (status, backup) = call(&a, Method::GET, "/v1/export", None).await;
    assert_eq!(status, StatusCode::OK, "{backup}");
    let entry = backup["data"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{backup}"))
        .clone();
    assert_eq!(entry["node"], "B", "{entry}");
    // The full URL as stored (A added its own `log=`, as every master does).
    assert!(entry["url"].as_str().unwrap().starts_with(&url), "{entry}");
    assert_eq!(entry["running"], false, "{entry}");
    // On another port: B refuses a second instance listening where the first one does.
    let mut entry = entry;
    entry["url"] = json!(entry["url"].as_str().unwrap().replace(
        &format!("127.0.0.1:{port}/"),
        &format!("127.0.0.1:{}/", free_port())
    ));
    let (status, report) = call(
        &c,
        Method::POST,
        "/v1/import",
        Some(json!({ "instances": [entry] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let copy = report["data"]["imported"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{report}"))
        .to_owned();
    assert_eq!(instance(&c, &copy).await["node"], "B");
    until("B to adopt the imported copy", async || {
        let v = try_instance(&b, &copy).await?;
        // Its restart policy (kept by the backup) starts it.
        (v["node"] == "B" && v["status"] == "running").then_some(())
    })
    .await;

    // Reset from A: B zeroes its counters and stores an all-zero history sample, which A
    // serves from the database (the instance is B's).
    let (status, reset) = call(
        &a,
        Method::PUT,
        &format!("/v1/instances/{id}"),
        Some(json!({ "action": "reset" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    until("A to see the reset", async || {
        (instance(&a, &id).await["tcp_in"] == 0).then_some(())
    })
    .await;
    let (status, history) = call(
        &a,
        Method::GET,
        &format!("/v1/instances/{id}/traffic"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let totals = history["data"]["total"]["tcprx"].as_array().unwrap();
    assert_eq!(
        totals.iter().rev().find(|v| !v.is_null()),
        Some(&json!(0)),
        "the reset sample B stored: {history}"
    );

    // B is killed: A reports it down and keeps its instance on B.
    drop(b);
    until("B down on A", async || {
        (node_health(&a, "B").await.as_deref() == Some("down")).then_some(())
    })
    .await;
    assert_eq!(node_health(&a, "C").await.as_deref(), Some("up"));
    assert_eq!(instance(&a, &id).await["node"], "B");

    a.stop();
    c.stop();
}
