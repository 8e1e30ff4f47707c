//! The dashboard's server side: its files at `/`, the session cookie (CSRF, sign-out, key
//! rotation), and the traffic history API computed from a SQLite store across a master restart
//! and a counter reset.

mod support;

use std::sync::Arc;

use http::{Method, StatusCode};
use nodepass_core::store::{SqliteStore, Store, TrafficTotals};
use serde_json::Value;
use support::{Api, options};

/// `data` of an envelope, or the bare body (both dialects).
fn data(v: Value) -> Value {
    if v.get("success").is_some_and(Value::is_boolean) {
        v["data"].clone()
    } else {
        v
    }
}

#[tokio::test]
async fn the_dashboard_is_served_at_the_root_with_a_strict_policy() {
    let api = Api::start(options()).await;
    let page = api.raw(Method::GET, "/").send().await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains(r#"<meta name="np-api" content="/api">"#),
        "{html}"
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"));
    for file in [
        "app.js",
        "app.css",
        "uplot.min.js",
        "uplot.min.css",
        "icon.svg",
    ] {
        let res = api
            .raw(Method::GET, &format!("/ui/{file}?v=1"))
            .send()
            .await;
        assert_eq!(res.status, StatusCode::OK, "{file}");
        assert!(!res.body.is_empty());
    }
    assert_eq!(
        api.raw(Method::GET, "/ui/nothing.js").send().await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.raw(Method::POST, "/").send().await.status,
        StatusCode::NOT_FOUND
    );
    api.stop().await;
}

#[tokio::test]
async fn a_session_cookie_works_like_the_key_until_sign_out_or_rotation() {
    let mut opts = options();
    opts.api_key = None; // generated, so that it can be rotated
    let api = Api::start_with(
        opts,
        Arc::new(nodepass_core::store::MemoryStore::new()),
        "/api",
    )
    .await;

    let wrong = api
        .req(Method::POST, "/v1/session")
        .json(r#"{"key": "nope"}"#)
        .send()
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get("set-cookie").is_none());

    let sign_in = |key: String| {
        let req = api
            .req(Method::POST, "/v1/session")
            .json(&serde_json::json!({ "key": key }).to_string());
        async move {
            let res = req.send().await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.text());
            let cookie = res.headers["set-cookie"].to_str().unwrap().to_string();
            assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
            assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
            let token = cookie.split(';').next().unwrap().to_string();
            let csrf = data(res.json())["csrf"].as_str().unwrap().to_string();
            (token, csrf)
        }
    };
    let (cookie, csrf) = sign_in(api.key.clone()).await;
    let (other, _) = sign_in(api.key.clone()).await;

    let get = api
        .req(Method::GET, "/v1/instances")
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(get.status, StatusCode::OK);
    let session = api
        .req(Method::GET, "/v1/session")
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(data(session.json())["csrf"].as_str(), Some(csrf.as_str()));
    let events = api
        .req(Method::GET, "/v1/events")
        .header("cookie", &cookie)
        .open()
        .await;
    assert_eq!(
        events.status(),
        StatusCode::OK,
        "the event stream takes the cookie"
    );
    drop(events);

    let body = r#"{"url": "server://k@127.0.0.1:0/127.0.0.1:0"}"#;
    let no_token = api
        .req(Method::POST, "/v1/instances")
        .header("cookie", &cookie)
        .json(body)
        .send()
        .await;
    assert_eq!(
        no_token.status,
        StatusCode::FORBIDDEN,
        "{}",
        no_token.text()
    );
    let bad_token = api
        .req(Method::POST, "/v1/instances")
        .header("cookie", &cookie)
        .header("x-csrf-token", "0000")
        .json(body)
        .send()
        .await;
    assert_eq!(bad_token.status, StatusCode::FORBIDDEN);
    let listed = data(api.get("/v1/instances").await.json());
    let count = |v: &Value| {
        v.as_array()
            .or_else(|| v["instances"].as_array())
            .map(|a| a.iter().filter(|i| i["id"] != "********").count())
            .unwrap()
    };
    assert_eq!(count(&listed), 0, "refused requests created nothing");
    let created = api
        .req(Method::POST, "/v1/instances")
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(body)
        .send()
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());

    // Sign-out ends this session only.
    let out = api
        .req(Method::DELETE, "/v1/session")
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = api
        .req(Method::GET, "/v1/instances")
        .header("cookie", &cookie)
        .send()
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let still = api
        .req(Method::GET, "/v1/instances")
        .header("cookie", &other)
        .send()
        .await;
    assert_eq!(still.status, StatusCode::OK);

    // Rotating the key signs the other sessions out; the key header keeps working.
    let rotated = api.authed(Method::POST, "/v1/key/rotate").send().await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    let new_key = data(rotated.json())["key"].as_str().unwrap().to_string();
    let gone = api
        .req(Method::GET, "/v1/instances")
        .header("cookie", &other)
        .send()
        .await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
    let (fresh, _) = sign_in(new_key.clone()).await;
    let ok = api
        .req(Method::GET, "/v1/instances")
        .header("cookie", &fresh)
        .send()
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    api.stop().await;
}

