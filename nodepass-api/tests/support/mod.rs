//! Test support: an in-process master on 127.0.0.1:0 with an in-memory store, and a minimal
//! HTTP/1.1 client (hyper) that opens one connection per request.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use nodepass_api::{ApiError, Master, MasterOptions};
use nodepass_core::Config;
use nodepass_core::store::{MemoryStore, Store};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
        Req {
            addr: self.addr,
            method,
            path: format!("/api{path}"),
            headers: vec![("host".into(), self.addr.to_string())],
            body: Bytes::new(),
        }
    }

    /// A request for `path` as is (no prefix added).
    pub fn raw(&self, method: Method, path: &str) -> Req {
        Req {
            addr: self.addr,
            method,
            path: path.to_string(),
            headers: vec![("host".into(), self.addr.to_string())],
            body: Bytes::new(),
        }
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

    /// Create an instance from `url` (plus extra JSON fields) and return its object.
    pub async fn create(&self, body: Value) -> Value {
        let res = self
            .json(Method::POST, "/v1/instances", &body.to_string())
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        res.json()["data"].clone()
    }
}

/// One request.
pub struct Req {
    addr: SocketAddr,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Remove a header.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// A body as is.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body with its content type.
    pub fn json(self, body: &str) -> Self {
        self.header("content-type", "application/json")
            .body(Bytes::from(body.to_string()))
    }

    fn build(self) -> Request<Full<Bytes>> {
        let mut b = Request::builder().method(self.method).uri(self.path);
        for (n, v) in &self.headers {
            b = b.header(n, v);
        }
        b.body(Full::new(self.body)).unwrap()
    }

    /// Send it and wait for the response headers (the body is left to the caller).
    pub async fn open(self) -> hyper::Response<Incoming> {
        let addr = self.addr;
        let req = self.build();
        tokio::time::timeout(DEADLINE, async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        })
        .await
        .expect("response within the deadline")
    }

    /// Send it and read the whole response.
    pub async fn send(self) -> Res {
        let res = self.open().await;
        let status = res.status();
        let headers = res.headers().clone();
        let body = tokio::time::timeout(DEADLINE, res.into_body().collect())
            .await
            .expect("body within the deadline")
            .unwrap()
            .to_bytes();
        Res {
            status,
            headers,
            body,
        }
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Res {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Res {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// `error.code` of a failure envelope (checking the envelope shape).
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert_eq!(v["success"], Value::Bool(false), "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
        v["error"]["code"].as_str().unwrap().to_string()
    }
}

/// Read server-sent events from `body` until `done` says so or the deadline passes; returns
/// every `(event, data)` seen and the comment lines.
pub struct Sse {
    body: Incoming,
    buf: String,
}

/// One parsed server-sent event.
#[derive(Debug, Clone)]
pub enum SseItem {
    /// `event:` and `data:` (parsed JSON).
    Event(String, Value),
    /// `: comment`.
    Comment(String),
    /// `retry: N`.
    Retry(u64),
}

impl Sse {
    /// Start reading a response body.
    pub fn new(res: hyper::Response<Incoming>) -> Self {
        Sse {
            body: res.into_body(),
            buf: String::new(),
        }
    }

    /// The next item, or `None` when the stream ended; panics after the deadline.
    pub async fn next(&mut self) -> Option<SseItem> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                return Some(parse_block(block.trim_end()));
            }
            let frame = tokio::time::timeout(DEADLINE, self.body.frame())
                .await
                .expect("an event within the deadline");
            match frame {
                None => return None,
                Some(f) => {
                    if let Ok(data) = f.unwrap().into_data() {
                        self.buf.push_str(std::str::from_utf8(&data).unwrap());
                    }
                }
            }
        }
    }

    /// Skip items until `pred` matches one; `None` if the stream ends first. Panics when no
    /// item matched within [`DEADLINE`] (periodic events keep the stream busy).
    pub async fn until(&mut self, mut pred: impl FnMut(&SseItem) -> bool) -> Option<SseItem> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while let Some(item) = self.next().await {
            if pred(&item) {
                return Some(item);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no matching event within the deadline"
            );
        }
        None
    }
}

fn parse_block(block: &str) -> SseItem {
    if let Some(c) = block.strip_prefix(':') {
        return SseItem::Comment(c.trim().to_string());
    }
    if let Some(r) = block.strip_prefix("retry:") {
        return SseItem::Retry(r.trim().parse().unwrap());
    }
    let mut event = String::new();
    let mut data = String::new();
    for line in block.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            data.push_str(d);
        } else {
            panic!("unexpected line {line:?} in {block:?}");
        }
    }
    let value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
    SseItem::Event(event, value)
}
