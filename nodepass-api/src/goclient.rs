//! A minimal HTTP/1.1 client (hyper) for talking to a master's API (a Go NodePass master being
//! imported, or ours from the CLI): one request with the key in `X-API-Key`, a deadline and a
//! size limit. Plain `http://` only.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// The largest answer read (an instance list of thousands of instances fits).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// `GET url` with `X-API-Key: key`; the body of a 200 answer. Errors are sentences that never
/// contain the key.
pub(crate) async fn get_json(url: &str, key: &str, timeout: Duration) -> Result<Bytes, String> {
    tokio::time::timeout(timeout, request(url, key, None))
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
}

/// `POST url` with a JSON body and `X-API-Key: key`; the body of a 2xx answer.
pub(crate) async fn post_json(
    url: &str,
    key: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, String> {
    tokio::time::timeout(timeout, request(url, key, Some(body)))
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
}

async fn request(url: &str, key: &str, body: Option<Bytes>) -> Result<Bytes, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("{url:?} is not a URL; expected http://HOST:PORT/PREFIX"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https:// masters are not supported yet; use http:// (e.g. through an SSH tunnel)"
                    .into(),
            );
        }
        _ => return Err(format!("{url:?}: expected http://HOST:PORT/PREFIX")),
    }
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {host}:{port} failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let key = http::HeaderValue::from_str(key)
        .map_err(|_| "key: not valid in an HTTP header".to_string())?;
    let builder = Request::builder()
        .uri(path)
        .header(header::HOST, authority)
        .header("x-api-key", key)
        .header(header::ACCEPT, "application/json");
    let req = match body {
        None => builder
            .method(http::Method::GET)
            .body(Full::new(Bytes::new())),
        Some(body) => builder
            .method(http::Method::POST)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body)),
    }
    .map_err(|e| format!("cannot build the request: {e}"))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request to {url} failed: {e}"))?;
    let status = res.status();
    let body = Limited::new(res.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("cannot read the answer of {url}: {e}"))?
        .to_bytes();
    driver.abort();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("{url} answered {status}: {}", text.trim()));
    }
    Ok(body)
}
