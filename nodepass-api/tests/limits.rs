//! What keeps slow, huge or foreign requests from hurting the master: header and body
//! timeouts, the body limit, the connection limit, CORS; and the transports: HTTP/2, TLS with
//! a self-signed certificate, TLS from files reloaded when they change.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nodepass_api::{CorsOrigins, Master};
use nodepass_core::Config;
use nodepass_core::store::MemoryStore;
use nodepass_core::transport::tls::{ClientTls, ClientVerify};
use support::{Api, DEADLINE, KEY, options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Read until the server closes the connection (or the deadline); returns what was read.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection within the deadline");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let mut o = options();
    o.header_timeout = Duration::from_millis(300);
    o.body_timeout = Duration::from_millis(300);
    let api = Api::start(o).await;

    // Headers never finished: the connection is closed.
    let mut slow = TcpStream::connect(api.addr).await.unwrap();
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let answer = read_to_close(&mut slow).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A body that never arrives: 408.
    let mut slow = TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"url\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");

    // A chunked body over the limit: 413, nothing created.
    let mut big = TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    big.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
    for _ in 0..9 {
        if big.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let answer = read_to_close(&mut big).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        api.get("/v1/instances").await.json()["data"]["instances"],
        serde_json::json!([])
    );
    api.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed() {
    let mut o = options();
    o.max_connections = 2;
    let api = Api::start(o).await;
    let held: Vec<TcpStream> = vec![
        TcpStream::connect(api.addr).await.unwrap(),
        TcpStream::connect(api.addr).await.unwrap(),
    ];
    // Give the master a moment to accept both (bounded: it accepts in order).
    let mut third = TcpStream::connect(api.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = read_to_close(&mut third).await;
    assert!(answer.is_empty(), "{answer}");
    drop(held);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut s = TcpStream::connect(api.addr).await.unwrap();
        let _ = s
            .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        if read_to_close(&mut s).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.stop().await;
}

#[tokio::test]
async fn http2_without_tls() {
    let api = Api::start(options()).await;
    let stream = TcpStream::connect(api.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for path in ["/api/v1/health", "/api/v1/instances"] {
        let req = Request::builder()
            .uri(format!("http://{}{path}", api.addr))
            .header("x-api-key", KEY)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(br#"{"success":true"#));
    }
    api.stop().await;
}

#[tokio::test]
async fn cors_default_allows_any_origin_and_a_list_restricts() {
    let api = Api::start(options()).await;
    let res = api
        .authed(Method::GET, "/v1/instances")
        .header("origin", "https://panel.example")
        .send()
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["access-control-allow-origin"], "*");
    let pre = api
        .req(Method::OPTIONS, "/v1/instances")
        .header("origin", "https://panel.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key, content-type")
        .send()
        .await;
    assert_eq!(pre.status, StatusCode::NO_CONTENT);
    assert_eq!(pre.headers["access-control-allow-origin"], "*");
    let methods = pre.headers["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let headers = pre.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(headers.contains("x-api-key"), "{headers}");
    assert!(headers.contains("cache-control"), "{headers}");
    api.stop().await;

    let mut o = options();
    o.cors = CorsOrigins::parse("https://ok.example").unwrap();
    let api = Api::start(o).await;
    let ok = api
        .authed(Method::GET, "/v1/instances")
        .header("origin", "https://ok.example")
        .send()
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://ok.example"
    );
    assert_eq!(ok.headers["vary"], "origin");
    let refused = api
        .authed(Method::POST, "/v1/instances")
        .header("origin", "https://evil.example")
        .json(r#"{"url":"server://k@127.0.0.1:0/127.0.0.1:0"}"#)
        .send()
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error_code(), "FORBIDDEN");
    assert!(refused.headers.get("access-control-allow-origin").is_none());
    let same = api
        .authed(Method::GET, "/v1/instances")
        .header("origin", &format!("http://{}", api.addr))
        .send()
        .await;
    assert_eq!(same.status, StatusCode::OK, "same origin is always fine");
    assert_eq!(
        api.get("/v1/instances").await.json()["data"]["instances"],
        serde_json::json!([])
    );
    api.stop().await;
}

/// Start a master for `url` with the test options; returns its address and stop token.
async fn start_url(
    url: &str,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let Config::Master(config) = Config::parse(url).unwrap() else {
        unreachable!()
    };
    let master = Master::with_store(&config, options(), Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    assert!(master.url().starts_with("https://"), "{}", master.url());
    let addr = master.local_addr();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move { master.run(token).await.unwrap() });
    (addr, stop, task)
}

/// GET /api/v1/health over TLS; returns the status and the server's leaf certificate.
async fn https_health(addr: std::net::SocketAddr) -> (StatusCode, Vec<u8>) {
    let tls = ClientTls::new(&ClientVerify::SelfSigned, "localhost").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio::time::timeout(DEADLINE, tls.connect(tcp))
        .await
        .unwrap()
        .unwrap();
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/api/v1/health")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    (res.status(), leaf)
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let (addr, stop, task) = start_url("master://127.0.0.1:0/api?tls=1&api=envelope").await;
    let (status, leaf) = https_health(addr).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!leaf.is_empty());
    // Plain HTTP on the TLS port gets nothing useful.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut plain).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    stop.cancel();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn tls_certificate_files_are_reloaded_when_they_change() {
    let dir = nodepass_testkit::temp_dir("api-tls");
    let (crt, key) = (dir.path().join("api.crt"), dir.path().join("api.key"));
    let write = |name: &str| {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        std::fs::write(&crt, ck.cert.pem()).unwrap();
        ck.cert.der().to_vec()
    };
    let first = write("first.example");
    let url = format!(
        "master://127.0.0.1:0/api?api=envelope&tls=2&crt={}&key={}",
        crt.display(),
        key.display()
    );
    let (addr, stop, task) = start_url(&url).await;
    let (status, leaf) = https_health(addr).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(leaf, first);

    // New files (a different length, so the change is seen even within one mtime tick).
    let second = write("second-certificate.example");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, leaf) = https_health(addr).await;
        assert_eq!(status, StatusCode::OK);
        if leaf == second {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
}
