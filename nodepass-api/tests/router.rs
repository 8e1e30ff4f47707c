//! The API over real HTTP/1.1 on loopback: the envelope, authentication, every documented route
//! served (and nothing else), and bad requests refused with the right status and code without
//! changing anything.

mod support;

use std::collections::BTreeSet;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Api, KEY, options};

/// A server instance that binds nothing until started (port 0 everywhere).
fn server_url(key: &str) -> String {
    format!("server://{key}@127.0.0.1:0/127.0.0.1:0")
}

#[tokio::test]
async fn the_envelope_and_the_instance_object() {
    let api = Api::start(options()).await;

    let created = api
        .create(json!({
            "url": server_url("hunter2"),
            "alias": "first",
            "meta": {"peer": {"sid": "s-1", "type": "client", "alias": "far"}, "tags": {"env": "test"}},
        }))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 8);
    assert_eq!(created["alias"], "first");
    assert_eq!(created["type"], "server");
    assert_eq!(created["status"], "stopped");
    assert_eq!(created["restart"], false);
    assert_eq!(created["meta"]["peer"]["type"], "client");
    assert_eq!(created["meta"]["tags"]["env"], "test");
    for field in [
        "error",
        "url",
        "config",
        "mode",
        "connections",
        "tcp_connections",
        "udp_connections",
        "pool_size",
        "ping_ms",
        "uptime",
        "tcp_in",
        "tcp_out",
        "udp_in",
        "udp_out",
        "created_at",
        "updated_at",
        "local_addrs",
    ] {
        assert!(created.get(field).is_some(), "{field} missing in {created}");
    }
    // Keys are masked, times are RFC 3339.
    let text = created.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(created["url"].as_str().unwrap().contains("****@"), "{text}");
    let created_at = created["created_at"].as_str().unwrap();
    assert!(
        created_at.len() >= 20 && created_at.ends_with('Z') && created_at.as_bytes()[10] == b'T',
        "{created_at}"
    );

    // GET one, GET all: success envelopes.
    let one = api.get(&format!("/v1/instances/{id}")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.headers["content-type"], "application/json");
    let v = one.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["data"]["id"], id.as_str());
    let all = api.get("/v1/instances").await.json();
    assert_eq!(all["success"], true);
    assert_eq!(all["data"]["instances"].as_array().unwrap().len(), 1);

    // Filters.
    let servers = api
        .get("/v1/instances?type=server&status=stopped")
        .await
        .json();
    assert_eq!(servers["data"]["instances"].as_array().unwrap().len(), 1);
    let clients = api.get("/v1/instances?type=client").await.json();
    assert_eq!(clients["data"]["instances"].as_array().unwrap().len(), 0);

    // PATCH several fields; null clears the alias.
    let patched = api
        .json(
            Method::PATCH,
            &format!("/v1/instances/{id}"),
            r#"{"alias": null, "restart": true, "meta": {"tags": {"a": "b"}}}"#,
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text());
    let p = patched.json()["data"].clone();
    assert_eq!(p["alias"], Value::Null);
    assert_eq!(p["restart"], true);
    assert_eq!(p["meta"]["tags"], json!({"a": "b"}));

    // Start and stop answer once done; reset zeroes; url replacement keeps it stopped.
    let started = api
        .json(
            Method::PUT,
            &format!("/v1/instances/{id}"),
            r#"{"action":"start"}"#,
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());
    assert_eq!(started.json()["data"]["status"], "running");
    assert!(started.json()["data"]["local_addrs"]["tunnel"].is_string());
    let stopped = api
        .json(
            Method::PATCH,
            &format!("/v1/instances/{id}"),
            r#"{"action":"stop"}"#,
        )
        .await;
    assert_eq!(
        stopped.json()["data"]["status"],
        "stopped",
        "{}",
        stopped.text()
    );
    let reset = api
        .json(
            Method::PUT,
            &format!("/v1/instances/{id}"),
            r#"{"action":"reset"}"#,
        )
        .await;
    assert_eq!(reset.json()["data"]["tcp_in"], 0);
    let replaced = api
        .json(
            Method::PUT,
            &format!("/v1/instances/{id}"),
            &json!({"url": server_url("other-key")}).to_string(),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text());
    assert!(!replaced.text().contains("other-key"));

    // DELETE: 204 without a body, then 404.
    let deleted = api
        .authed(Method::DELETE, &format!("/v1/instances/{id}"))
        .send()
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty());
    let gone = api.get(&format!("/v1/instances/{id}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error_code(), "NOT_FOUND");

    api.stop().await;
}

#[tokio::test]
async fn at_least_25_bad_requests_change_nothing() {
    let api = Api::start(options()).await;
    let fixture = api
        .create(json!({"url": server_url("k"), "alias": "keep", "meta": {"tags": {"t": "1"}}}))
        .await;
    let id = fixture["id"].as_str().unwrap().to_string();
    let one = format!("/v1/instances/{id}");
    let before = api.snapshot().await;

    let big = format!(
        r#"{{"url":"{}","alias":"{}"}}"#,
        server_url("k"),
        "x".repeat(70 * 1024)
    );
    let long_alias = json!({"url": server_url("k"), "alias": "a".repeat(300)}).to_string();
    let long_tag = json!({"meta": {"tags": {"k": "v".repeat(300)}}}).to_string();
    let j = |m: Method, p: &str, b: &str| api.authed(m, p).json(b);
    type Case = (&'static str, support::Req, u16, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            "bad JSON",
            j(Method::POST, "/v1/instances", r#"{"url":"#),
            400,
            "VALIDATION_ERROR",
            "body",
        ),
        (
            "not JSON at all",
            j(Method::POST, "/v1/instances", "url=x"),
            400,
            "VALIDATION_ERROR",
            "body",
        ),
        (
            "empty body",
            j(Method::POST, "/v1/instances", ""),
            400,
            "VALIDATION_ERROR",
            "body",
        ),
        (
            "array body",
            j(Method::POST, "/v1/instances", "[]"),
            400,
            "VALIDATION_ERROR",
            "body",
        ),
        (
            "trailing data",
            j(
                Method::POST,
                "/v1/instances",
                &format!(r#"{{"url":"{}"}} x"#, server_url("k")),
            ),
            400,
            "VALIDATION_ERROR",
            "body",
        ),
        (
            "missing url",
            j(Method::POST, "/v1/instances", r#"{"alias":"x"}"#),
            400,
            "VALIDATION_ERROR",
            "url",
        ),
        (
            "invalid url",
            j(Method::POST, "/v1/instances", r#"{"url":"ftp://x:1/y:2"}"#),
            400,
            "VALIDATION_ERROR",
            "url",
        ),
        (
            "invalid url parameter",
            j(
                Method::POST,
                "/v1/instances",
                &json!({"url": format!("{}?tls=9", server_url("k"))}).to_string(),
            ),
            400,
            "VALIDATION_ERROR",
            "tls",
        ),
        (
            "master url",
            j(
                Method::POST,
                "/v1/instances",
                r#"{"url":"master://127.0.0.1:0/api"}"#,
            ),
            400,
            "VALIDATION_ERROR",
            "url",
        ),
        (
            "unknown field",
            j(
                Method::POST,
                "/v1/instances",
                &json!({"url": server_url("k"), "nope": 1}).to_string(),
            ),
            400,
            "VALIDATION_ERROR",
            "nope",
        ),
        (
            "wrong type",
            j(
                Method::POST,
                "/v1/instances",
                &json!({"url": server_url("k"), "restart": "yes"}).to_string(),
            ),
            400,
            "VALIDATION_ERROR",
            "restart",
        ),
        (
            "wrong nested type",
            j(
                Method::POST,
                "/v1/instances",
                &json!({"url": server_url("k"), "meta": {"tags": {"a": 1}}}).to_string(),
            ),
            400,
            "VALIDATION_ERROR",
            "meta.tags.a",
        ),
        (
            "unknown nested field",
            j(
                Method::POST,
                "/v1/instances",
                &json!({"url": server_url("k"), "meta": {"peers": {}}}).to_string(),
            ),
            400,
            "VALIDATION_ERROR",
            "peers",
        ),
        (
            "alias too long",
            j(Method::POST, "/v1/instances", &long_alias),
            400,
            "VALIDATION_ERROR",
            "alias",
        ),
        (
            "oversize body",
            j(Method::POST, "/v1/instances", &big),
            413,
            "PAYLOAD_TOO_LARGE",
            "64",
        ),
        (
            "text/plain",
            api.authed(Method::POST, "/v1/instances")
                .header("content-type", "text/plain")
                .body(server_url("k")),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "content-type",
        ),
        (
            "no content type",
            api.authed(Method::POST, "/v1/instances")
                .body(json!({"url": server_url("k")}).to_string()),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "content-type",
        ),
        (
            "form content type",
            api.authed(Method::PATCH, &one)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("alias=x"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "content-type",
        ),
        (
            "unknown id",
            api.authed(Method::GET, "/v1/instances/ffffffff"),
            404,
            "NOT_FOUND",
            "ffffffff",
        ),
        (
            "malformed id",
            api.authed(Method::GET, "/v1/instances/NOT-AN-ID"),
            404,
            "NOT_FOUND",
            "NOT-AN-ID",
        ),
        (
            "unknown action",
            j(Method::PUT, &one, r#"{"action":"pause"}"#),
            400,
            "VALIDATION_ERROR",
            "action",
        ),
        (
            "action and url",
            j(
                Method::PUT,
                &one,
                &json!({"action": "start", "url": server_url("k")}).to_string(),
            ),
            400,
            "VALIDATION_ERROR",
            "not both",
        ),
        (
            "empty put",
            j(Method::PUT, &one, "{}"),
            400,
            "VALIDATION_ERROR",
            "action or url",
        ),
        (
            "invalid replacement url",
            j(Method::PUT, &one, r#"{"url":"server://"}"#),
            400,
            "VALIDATION_ERROR",
            "url",
        ),
        (
            "put on unknown id",
            j(
                Method::PUT,
                "/v1/instances/0000abcd",
                r#"{"action":"start"}"#,
            ),
            404,
            "NOT_FOUND",
            "0000abcd",
        ),
        (
            "stop a stopped instance",
            j(Method::PUT, &one, r#"{"action":"stop"}"#),
            409,
            "CONFLICT",
            "already stopped",
        ),
        (
            "patch whose action is refused",
            j(
                Method::PATCH,
                &one,
                r#"{"alias":"changed","action":"stop"}"#,
            ),
            409,
            "CONFLICT",
            "already stopped",
        ),
        (
            "patch with a bad field and a good one",
            j(Method::PATCH, &one, &long_tag),
            400,
            "VALIDATION_ERROR",
            "meta.tags.k",
        ),
        (
            "patch empty tag key",
            j(
                Method::PATCH,
                &one,
                r#"{"alias":"changed","meta":{"tags":{"":"x"}}}"#,
            ),
            400,
            "VALIDATION_ERROR",
            "meta.tags",
        ),
        (
            "patch nothing",
            j(Method::PATCH, &one, "{}"),
            400,
            "VALIDATION_ERROR",
            "nothing to change",
        ),
        (
            "patch alias wrong type",
            j(Method::PATCH, &one, r#"{"alias":5}"#),
            400,
            "VALIDATION_ERROR",
            "alias",
        ),
        (
            "patch unknown field",
            j(Method::PATCH, &one, r#"{"url":"x"}"#),
            400,
            "VALIDATION_ERROR",
            "url",
        ),
        (
            "delete unknown id",
            api.authed(Method::DELETE, "/v1/instances/0000abcd"),
            404,
            "NOT_FOUND",
            "0000abcd",
        ),
        (
            "delete the collection",
            api.authed(Method::DELETE, "/v1/instances"),
            405,
            "METHOD_NOT_ALLOWED",
            "DELETE",
        ),
        (
            "post to info without an alias",
            j(Method::POST, "/v1/info", "{}"),
            400,
            "VALIDATION_ERROR",
            "alias",
        ),
        (
            "delete the info",
            api.authed(Method::DELETE, "/v1/info"),
            405,
            "METHOD_NOT_ALLOWED",
            "DELETE",
        ),
        (
            "get the rotate action",
            api.authed(Method::GET, "/v1/key/rotate"),
            405,
            "METHOD_NOT_ALLOWED",
            "GET",
        ),
        (
            "tcping without target",
            api.authed(Method::GET, "/v1/tcping"),
            400,
            "VALIDATION_ERROR",
            "target",
        ),
        (
            "tcping without port",
            api.authed(Method::GET, "/v1/tcping?target=127.0.0.1"),
            400,
            "VALIDATION_ERROR",
            "target",
        ),
        (
            "tcping port 0",
            api.authed(Method::GET, "/v1/tcping?target=127.0.0.1:0"),
            400,
            "VALIDATION_ERROR",
            "target",
        ),
        (
            "tcping bad host",
            api.authed(Method::GET, "/v1/tcping?target=a%20b:80"),
            400,
            "VALIDATION_ERROR",
            "target",
        ),
        (
            "tcping unknown parameter",
            api.authed(Method::GET, "/v1/tcping?target=127.0.0.1:1&count=5"),
            400,
            "VALIDATION_ERROR",
            "count",
        ),
        (
            "unknown type filter",
            api.authed(Method::GET, "/v1/instances?type=router"),
            400,
            "VALIDATION_ERROR",
            "type",
        ),
        (
            "unknown status filter",
            api.authed(Method::GET, "/v1/instances?status=sleeping"),
            400,
            "VALIDATION_ERROR",
            "status",
        ),
        (
            "repeated filter",
            api.authed(Method::GET, "/v1/instances?type=server&type=client"),
            400,
            "VALIDATION_ERROR",
            "type",
        ),
        (
            "unknown path",
            api.authed(Method::GET, "/v1/nothing"),
            404,
            "NOT_FOUND",
            "/api/v1/nothing",
        ),
        (
            "outside the prefix",
            api.raw(Method::GET, "/v1/instances")
                .header("x-api-key", KEY),
            404,
            "NOT_FOUND",
            "/v1/instances",
        ),
        (
            "a prefix look-alike",
            api.raw(Method::GET, "/apix/v1/instances")
                .header("x-api-key", KEY),
            404,
            "NOT_FOUND",
            "/apix",
        ),
        (
            "missing key",
            api.req(Method::GET, "/v1/instances"),
            401,
            "UNAUTHORIZED",
            "missing",
        ),
        (
            "wrong key",
            api.req(Method::POST, "/v1/instances")
                .header("x-api-key", "wrong")
                .json(&json!({"url": server_url("k")}).to_string()),
            401,
            "UNAUTHORIZED",
            "wrong",
        ),
        (
            "wrong bearer",
            api.req(Method::DELETE, &one)
                .header("authorization", "Bearer wrong"),
            401,
            "UNAUTHORIZED",
            "wrong",
        ),
    ];
    assert!(cases.len() >= 25);
    let mut refused = 0;
    for (name, req, status, code, needle) in cases {
        let res = req.send().await;
        assert_eq!(res.status.as_u16(), status, "{name}: {}", res.text());
        if status >= 400 {
            refused += 1;
            assert_eq!(res.error_code(), code, "{name}");
            let message = res.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(
                message.contains(needle),
                "{name}: {message:?} should name {needle:?}"
            );
            assert!(!res.text().contains(KEY), "{name}");
        }
        assert_eq!(api.snapshot().await, before, "{name} changed something");
    }
    assert!(refused >= 25, "{refused}");
    api.stop().await;
}

#[tokio::test]
async fn every_protected_endpoint_refuses_a_missing_or_wrong_key() {
    let api = Api::start(options()).await;
    let id = api.create(json!({"url": server_url("k")})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = api.req(Method::GET, "/v1/openapi.json").send().await.json();
    let mut protected = 0;
    let mut public = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", &id).replace("{file}", "index.html");
        for (method, op) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let open = op["security"] == json!([{}]);
            for auth in [
                None,
                Some(("x-api-key", "wrong")),
                Some(("authorization", "Bearer wrong")),
            ] {
                let mut req = api.req(method.clone(), &concrete);
                if let Some((n, v)) = auth {
                    req = req.header(n, v);
                }
                if method != Method::GET {
                    req = req.json("{}");
                }
                let res = req.send().await;
                if open && path != "/v1/session" {
                    assert_ne!(res.status, StatusCode::UNAUTHORIZED, "{method} {path}");
                } else if open {
                    // The dashboard's sign-in checks the key in its body, the session endpoints
                    // the cookie: without either they may say 401 themselves.
                } else {
                    assert_eq!(
                        res.status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {path} {auth:?}"
                    );
                    assert_eq!(res.error_code(), "UNAUTHORIZED");
                    assert!(
                        res.headers.contains_key("www-authenticate"),
                        "{method} {path}"
                    );
                }
            }
            if open {
                public += 1;
            } else {
                protected += 1;
            }
        }
    }
    assert_eq!(
        public, 7,
        "openapi.json, docs, docs files, health, session (sign in, get, sign out)"
    );
    assert_eq!(
        protected, 16,
        "11 + alias, export, import (issue 10) + traffic (issue 14) + nodes (issue 18)"
    );
    assert_eq!(
        api.get("/v1/instances").await.json()["data"]["instances"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    api.stop().await;
}

#[tokio::test]
async fn the_router_serves_exactly_what_openapi_json_documents() {
    let api = Api::start(options()).await;
    let id = api.create(json!({"url": server_url("k")})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Sub-resources of an instance use one that the `DELETE /v1/instances/{id}` probe leaves.
    let other = api.create(json!({"url": server_url("k")})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = api.req(Method::GET, "/v1/openapi.json").send().await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "/api");
    let all = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::TRACE,
    ];
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = if path.starts_with("/v1/instances/{id}/") {
            path.replace("{id}", &other)
        } else {
            path.replace("{id}", &id).replace("{file}", "index.html")
        };
        let methods: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        for method in &all {
            let res = api
                .authed(method.clone(), &concrete)
                .json(r#"{"action":"restart"}"#)
                .open()
                .await;
            let status = res.status();
            if methods.contains(method.as_str()) {
                documented.insert(format!("{method} {path}"));
                assert_ne!(
                    status,
                    StatusCode::NOT_FOUND,
                    "{method} {path} is documented, not served"
                );
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served, not documented"
                );
                let allow = res.headers()["allow"].to_str().unwrap().to_string();
                for m in &methods {
                    assert!(allow.contains(m.as_str()), "{allow} lacks {m}");
                }
            }
        }
    }
    // The documented list is exactly the issue's endpoints plus the key rotation and the UI files.
    let expected: BTreeSet<String> = [
        "GET /v1/instances",
        "POST /v1/instances",
        "GET /v1/instances/{id}",
        "PUT /v1/instances/{id}",
        "PATCH /v1/instances/{id}",
        "DELETE /v1/instances/{id}",
        "GET /v1/events",
        "GET /v1/info",
        "POST /v1/info",
        "GET /v1/tcping",
        "GET /v1/metrics",
        "POST /v1/key/rotate",
        "GET /v1/export",
        "POST /v1/import",
        "GET /v1/openapi.json",
        "GET /v1/docs",
        "GET /v1/docs/{file}",
        "GET /v1/health",
        // issue 10: the master's alias, backups
        "POST /v1/info",
        "GET /v1/export",
        "POST /v1/import",
        // issue 14: the dashboard's session and the traffic history
        "POST /v1/session",
        "GET /v1/session",
        "DELETE /v1/session",
        "GET /v1/instances/{id}/traffic",
        // issue 18: the fleet's nodes
        "GET /v1/nodes",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(documented, expected);
    // Paths that are not documented are not served.
    for path in [
        "/v1",
        "/v1/",
        "/v1/instances/",
        "/v1/key",
        "/v2/instances",
        "/v1/instances/x/y",
    ] {
        let res = api.get(path).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{path}");
    }
    api.stop().await;
}

#[tokio::test]
async fn the_key_is_generated_once_and_rotates() {
    let store: std::sync::Arc<dyn nodepass_core::store::Store> =
        std::sync::Arc::new(nodepass_core::store::MemoryStore::new());
    let mut opts = options();
    opts.api_key = None;
    let api = Api::start_with(opts, store.clone(), "/api").await;
    let first = api.key.clone();
    assert_eq!(first.len(), 64, "256 random bits in hex");
    assert_eq!(api.get("/v1/instances").await.status, StatusCode::OK);
    let stored = store
        .setting(nodepass_api::KEY_SETTING)
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.contains(&first), "only a digest is stored");

    let rotated = api.authed(Method::POST, "/v1/key/rotate").send().await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    let second = rotated.json()["data"]["key"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(
        api.get("/v1/instances").await.status,
        StatusCode::UNAUTHORIZED
    );
    let with_new = api
        .req(Method::GET, "/v1/instances")
        .header("authorization", &format!("Bearer {second}"))
        .send()
        .await;
    assert_eq!(with_new.status, StatusCode::OK);
    api.stop().await;

    // A restart keeps the rotated key and shows none.
    let mut opts = options();
    opts.api_key = None;
    let again = Api::start_with(opts, store, "/api").await;
    assert!(
        again.key.is_empty(),
        "no key is generated on a second start"
    );
    let res = again
        .req(Method::GET, "/v1/info")
        .header("x-api-key", &second)
        .send()
        .await;
    assert_eq!(res.status, StatusCode::OK);
    again.stop().await;

    // A key from the environment cannot be rotated away.
    let api = Api::start(options()).await;
    let res = api.authed(Method::POST, "/v1/key/rotate").send().await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.error_code(), "CONFLICT");
    assert_eq!(api.get("/v1/instances").await.status, StatusCode::OK);
    api.stop().await;
}

#[tokio::test]
async fn info_metrics_health_and_tcping() {
    let api = Api::start(options()).await;
    let created = api
        .create(json!({"url": server_url("k"), "restart": true}))
        .await;
    assert_eq!(created["status"], "running");

    let info = api.get("/v1/info").await.json()["data"].clone();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["os"], std::env::consts::OS);
    assert_eq!(info["arch"], std::env::consts::ARCH);
    assert_eq!(info["instances"]["total"], 1);
    assert_eq!(info["instances"]["running"], 1);
    assert!(info["uptime"].is_u64());
    assert!(info["cpu"]["cores"].as_u64().unwrap() >= 1);
    assert!(info["memory"].is_object());

    let metrics = api.get("/v1/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text();
    let id = created["id"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            r#"nodepass_instance_traffic_bytes_total{{id="{id}",protocol="tcp",direction="in"}} 0"#
        )),
        "{text}"
    );
    assert!(
        text.contains(r#"nodepass_instances{status="running"} 1"#),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");

    let health = api.req(Method::GET, "/v1/health").send().await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.json(),
        json!({"success": true, "data": {"status": "ok"}})
    );

    // tcping: only loopback targets in tests.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_port = listener.local_addr().unwrap().port();
    let ok = api
        .get(&format!("/v1/tcping?target=127.0.0.1:{open_port}"))
        .await
        .json()["data"]
        .clone();
    assert_eq!(ok["connected"], true, "{ok}");
    assert!(ok["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(ok["error"], Value::Null);
    drop(listener);
    let refused = api
        .get(&format!("/v1/tcping?target=127.0.0.1:{open_port}"))
        .await
        .json()["data"]
        .clone();
    assert_eq!(refused["connected"], false, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("127.0.0.1"),
        "{refused}"
    );
    assert_eq!(refused["latency_ms"], Value::Null);
    api.stop().await;
}
