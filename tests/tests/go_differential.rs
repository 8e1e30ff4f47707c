//! Differential test against the reference: the Go NodePass v1.14 master
//! (`../shared/peers/nodepass-go`) and ours (the `nodepass` executable, default dialect
//! `api=nodepass`) get the same requests — list, create (server and client), get, every PATCH
//! (alias, restart, meta, each action, an unknown action, an empty body), PUT {url}, info, events,
//! tcping, CORS preflights, errors, delete, the key rotation — and their answers are compared:
//! status codes, content types, JSON shapes, field names and JSON types (never values such as
//! ids, times or counters). Every field the Go master sends must be present in ours with the
//! same JSON type (integers stay integers); ours may add fields.
//!
//! Mismatches are collected and reported together, one line each, so a run names every
//! difference at once. Deliberate differences (docs/api.md) are not compared here but checked
//! for our side alone: `PUT {"action"}` keeps working (the Go master refuses it), and tunnel keys
//! are masked in our answers.
//!
//! Tunnels use loopback only. Needs `../shared/peers/nodepass-go` (fails under `CI=true` when
//! missing, skips with a note otherwise).

mod master_support;
mod peer_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http::{Method, StatusCode};
use master_support::{
    DEADLINE, MasterProcess, Res, Sse, echo_server, echo_through, free_ports, payload, request,
    temp_dir,
};
use peer_support::GoMaster;
use serde_json::{Value, json};

const OUR_KEY: &str = "differential-master-key-93ab";
const TUNNEL_KEY: &str = "differential-tunnel-secret";

/// One master under test: where it is, its key, and the per-side values (ports, ids) that
/// request templates name as `{name}`.
struct Side {
    name: &'static str,
    addr: std::net::SocketAddr,
    key: String,
    vars: BTreeMap<String, String>,
}

