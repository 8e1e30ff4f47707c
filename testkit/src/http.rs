//! A minimal HTTP/1.1 client (hyper) that opens one connection per request, with every wait
//! bounded by [`HTTP_DEADLINE`], and a reader of server-sent events. Used by the in-process
//! master tests (`nodepass-api/tests`) and the end-to-end master tests (`tests/tests`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// The bound on connecting, on a response head, on a whole body and on the next event.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(30);

/// A request for the absolute `path` (with its query) on the HTTP server at `addr`, with a
/// `host` header naming `addr`.
pub fn request(addr: SocketAddr, method: Method, path: &str) -> Req {
    Req {
        addr,
        method,
        path: path.to_string(),
        headers: vec![("host".into(), addr.to_string())],
        body: Bytes::new(),
    }
}

/// One request, built by [`request`].
#[derive(Debug, Clone)]
pub struct Req {
    addr: SocketAddr,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    /// Set a header (replacing one of the same name).
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
        b.body(Full::new(self.body)).expect("a valid request")
    }

    /// Send it and wait for the response head (the body is left to the caller). Panics on a
    /// connection error or after [`HTTP_DEADLINE`].
    ///
    /// Cancel safety: safe; a dropped future drops the connection.
    pub async fn open(self) -> hyper::Response<Incoming> {
        let addr = self.addr;
        let req = self.build();
        tokio::time::timeout(HTTP_DEADLINE, async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("HTTP/1.1 handshake");
            tokio::spawn(conn);
            sender.send_request(req).await.expect("a response")
        })
        .await
        .expect("a response within the deadline")
    }

    /// Send it and read the whole response.
    ///
    /// Cancel safety: safe; a dropped future drops the connection.
    pub async fn send(self) -> Res {
        let res = self.open().await;
        let status = res.status();
        let headers = res.headers().clone();
        let body = tokio::time::timeout(HTTP_DEADLINE, res.into_body().collect())
            .await
            .expect("a body within the deadline")
            .expect("a whole body")
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

    /// `data` of a success envelope (`{"success": true, "data": ...}`) with `status`.
    pub fn data(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["success"], true, "{v}");
        v["data"].clone()
    }

    /// `error.code` of a failure envelope (checking the envelope's shape).
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert_eq!(v["success"], Value::Bool(false), "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
        v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {v}"))
            .to_string()
    }
}

/// Server-sent events read from a response body.
#[derive(Debug)]
pub struct Sse {
    body: Incoming,
    buf: String,
}

/// One server-sent event block.
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

    /// The next block (without its blank line), or `None` when the stream ended; panics after
    /// [`HTTP_DEADLINE`] without one.
    async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                return Some(block.trim_end().to_string());
            }
            let frame = tokio::time::timeout(HTTP_DEADLINE, self.body.frame())
                .await
                .expect("an event within the deadline")?;
            if let Ok(data) = frame.expect("a body frame").into_data() {
                self.buf
                    .push_str(std::str::from_utf8(&data).expect("UTF-8 events"));
            }
        }
    }

    /// The next item, strictly parsed (a line other than `event:`, `data:`, a comment or
    /// `retry:` panics), or `None` when the stream ended.
    ///
    /// Cancel safety: not cancel safe; a dropped future may lose a partly read block.
    pub async fn next(&mut self) -> Option<SseItem> {
        let block = self.next_block().await?;
        Some(parse_block(&block))
    }

    /// Skip items until `pred` matches one; `None` if the stream ends first. Panics when no
    /// item matched within [`HTTP_DEADLINE`] (periodic events keep the stream busy).
    ///
    /// Cancel safety: not cancel safe, as [`next`](Self::next).
    pub async fn until(&mut self, mut pred: impl FnMut(&SseItem) -> bool) -> Option<SseItem> {
        let deadline = tokio::time::Instant::now() + HTTP_DEADLINE;
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

    /// The next `(event, data)`, leniently: other lines (`id:`, comments, `retry:`) and blocks
    /// without an event are skipped, as a browser would (for peers other than ours, such as
    /// the Go master); `None` at the end.
    ///
    /// Cancel safety: not cancel safe, as [`next`](Self::next).
    pub async fn next_event(&mut self) -> Option<(String, Value)> {
        loop {
            let block = self.next_block().await?;
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if let Some(event) = event {
                let value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
                return Some((event, value));
            }
        }
    }
}

fn parse_block(block: &str) -> SseItem {
    if let Some(c) = block.strip_prefix(':') {
        return SseItem::Comment(c.trim().to_string());
    }
    if let Some(r) = block.strip_prefix("retry:") {
        return SseItem::Retry(r.trim().parse().expect("retry: N"));
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
