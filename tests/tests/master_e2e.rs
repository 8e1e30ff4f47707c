//! The `nodepass` executable as a master, driven over HTTP like a frontend would: a server and
//! a client instance form a tunnel, traffic shows in GET and in SSE `stats`, every control
//! action works, a master restart brings everything back, and every protected endpoint wants
//! the key.
//!
//! The server's ports are picked with [`free_ports`] (bind 127.0.0.1:0, close, reuse): the
//! client's URL must name the server's tunnel port before the client exists, and the same ports
//! must come back after the master restarts.

mod master_support;

use std::time::Duration;

use http::{Method, StatusCode};
use master_support::{
    DEADLINE, MasterProcess, Sse, echo_server, echo_through, free_ports, payload, temp_dir,
};
use serde_json::{Value, json};

const KEY: &str = "e2e-master-key-5f0c9a";
const SECRET: &str = "e2e-tunnel-secret-77aa";

/// Create (which starts the instance at once, without waiting) and return the instance once it
/// left `starting`.
async fn create(master: &MasterProcess, body: Value) -> Value {
    let created = master
        .req(Method::POST, "/v1/instances")
        .header("x-api-key", KEY)
        .json(&body.to_string())
        .send()
        .await
        .data(StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_string();
    wait_for(master, &id, "left starting", |v| v["status"] != "starting").await
}

async fn get(master: &MasterProcess, id: &str) -> Value {
    master
        .req(Method::GET, &format!("/v1/instances/{id}"))
        .header("x-api-key", KEY)
        .send()
        .await
        .data(StatusCode::OK)
}

async fn put_action(master: &MasterProcess, id: &str, action: &str) -> Value {
    master
        .req(Method::PUT, &format!("/v1/instances/{id}"))
        .header("authorization", &format!("Bearer {KEY}"))
        .json(&json!({ "action": action }).to_string())
        .send()
        .await
        .data(StatusCode::OK)
}

/// Poll `id` until `pred` holds (bounded).
async fn wait_for(
    master: &MasterProcess,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let v = get(master, id).await;
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Push `data` through the tunnel until it comes back intact (the client may still be
/// connecting).
async fn traffic(users: std::net::SocketAddr, data: &[u8]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if echo_through(users, data).await.as_deref() == Some(data) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tunnel never carried the payload"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn counter(v: &Value, name: &str) -> u64 {
    v[name].as_u64().unwrap_or_else(|| panic!("{name} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_managed_over_the_api_survives_a_master_restart() {
    let dir = temp_dir("master-e2e");
    let state = dir.path().join("state.db");
    let env = [("NODEPASS_API_KEY", KEY)];
    let master = MasterProcess::start(&state, &env);
    let echo = echo_server().await;
    let [tunnel_port, users_port] = free_ports();
    let users: std::net::SocketAddr = format!("127.0.0.1:{users_port}").parse().unwrap();

    let server = create(
        &master,
        json!({
            "url": format!("server://{SECRET}@127.0.0.1:{tunnel_port}/127.0.0.1:{users_port}?mode=1"),
            "alias": "e2e-server",
            "restart": true,
            "meta": {"peer": {"sid": "c1", "type": "client", "alias": "e2e-client"}, "tags": {"suite": "e2e"}},
        }),
    )
    .await;
    let server_id = server["id"].as_str().unwrap().to_string();
    assert_eq!(server["status"], "running", "{server}");
    assert_eq!(
        server["local_addrs"]["tunnel"],
        format!("127.0.0.1:{tunnel_port}")
    );
    let client = create(
        &master,
        json!({
            "url": format!("client://{SECRET}@127.0.0.1:{tunnel_port}/{echo}?mode=2"),
            "alias": "e2e-client",
            "restart": true,
        }),
    )
    .await;
    let client_id = client["id"].as_str().unwrap().to_string();

    // Watch events while traffic flows.
    let events = master
        .req(Method::GET, "/v1/events")
        .header("x-api-key", KEY)
        .open()
        .await;
    assert_eq!(events.status(), StatusCode::OK);
    let mut sse = Sse::new(events);

    let data = payload(256 * 1024, 7);
    traffic(users, &data).await;
    let len = data.len() as u64;
    let s = wait_for(&master, &server_id, "counted the traffic", |v| {
        counter(v, "tcp_in") >= len && counter(v, "tcp_out") >= len
    })
    .await;
    assert_eq!(s["status"], "running");
    let c = wait_for(&master, &client_id, "counted the traffic", |v| {
        counter(v, "tcp_in") >= len && counter(v, "tcp_out") >= len
    })
    .await;
    assert_eq!(c["status"], "running");
    assert_eq!(c["type"], "client");

    // The periodic stats event shows the same growth.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stats event showed the traffic"
        );
        let (event, data) = sse.next_event().await.expect("the stream stays open");
        assert!(!data.to_string().contains(SECRET), "{data}");
        if event == "stats"
            && data["instance"]["id"] == server_id.as_str()
            && counter(&data["instance"], "tcp_in") >= len
        {
            break;
        }
    }
    drop(sse);

    // Control actions answer once done.
    assert_eq!(
        put_action(&master, &client_id, "stop").await["status"],
        "stopped"
    );
    assert_eq!(
        put_action(&master, &client_id, "start").await["status"],
        "running"
    );
    assert_eq!(
        put_action(&master, &client_id, "restart").await["status"],
        "running"
    );
    let reset = put_action(&master, &server_id, "reset").await;
    assert_eq!(
        (counter(&reset, "tcp_in"), counter(&reset, "tcp_out")),
        (0, 0)
    );
    traffic(users, b"after the restart of the client").await;
    let client_total = counter(&get(&master, &client_id).await, "tcp_in");
    assert!(client_total > len);

    // Restart the master: same ids, alias, meta, policy; running again; totals kept.
    let log = master.stop();
    let master = MasterProcess::start(&state, &env);
    let list = master
        .req(Method::GET, "/v1/instances")
        .header("x-api-key", KEY)
        .send()
        .await
        .data(StatusCode::OK);
    let ids: Vec<&str> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [server_id.as_str(), client_id.as_str()]);
    let s = wait_for(&master, &server_id, "ran again", |v| {
        v["status"] == "running"
    })
    .await;
    assert_eq!(s["alias"], "e2e-server");
    assert_eq!(s["restart"], true);
    assert_eq!(s["meta"]["tags"]["suite"], "e2e");
    assert_eq!(s["meta"]["peer"]["alias"], "e2e-client");
    assert_eq!(s["created_at"], server["created_at"]);
    let c = wait_for(&master, &client_id, "ran again", |v| {
        v["status"] == "running"
    })
    .await;
    assert!(
        counter(&c, "tcp_in") >= client_total,
        "totals survive a restart: {c}"
    );
    traffic(users, &payload(4096, 9)).await;

    // Delete both.
    for id in [&server_id, &client_id] {
        let res = master
            .req(Method::DELETE, &format!("/v1/instances/{id}"))
            .header("x-api-key", KEY)
            .send()
            .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text());
    }
    let list = master
        .req(Method::GET, "/v1/instances")
        .header("x-api-key", KEY)
        .send()
        .await
        .data(StatusCode::OK);
    assert_eq!(list["instances"], json!([]));
    assert!(
        echo_through(users, b"x").await.is_none(),
        "the server is gone"
    );

    let log2 = master.stop();
    for line in log.iter().chain(&log2) {
        assert!(
            !line.contains(KEY) && !line.contains(SECRET),
            "secret in the log: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protected_endpoint_of_the_executable_wants_the_key() {
    let dir = temp_dir("master-e2e-auth");
    let master = MasterProcess::start(&dir.path().join("state.db"), &[("NODEPASS_API_KEY", KEY)]);
    let id = create(
        &master,
        json!({"url": format!("server://{SECRET}@127.0.0.1:0/127.0.0.1:0")}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = master
        .req(Method::GET, "/v1/openapi.json")
        .send()
        .await
        .json();
    let before = get(&master, &id).await;
    let mut protected = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", &id).replace("{file}", "index.html");
        for (method, op) in item.as_object().unwrap() {
            if op["security"] == json!([{}]) {
                continue;
            }
            protected += 1;
            let method: Method = method.to_uppercase().parse().unwrap();
            for key in [None, Some("wrong"), Some("")] {
                let mut req = master.req(method.clone(), &concrete).json("{}");
                if let Some(key) = key {
                    req = req.header("x-api-key", key);
                }
                let res = req.send().await;
                assert_eq!(
                    res.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {key:?}"
                );
                assert_eq!(res.json()["error"]["code"], "UNAUTHORIZED");
            }
        }
    }
    assert_eq!(
        protected, 16,
        "14 + the traffic history (issue 14) + the nodes (issue 18)"
    );
    // Nothing was changed by the refused requests (the key still works, the instance is there).
    let after = get(&master, &id).await;
    for field in ["url", "alias", "restart", "meta", "updated_at"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    master.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_key_is_printed_once_and_kept() {
    let dir = temp_dir("master-e2e-key");
    let state = dir.path().join("state.db");
    let master = MasterProcess::start(&state, &[]);
    let log = master.log();
    let printed: Vec<&String> = log.iter().filter(|l| l.contains("new API key")).collect();
    assert_eq!(printed.len(), 1, "{log:?}");
    let key = printed[0].rsplit(' ').next().unwrap().to_string();
    assert_eq!(key.len(), 64, "{key}");
    let res = master
        .req(Method::GET, "/v1/info")
        .header("x-api-key", &key)
        .send()
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let log = master.stop();

    let master = MasterProcess::start(&state, &[]);
    let res = master
        .req(Method::GET, "/v1/info")
        .header("x-api-key", &key)
        .send()
        .await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "the stored key works after a restart"
    );
    let log2 = master.stop();
    let mentions = log.iter().chain(&log2).filter(|l| l.contains(&key)).count();
    assert_eq!(mentions, 1, "shown once, never again");
}