impl Side {
    fn fill(&self, template: &str) -> String {
        let mut s = template.to_string();
        for (k, v) in &self.vars {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }

    async fn send(&self, method: Method, path: &str, body: Option<&str>, auth: bool) -> Res {
        let mut req = request(self.addr, method, &format!("/api{}", self.fill(path)));
        if auth {
            req = req.header("x-api-key", &self.key);
        }
        if let Some(body) = body {
            req = req.json(&self.fill(body));
        }
        req.send().await
    }

    async fn get(&self, path: &str) -> Value {
        let res = self.send(Method::GET, path, None, true).await;
        assert_eq!(
            res.status,
            StatusCode::OK,
            "{}: GET {path}: {}",
            self.name,
            res.text()
        );
        res.json()
    }
}

/// The JSON type of `v`, integers told apart from other numbers.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field of `go` must be in `ours` with the same JSON type (recursively); ours may add.
fn same_shape(at: &str, go: &Value, ours: &Value, out: &mut Vec<String>) {
    if kind(go) != kind(ours) {
        out.push(format!(
            "{at}: Go sends {} ({go}), ours {} ({ours})",
            kind(go),
            kind(ours)
        ));
        return;
    }
    match (go, ours) {
        (Value::Object(g), Value::Object(o)) => {
            for (k, gv) in g {
                match o.get(k) {
                    Some(ov) => same_shape(&format!("{at}.{k}"), gv, ov, out),
                    None => out.push(format!("{at}: field `{k}` missing in ours")),
                }
            }
        }
        (Value::Array(g), Value::Array(o)) => {
            if g.len() != o.len() {
                out.push(format!(
                    "{at}: Go lists {} items, ours {}",
                    g.len(),
                    o.len()
                ));
            }
            for (i, (gv, ov)) in g.iter().zip(o).enumerate() {
                same_shape(&format!("{at}[{i}]"), gv, ov, out);
            }
        }
        _ => {}
    }
}

fn content_type(res: &Res) -> String {
    res.headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Status, content type and (for JSON) shape of the two answers to one request.
fn compare(label: &str, go: &Res, ours: &Res, out: &mut Vec<String>) {
    if go.status != ours.status {
        out.push(format!(
            "{label}: status Go {} ours {} (ours said {})",
            go.status,
            ours.status,
            ours.text().chars().take(200).collect::<String>()
        ));
        return;
    }
    let (gct, oct) = (content_type(go), content_type(ours));
    if gct != oct {
        out.push(format!("{label}: content-type Go {gct:?} ours {oct:?}"));
    }
    if go.body.is_empty() != ours.body.is_empty() {
        out.push(format!(
            "{label}: Go body {} bytes, ours {} bytes",
            go.body.len(),
            ours.body.len()
        ));
    }
    if gct == "application/json" && !go.body.is_empty() {
        match serde_json::from_slice::<Value>(&ours.body) {
            Ok(o) => same_shape(label, &go.json(), &o, out),
            Err(e) => out.push(format!("{label}: ours is not JSON ({e}): {}", ours.text())),
        }
    }
}

/// Send the same request to both and compare; the two answers for further checks.
async fn both(
    sides: &[Side; 2],
    out: &mut Vec<String>,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (Res, Res) {
    let label = format!(
        "{method} {path}{}",
        body.map(|b| format!(" {b}")).unwrap_or_default()
    );
    let go = sides[0].send(method.clone(), path, body, true).await;
    let ours = sides[1].send(method, path, body, true).await;
    compare(&label, &go, &ours, out);
    (go, ours)
}

/// Poll `GET /instances/{id}` on one side until `status` is `want` (bounded).
async fn wait_status(side: &Side, id_var: &str, want: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let path = format!("/v1/instances/{{{id_var}}}");
    loop {
        let res = side.send(Method::GET, &path, None, true).await;
        let status = serde_json::from_slice::<Value>(&res.body)
            .ok()
            .and_then(|v| v.get("status").cloned());
        if status.as_ref().and_then(Value::as_str) == Some(want) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{}: {id_var} never `{want}` (last {} {})",
                side.name,
                res.status,
                res.text()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The comma-separated tokens of a response header, lower-cased.
fn tokens(res: &Res, name: &str) -> BTreeSet<String> {
    res.headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Remove ANSI colour sequences (the Go master colours its level names).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `2026-12-01 16:08:52.687 INFO message` (NodePass's log line).
fn nodepass_log_line(line: &str) -> bool {
    let line = strip_ansi(line);
    let b = line.as_bytes();
    line.len() > 25
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b' '
        && line[24..]
            .trim_start()
            .split(' ')
            .next()
            .is_some_and(|l| ["DEBUG", "INFO", "WARN", "ERROR", "EVENT"].contains(&l))
}

/// Read events until `stop` says so or `limit` events (bounded in time too).
async fn collect(
    sse: &mut Sse,
    limit: usize,
    stop: impl Fn(&Value) -> bool,
) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while got.len() < limit && tokio::time::Instant::now() < deadline {
        let Ok(Some((event, data))) =
            tokio::time::timeout(Duration::from_secs(10), sse.next_event()).await
        else {
            break;
        };
        let done = stop(&data);
        got.push((event, data));
        if done {
            break;
        }
    }
    got
}

async fn open_events(side: &Side) -> (Res, Option<Sse>) {
    let res = request(side.addr, Method::GET, "/api/v1/events")
        .header("x-api-key", &side.key)
        .header("accept", "text/event-stream")
        .header("cache-control", "no-cache")
        .open()
        .await;
    let head = Res {
        status: res.status(),
        headers: res.headers().clone(),
        body: bytes::Bytes::new(),
    };
    let sse = (res.status() == StatusCode::OK).then(|| Sse::new(res));
    (head, sse)
}

/// Compare two event streams: event names, each event type's data shape, log line format.
fn compare_events(
    at: &str,
    go: &[(String, Value)],
    ours: &[(String, Value)],
    out: &mut Vec<String>,
) {
    let mut first_of: [BTreeMap<String, Value>; 2] = Default::default();
    for (i, events) in [go, ours].into_iter().enumerate() {
        for (name, data) in events {
            if name != "instance" {
                out.push(format!("{at}: {} sends `event: {name}`", ["Go", "ours"][i]));
            }
            let ty = data["type"].as_str().unwrap_or("<none>").to_string();
            if ty == "log" {
                let line = data["logs"].as_str().unwrap_or("");
                if i == 1 && !nodepass_log_line(line) {
                    out.push(format!(
                        "{at}: our log event is not a NodePass log line: {line:?}"
                    ));
                }
            }
            // The key's pseudo-instance and real instances have different values (tags...):
            // compare like with like.
            let who = if data["instance"]["id"] == "********" {
                "key"
            } else {
                "instance"
            };
            first_of[i]
                .entry(format!("{ty} ({who})"))
                .or_insert_with(|| data.clone());
        }
    }
    for (ty, g) in &first_of[0] {
        match first_of[1].get(ty) {
            Some(o) => same_shape(&format!("{at} type={ty}"), g, o, out),
            None => out.push(format!("{at}: Go sent a `{ty}` event, ours did not")),
        }
    }
    // Ours lists the key's pseudo-instance first in the initial events (the Go master does
    // too, most of the time: its order comes from a Go map).
    let first = ours.first().map(|(_, d)| d["instance"]["id"].clone());
    if !ours.is_empty() && first != Some(json!("********")) {
        out.push(format!(
            "{at}: our first event is not the key's: {:?}",
            ours.first()
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_master_answers_like_the_go_master() {
    let Some(go) = GoMaster::start("info") else {
        return;
    };
    let dir = temp_dir("differential");
    let master = MasterProcess::start_with(
        &dir.path().join("state.db"),
        "",
        &[("NODEPASS_API_KEY", OUR_KEY)],
    );
    let echo = echo_server().await;
    let mut out: Vec<String> = Vec::new();

    let mut sides = [
        Side {
            name: "Go",
            addr: go.addr,
            key: go.key.clone(),
            vars: BTreeMap::new(),
        },
        Side {
            name: "ours",
            addr: master.addr,
            key: OUR_KEY.to_string(),
            vars: BTreeMap::new(),
        },
    ];
    // Both sides' ports chosen together: one after the other, two could come out equal (a Go
    // client listening on its server's tunnel port failed this test once in CI).
    let ports = free_ports::<8>();
    for (side, ports) in sides.iter_mut().zip(ports.chunks(4)) {
        for (var, port) in ["T", "U", "T2", "CLOSED"].into_iter().zip(ports) {
            side.vars.insert(var.into(), port.to_string());
        }
        side.vars.insert("ECHO".into(), echo.port().to_string());
        side.vars.insert("TK".into(), TUNNEL_KEY.into());
    }

    // --- The event streams, opened first so they see everything. -----------------------
    let (go_head, go_sse) = open_events(&sides[0]).await;
    let (our_head, our_sse) = open_events(&sides[1]).await;
    if go_head.status != our_head.status || content_type(&go_head) != content_type(&our_head) {
        out.push(format!(
            "GET /v1/events: Go {} {:?}, ours {} {:?}",
            go_head.status,
            content_type(&go_head),
            our_head.status,
            content_type(&our_head)
        ));
    }
    let (mut go_sse, mut our_sse) = (go_sse.expect("Go event stream"), our_sse);
    let go_initial = collect(&mut go_sse, 1, |_| true).await;
    let our_initial = match our_sse.as_mut() {
        Some(sse) => collect(sse, 1, |_| true).await,
        None => Vec::new(),
    };
    compare_events(
        "initial events (no instances)",
        &go_initial,
        &our_initial,
        &mut out,
    );

    // --- List, create, get. ---------------------------------------------------------------
    both(&sides, &mut out, Method::GET, "/v1/instances", None).await;
    let server_body =
        r#"{"url":"server://{TK}@127.0.0.1:{T}/127.0.0.1:{ECHO}?log=info","alias":"srv"}"#;
    let (g, o) = both(
        &sides,
        &mut out,
        Method::POST,
        "/v1/instances",
        Some(server_body),
    )
    .await;
    let client_body = r#"{"url":"client://{TK}@127.0.0.1:{T}/127.0.0.1:{U}?log=info"}"#;
    let (gc, oc) = both(
        &sides,
        &mut out,
        Method::POST,
        "/v1/instances",
        Some(client_body),
    )
    .await;
    for (side, (s, c)) in sides.iter_mut().zip([(g, gc), (o, oc)]) {
        for (var, res) in [("srv", s), ("cli", c)] {
            let id = serde_json::from_slice::<Value>(&res.body)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_string));
            match id {
                Some(id) => {
                    side.vars.insert(var.into(), id);
                }
                None => panic!(
                    "{}: create {var} gave no id ({} {}); differences so far:\n{}",
                    side.name,
                    res.status,
                    res.text(),
                    out.join("\n")
                ),
            }
        }
    }
    // Create starts: both run without anyone asking.
    for side in &sides {
        for id in ["srv", "cli"] {
            if let Err(e) = wait_status(side, id, "running").await {
                out.push(format!("create starts: {e}"));
            }
        }
    }
    // Traffic flows on both (the shapes of the counters are compared below).
    for side in &sides {
        let users: std::net::SocketAddr = format!("127.0.0.1:{}", side.vars["U"]).parse().unwrap();
        let data = payload(64 * 1024, 7);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if echo_through(users, &data).await.as_deref() == Some(&data[..]) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                // Only ours is under test: the Go pair is the reference for shapes, and under
                // load it is sometimes slow to form its tunnel.
                if side.name == "Go" {
                    eprintln!("note: no traffic through the Go client within the deadline");
                } else {
                    out.push(format!("{}: no traffic through the client", side.name));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    both(&sides, &mut out, Method::GET, "/v1/instances", None).await;
    both(&sides, &mut out, Method::GET, "/v1/instances/{srv}", None).await;
    both(&sides, &mut out, Method::GET, "/v1/instances/{cli}", None).await;
    // Tunnel keys stay masked in our answers (deliberate: docs/api.md).
    let listed = sides[1]
        .send(Method::GET, "/v1/instances", None, true)
        .await;
    if listed.text().contains(TUNNEL_KEY) {
        out.push("ours: the tunnel key appears in GET /v1/instances".into());
    }

    // --- PATCH: every field and action. ----------------------------------------------------
    for body in [
        r#"{"alias":"renamed"}"#,
        r#"{"restart":false}"#,
        r#"{"meta":{"peer":{"sid":"s-1","type":"1","alias":"peer"},"tags":{"env":"test","team":"a"}}}"#,
        r#"{"action":"stop"}"#,
        r#"{"action":"start"}"#,
        r#"{"action":"restart"}"#,
        r#"{"action":"bogus"}"#,
        r#"{}"#,
    ] {
        both(
            &sides,
            &mut out,
            Method::PATCH,
            "/v1/instances/{srv}",
            Some(body),
        )
        .await;
        // Each action settles before the next: the Go master answers `start` or `restart`
        // while its previous listener may still hold the port, and then ends in `error`
        // (its own race, seen in CI), which is not what this test compares.
        let settled = match body {
            r#"{"action":"stop"}"# => "stopped",
            r#"{"action":"start"}"# | r#"{"action":"restart"}"# => "running",
            _ => continue,
        };
        for side in &sides {
            let mut settled_now = wait_status(side, "srv", settled).await;
            // The Go master can still end a start in `error` when its stopped child had not
            // yet let go of the port (its race, seen in CI even after `stopped`): the Go side
            // alone gets the same request once more. Ours never does.
            if settled_now.is_err() && side.name == "Go" && settled == "running" {
                eprintln!(
                    "note: the Go master did not reach `running` after {body}; asking it once more"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
                side.send(Method::PATCH, "/v1/instances/{srv}", Some(body), true)
                    .await;
                settled_now = wait_status(side, "srv", settled).await;
            }
            if let Err(e) = settled_now {
                out.push(format!("after PATCH {body}: {e}"));
            }
        }
    }
    let (g, o) = both(&sides, &mut out, Method::GET, "/v1/instances/{srv}", None).await;
    for (side, res) in sides.iter().zip([g, o]) {
        let v: Value = serde_json::from_slice(&res.body).unwrap_or_default();
        if v["alias"] != "renamed" || v["restart"] != false || v["meta"]["tags"]["team"] != "a" {
            out.push(format!(
                "{}: PATCH alias/restart/meta not kept: {v}",
                side.name
            ));
        }
    }

    // --- PUT {url}, and the errors. -------------------------------------------------------
    let put = r#"{"url":"server://{TK}@127.0.0.1:{T2}/127.0.0.1:{ECHO}?log=info"}"#;
    both(
        &sides,
        &mut out,
        Method::PUT,
        "/v1/instances/{srv}",
        Some(put),
    )
    .await;
    both(
        &sides,
        &mut out,
        Method::PUT,
        "/v1/instances/{srv}",
        Some("{}"),
    )
    .await;
    // Deliberate difference: the API reference's `PUT {"action"}` keeps working here.
    let res = sides[1]
        .send(
            Method::PUT,
            "/v1/instances/{cli}",
            Some(r#"{"action":"restart"}"#),
            true,
        )
        .await;
    if res.status != StatusCode::OK {
        out.push(format!(
            "ours: PUT {{\"action\"}} answered {}: {}",
            res.status,
            res.text()
        ));
    }

    // --- info, tcping. -------------------------------------------------------------------
    both(&sides, &mut out, Method::GET, "/v1/info", None).await;
    both(
        &sides,
        &mut out,
        Method::POST,
        "/v1/info",
        Some(r#"{"alias":"differential"}"#),
    )
    .await;
    both(
        &sides,
        &mut out,
        Method::PUT,
        "/v1/info",
        Some(r#"{"alias":"x"}"#),
    )
    .await;
    both(
        &sides,
        &mut out,
        Method::GET,
        "/v1/tcping?target=127.0.0.1:{ECHO}",
        None,
    )
    .await;
    both(
        &sides,
        &mut out,
        Method::GET,
        "/v1/tcping?target=127.0.0.1:{CLOSED}",
        None,
    )
    .await;
    both(&sides, &mut out, Method::GET, "/v1/tcping?target=", None).await;
    both(&sides, &mut out, Method::GET, "/v1/tcping", None).await;
    let info = sides[1].get("/v1/info").await;
    let ver = info["ver"].as_str().unwrap_or("");
    let level: Vec<u32> = ver
        .trim_start_matches('v')
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    if level.len() != 3 || (level[0], level[1]) < (1, 10) {
        out.push(format!(
            "ours: /info ver {ver:?} is not a NodePass API level >= v1.10.0"
        ));
    }
    if !["amd64", "arm64", "386", "arm"].contains(&info["arch"].as_str().unwrap_or("")) {
        out.push(format!(
            "ours: /info arch {} is not a Go name",
            info["arch"]
        ));
    }

    // --- Errors. --------------------------------------------------------------------------
    both(
        &sides,
        &mut out,
        Method::GET,
        "/v1/instances/nonexistent",
        None,
    )
    .await;
    both(&sides, &mut out, Method::POST, "/v1/instances", Some("{}")).await;
    both(
        &sides,
        &mut out,
        Method::POST,
        "/v1/instances",
        Some(r#"{"url":"bogus"}"#),
    )
    .await;
    both(&sides, &mut out, Method::POST, "/v1/instances", Some("{")).await;
    both(&sides, &mut out, Method::DELETE, "/v1/instances", None).await;
    both(
        &sides,
        &mut out,
        Method::DELETE,
        "/v1/instances/********",
        None,
    )
    .await;
    for (label, key) in [("no key", None), ("wrong key", Some("not-the-key"))] {
        let mut res = Vec::new();
        for side in &sides {
            let mut req = request(side.addr, Method::GET, "/api/v1/instances");
            if let Some(key) = key {
                req = req.header("x-api-key", key);
            }
            res.push(req.send().await);
        }
        compare(
            &format!("GET /v1/instances with {label}"),
            &res[0],
            &res[1],
            &mut out,
        );
    }
    // Every error is `{"error": "..."}`.
    let res = sides[1]
        .send(Method::GET, "/v1/instances/nonexistent", None, true)
        .await;
    if serde_json::from_slice::<Value>(&res.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::len))
        .unwrap_or(0)
        == 0
    {
        out.push(format!(
            "ours: 404 is not {{\"error\": message}}: {}",
            res.text()
        ));
    }

    // --- CORS: preflights answered before the key check, and headers on answers. ----------
    for path in [
        "/api/v1/instances",
        "/api/v1/instances/abc",
        "/api/v1/events",
        "/api/v1/info",
    ] {
        let mut res = Vec::new();
        for side in &sides {
            res.push(
                request(side.addr, Method::OPTIONS, path)
                    .header("origin", "http://127.0.0.1:21110")
                    .header("access-control-request-method", "PATCH")
                    .header(
                        "access-control-request-headers",
                        "content-type,x-api-key,cache-control",
                    )
                    .send()
                    .await,
            );
        }
        let label = format!("OPTIONS {path}");
        if !res[1].status.is_success() || res[0].status.is_success() != res[1].status.is_success() {
            out.push(format!(
                "{label}: Go {}, ours {}",
                res[0].status, res[1].status
            ));
        }
        for header in [
            "access-control-allow-methods",
            "access-control-allow-headers",
        ] {
            let (g, o) = (tokens(&res[0], header), tokens(&res[1], header));
            let lacking: Vec<_> = g.difference(&o).collect();
            if !lacking.is_empty() {
                out.push(format!("{label}: {header} lacks {lacking:?} (ours {o:?})"));
            }
        }
        if res[1].headers.get("access-control-allow-origin").is_none() {
            out.push(format!("{label}: ours has no access-control-allow-origin"));
        }
    }
    for side in &sides {
        let res = request(side.addr, Method::GET, "/api/v1/instances")
            .header("origin", "http://127.0.0.1:21110")
            .header("x-api-key", &side.key)
            .send()
            .await;
        if res.headers.get("access-control-allow-origin").is_none() {
            out.push(format!(
                "{}: GET with Origin has no access-control-allow-origin",
                side.name
            ));
        }
    }

    // --- Delete. --------------------------------------------------------------------------
    both(
        &sides,
        &mut out,
        Method::DELETE,
        "/v1/instances/{cli}",
        None,
    )
    .await;
    both(
        &sides,
        &mut out,
        Method::DELETE,
        "/v1/instances/{cli}",
        None,
    )
    .await;
    both(&sides, &mut out, Method::GET, "/v1/instances/{cli}", None).await;

    // --- The events of all of the above. ---------------------------------------------------
    let is_cli_delete = |side: usize, sides: &[Side; 2]| {
        let id = sides[side].vars["cli"].clone();
        move |d: &Value| d["type"] == "delete" && d["instance"]["id"] == id.as_str()
    };
    let go_events = collect(&mut go_sse, 400, is_cli_delete(0, &sides)).await;
    let our_events = match our_sse.as_mut() {
        Some(sse) => collect(sse, 400, is_cli_delete(1, &sides)).await,
        None => Vec::new(),
    };
    let types = |ev: &[(String, Value)]| -> BTreeSet<String> {
        ev.iter()
            .filter_map(|(_, d)| d["type"].as_str().map(str::to_string))
            .collect()
    };
    eprintln!(
        "events: Go {} {:?}, ours {} {:?}",
        go_events.len(),
        types(&go_events),
        our_events.len(),
        types(&our_events)
    );
    let mut go_all = go_initial.clone();
    go_all.extend(go_events);
    let mut our_all = our_initial.clone();
    our_all.extend(our_events);
    compare_events("events", &go_all, &our_all, &mut out);
    if our_all
        .iter()
        .any(|(_, d)| d.to_string().contains(TUNNEL_KEY))
    {
        out.push("ours: the tunnel key appears in an event".into());
    }

    // A fresh stream's initial events: the key first, then every instance.
    let (_, go_sse2) = open_events(&sides[0]).await;
    let (_, our_sse2) = open_events(&sides[1]).await;
    let go_init2 = collect(&mut go_sse2.unwrap(), 2, |_| false).await;
    let our_init2 = match our_sse2 {
        Some(mut sse) => collect(&mut sse, 2, |_| false).await,
        None => Vec::new(),
    };
    compare_events(
        "initial events (one instance)",
        &go_init2,
        &our_init2,
        &mut out,
    );

    both(
        &sides,
        &mut out,
        Method::DELETE,
        "/v1/instances/{srv}",
        None,
    )
    .await;

    drop(go);
    master.stop();
    assert!(
        out.is_empty(),
        "{} differences from the Go master:\n{}",
        out.len(),
        out.join("\n")
    );
}

/// The key's pseudo-instance: `PATCH /instances/******** {"action":"restart"}` rotates the key and
/// returns the new one once in `url`; the old key stops working. And the two documents
/// (`openapi.json`, `docs`) answer alike. Kept apart from the main comparison so that a
/// difference here is named by its own test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_and_documents_answer_like_the_go_master() {
    let Some(go) = GoMaster::start("info") else {
        return;
    };
    let dir = temp_dir("differential-key");
    // A key set by NODEPASS_API_KEY cannot be rotated (a deliberate difference: the next start
    // would bring the old key back). The Go master's key is a stored one: so is ours once a
    // master started with the variable has stored its digest and the next starts without it.
    let state = dir.path().join("state.db");
    MasterProcess::start_with(&state, "", &[("NODEPASS_API_KEY", OUR_KEY)]).stop();
    let master = MasterProcess::start_with(&state, "", &[]);
    let mut out: Vec<String> = Vec::new();
    let mut sides = [
        Side {
            name: "Go",
            addr: go.addr,
            key: go.key.clone(),
            vars: BTreeMap::new(),
        },
        Side {
            name: "ours",
            addr: master.addr,
            key: OUR_KEY.to_string(),
            vars: BTreeMap::new(),
        },
    ];
    // Event streams opened before the rotation: it goes out as an `update` of the key's
    // pseudo-instance on both (ours keeps the key masked and the stream open).
    let mut streams = Vec::new();
    for side in &sides {
        let (head, sse) = open_events(side).await;
        if sse.is_none() {
            out.push(format!("{}: events answered {}", side.name, head.status));
        }
        streams.push(sse);
    }

    // --- The key as pseudo-instance: rotation returns the new key once. --------------------
    let (g, o) = both(
        &sides,
        &mut out,
        Method::PATCH,
        "/v1/instances/********",
        Some(r#"{"action":"restart"}"#),
    )
    .await;
    for (i, res) in [g, o].into_iter().enumerate() {
        let new_key = serde_json::from_slice::<Value>(&res.body)
            .ok()
            .and_then(|v| v["url"].as_str().map(str::to_string));
        let side = &mut sides[i];
        let Some(new_key) = new_key.filter(|k| !k.is_empty() && *k != side.key) else {
            out.push(format!(
                "{}: key rotation gave no new key: {}",
                side.name,
                res.text()
            ));
            continue;
        };
        let old = side.send(Method::GET, "/v1/instances", None, true).await;
        if old.status != StatusCode::UNAUTHORIZED {
            out.push(format!(
                "{}: the old key still works after rotation ({})",
                side.name, old.status
            ));
        }
        side.key = new_key;
        let new = side.send(Method::GET, "/v1/instances", None, true).await;
        if new.status != StatusCode::OK {
            out.push(format!(
                "{}: the new key does not work ({})",
                side.name, new.status
            ));
        }
    }

    let is_key_update = |d: &Value| d["type"] == "update" && d["instance"]["id"] == "********";
    let mut seen = Vec::new();
    for (side, sse) in sides.iter().zip(streams.iter_mut()) {
        let events = match sse {
            Some(sse) => collect(sse, 50, is_key_update).await,
            None => Vec::new(),
        };
        let updated = events.iter().any(|(_, d)| is_key_update(d));
        // The Go master sends the update and then `shutdown` to every stream; now and then the
        // shutdown closes its stream before the update is written (seen in CI-like runs). That
        // is the reference's race, not a difference of ours: note it and compare what was
        // seen without the shutdown (ours deliberately keeps streams open: docs/api.md).
        if !updated && side.name == "Go" {
            eprintln!("note: the Go master's stream ended before its rotation update: {events:?}");
        } else if !updated {
            out.push(format!(
                "{}: no update of ******** after the key rotation: {events:?}",
                side.name
            ));
        }
        let events: Vec<_> = events
            .into_iter()
            .filter(|(_, d)| d["type"] != "shutdown")
            .collect();
        seen.push(events);
    }
    if seen[0].iter().any(|(_, d)| is_key_update(d)) {
        compare_events("events around a key rotation", &seen[0], &seen[1], &mut out);
    }
    if let Some((_, ours)) = seen[1].iter().find(|(_, d)| is_key_update(d))
        && ours["instance"]["url"] != "********"
    {
        out.push(format!("ours: the rotation's update shows a key: {ours}"));
    }

    // --- The documents. -------------------------------------------------------------------
    for path in ["/api/v1/openapi.json", "/api/v1/docs"] {
        let mut res = Vec::new();
        for side in &sides {
            let mut answer = request(side.addr, Method::GET, path).send().await;
            // Ours redirects `/v1/docs` to `/v1/docs/index.html` (its files load relative to
            // that page; a documented difference): follow one redirect within the prefix.
            if answer.status == StatusCode::PERMANENT_REDIRECT {
                let location = answer.headers[http::header::LOCATION].to_str().unwrap();
                assert!(location.starts_with("/api/v1/docs/"), "{location}");
                answer = request(side.addr, Method::GET, location).send().await;
            }
            res.push(answer);
        }
        if res[0].status != res[1].status || content_type(&res[0]) != content_type(&res[1]) {
            out.push(format!(
                "GET {path}: Go {} {:?}, ours {} {:?}",
                res[0].status,
                content_type(&res[0]),
                res[1].status,
                content_type(&res[1])
            ));
        }
    }

    drop(go);
    master.stop();
    assert!(
        out.is_empty(),
        "{} differences from the Go master:\n{}",
        out.len(),
        out.join("\n")
    );
}