fn totals(n: u64) -> TrafficTotals {
    TrafficTotals {
        tcp_in: n,
        tcp_out: 2 * n,
        udp_in: 0,
        udp_out: 0,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn traffic_rates_are_right_across_a_master_restart_and_a_reset() {
    let dir = nodepass_testkit::temp_dir("traffic");
    let db = dir.path().join("state.db");
    const MIN: i64 = 60_000;
    // Whole minutes, so that buckets and samples line up.
    let base = (now_ms() / MIN - 40) * MIN;

    // First master: one instance, four samples a minute apart at 100 B/s.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let api = Api::start_with(options(), store.clone(), "/api").await;
    let created = api
        .json(
            Method::POST,
            "/v1/instances",
            r#"{"url": "server://k@127.0.0.1:0/127.0.0.1:0", "restart": false}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let id = data(created.json())["id"].as_str().unwrap().to_string();
    // Stopped, so that the supervisor's own sampling leaves these samples alone.
    let _ = api
        .json(
            Method::PATCH,
            &format!("/v1/instances/{id}"),
            r#"{"action": "stop"}"#,
        )
        .await;
    for k in 0..4 {
        store
            .append_history(base + k * MIN, &[(id.clone(), totals(k as u64 * 6000))])
            .await
            .unwrap();
    }
    api.stop().await;
    drop(store);

    // The master was down for 10 minutes; the second one continues from the stored totals.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let api = Api::start_with(options(), store.clone(), "/api").await;
    store
        .append_history(base + 13 * MIN, &[(id.clone(), totals(24_000))])
        .await
        .unwrap();
    store
        .append_history(base + 14 * MIN, &[(id.clone(), totals(30_000))])
        .await
        .unwrap();
    // A reset through the API marks the history; then 10 B/s.
    let reset = api
        .json(
            Method::PATCH,
            &format!("/v1/instances/{id}"),
            r#"{"action": "reset"}"#,
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text());
    let marker = store.history(&id, base).await.unwrap();
    let marker = marker.last().unwrap();
    assert_eq!(
        marker.traffic,
        TrafficTotals::ZERO,
        "reset leaves a zero sample"
    );
    let after = (marker.ts_ms / MIN + 1) * MIN;
    store
        .append_history(
            after + MIN,
            &[(
                id.clone(),
                totals(600 + (600 * (after - marker.ts_ms) / MIN) as u64),
            )],
        )
        .await
        .unwrap();

    let to = after + MIN;
    let res = api
        .get(&format!(
            "/v1/instances/{id}/traffic?from={base}&to={to}&step=60"
        ))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let s = data(res.json());
    let rate = |k: usize| s["rate"]["tcprx"][k].as_f64();
    let out = |k: usize| s["rate"]["tcptx"][k].as_f64();
    assert_eq!(s["step"], 60);
    assert_eq!(s["time"][0], base);
    for k in 0..3 {
        assert_eq!(rate(k), Some(100.0), "bucket {k}: {s}");
        assert_eq!(out(k), Some(200.0));
    }
    // Down from minute 3 to 12: no data, and no spike when the second master's samples come.
    for k in 3..12 {
        assert_eq!(rate(k), None, "bucket {k}: {s}");
        assert_eq!(s["total"]["tcprx"][k], 18_000);
    }
    assert_eq!(rate(12), Some(100.0), "{s}");
    assert_eq!(rate(13), Some(100.0));
    // After the reset: 10 B/s, totals from zero, nothing negative anywhere.
    let last = s["time"].as_array().unwrap().len() - 1;
    assert!((rate(last).unwrap() - 10.0).abs() < 0.05, "{s}");
    assert!(s["total"]["tcprx"][last].as_u64().unwrap() < 30_000);
    for v in s["rate"]["tcprx"].as_array().unwrap() {
        assert!(v.is_null() || v.as_f64().unwrap() >= 0.0);
    }

    // Bad ranges name their parameter.
    for (q, field) in [
        ("from=10&to=5", "from"),
        ("from=0&to=1000000000", "from"),
        ("step=0", "step"),
        ("to=abc", "to"),
        ("step=1&from=0&to=86400000", "step"),
        ("since=1", "since"),
    ] {
        let res = api.get(&format!("/v1/instances/{id}/traffic?{q}")).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(res.text().contains(field), "{q}: {}", res.text());
    }
    assert_eq!(
        api.get("/v1/instances/00000000/traffic").await.status,
        StatusCode::NOT_FOUND
    );
    api.stop().await;
}
