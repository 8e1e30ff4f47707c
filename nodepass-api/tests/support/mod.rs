//! Test support: an in-process master on 127.0.0.1:0 with an in-memory store, and a minimal
//! HTTP/1.1 client (hyper) that opens one connection per request.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use nodepass_api::{ApiError, Master, MasterOptions};
use nodepass_core::Config;
use nodepass_core::store::{MemoryStore, Store};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// The HTTP client and the SSE reader are the workspace's one (shared with tests/tests).
#[allow(unused_imports)]
pub use nodepass_testkit::http::{Req, Res, Sse, SseItem, request};

/// Every wait in these tests is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A key for masters started with an explicit key.
pub const KEY: &str = "test-api-key-0123456789";

/// A running in-process master.
pub struct Api {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The key it accepts.
    pub key: String,
    /// Its store.
    pub store: Arc<dyn Store>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), ApiError>>,
}

/// Options for tests: the explicit [`KEY`], short timings.
pub fn options() -> MasterOptions {
    let mut o = MasterOptions::default();
    o.api_key = Some(nodepass_api::ApiKey::new(KEY).unwrap());
    o.supervisor.stats_interval = Duration::from_millis(200);
    o.supervisor.flush_interval = Duration::from_millis(200);
    o.supervisor.grace = Duration::from_secs(2);
    o.grace = Duration::from_secs(2);
    o
}

impl Api {
    /// An envelope-dialect master at `master://127.0.0.1:0/api?api=envelope` with `options`
    /// and a fresh in-memory store.
    pub async fn start(options: MasterOptions) -> Api {
        Self::start_with(options, Arc::new(MemoryStore::new()), "/api").await
    }

    /// A master in the default (NodePass) dialect, `master://127.0.0.1:0/api?QUERY`.
    pub async fn start_nodepass(options: MasterOptions, query: &str) -> Api {
        Self::start_url(
            options,
            Arc::new(MemoryStore::new()),
            &format!("master://127.0.0.1:0/api?{query}"),
        )
        .await
    }

    /// An envelope-dialect master with this store and prefix.
    pub async fn start_with(options: MasterOptions, store: Arc<dyn Store>, prefix: &str) -> Api {
        let url = format!("master://127.0.0.1:0{prefix}?api=envelope");
        Self::start_url(options, store, &url).await
    }

    /// A master for this URL with this store.
    pub async fn start_url(mut options: MasterOptions, store: Arc<dyn Store>, url: &str) -> Api {
        let Config::Master(config) = Config::parse(url).unwrap() else {
            unreachable!()
        };
        let explicit = options.api_key.take();
        let given = explicit.as_ref().map(|k| k.expose().to_string());
        options.api_key = explicit;
        let mut master = Master::with_store(&config, options, store.clone())
            .await
            .unwrap();
        let key = match (given, master.take_generated_key()) {
            (Some(k), _) => k,
            (None, Some(k)) => k.expose().to_string(),
            (None, None) => String::new(),
        };
        let addr = master.local_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(master.run(stop.clone()));
        Api {
            addr,
            key,
            store,
            stop,
            task,
        }
    }

    /// Shut down and wait for it.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the master stops within the deadline")
            .unwrap()
            .unwrap();
    }

    /// A request builder for `method` and `path` (below the prefix, e.g. `/v1/instances`).
    pub fn req(&self, method: Method, path: &str) -> Req {
        request(self.addr, method, &format!("/api{path}"))
    }

    /// A request for `path` as is (no prefix added).
    pub fn raw(&self, method: Method, path: &str) -> Req {
        request(self.addr, method, path)
    }

    /// The same with the API key.
    pub fn authed(&self, method: Method, path: &str) -> Req {
        self.req(method, path).header("x-api-key", &self.key)
    }

    /// `GET path` with the key.
    pub async fn get(&self, path: &str) -> Res {
        self.authed(Method::GET, path).send().await
    }

    /// `method path` with the key and a JSON body.
    pub async fn json(&self, method: Method, path: &str, body: &str) -> Res {
        self.authed(method, path).json(body).send().await
    }

    /// What a request must not change: each instance's id, alias, status, url, policy and meta.
    pub async fn snapshot(&self) -> Value {
        let list = self.get("/v1/instances").await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.text());
        let mut out = Vec::new();
        for i in list.json()["data"]["instances"].as_array().unwrap() {
            out.push(serde_json::json!({
                "id": i["id"], "alias": i["alias"], "status": i["status"], "url": i["url"],
                "restart": i["restart"], "meta": i["meta"], "updated_at": i["updated_at"],
            }));
        }
        Value::Array(out)
    }

    /// Create an instance from `url` (plus extra JSON fields) in the envelope dialect and return
    /// its object as these tests expect it: without `restart`, the policy is `false` and the
    /// instance is stopped again after creation (creating starts, as in NodePass); with
    /// `restart: true`, it is returned once it left `starting`.
    pub async fn create(&self, mut body: Value) -> Value {
        let keep_running = body["restart"] == Value::Bool(true);
        if body.get("restart").is_none() {
            body["restart"] = Value::Bool(false);
        }
        let res = self
            .json(Method::POST, "/v1/instances", &body.to_string())
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        let created = res.json()["data"].clone();
        let path = format!("/v1/instances/{}", created["id"].as_str().unwrap());
        if !keep_running {
            let res = self.json(Method::PUT, &path, r#"{"action":"stop"}"#).await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.text());
            return res.json()["data"].clone();
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let v = self.get(&path).await.json()["data"].clone();
            if v["status"] != "starting" {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still starting: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
