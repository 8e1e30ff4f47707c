//! Reading request bodies: `application/json` only, a size limit, a deadline, and JSON errors
//! that name the offending field.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::error::{ErrorCode, HttpError};

/// Limits applied to every request body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Largest accepted body.
    pub max_bytes: usize,
    /// The whole body must arrive within this time.
    pub timeout: Duration,
}

/// Check the content type, then read the body within the limits.
pub(crate) async fn read_json_bytes(
    headers: &HeaderMap,
    body: Incoming,
    limits: BodyLimits,
) -> Result<Bytes, HttpError> {
    check_json_content_type(headers)?;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limits.max_bytes as u64
    {
        return Err(too_large(limits.max_bytes));
    }
    let collect = Limited::new(body, limits.max_bytes).collect();
    match tokio::time::timeout(limits.timeout, collect).await {
        Err(_) => Err(HttpError::new(
            ErrorCode::RequestTimeout,
            format!(
                "body: not received within {} s",
                limits.timeout.as_secs_f64()
            ),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(too_large(limits.max_bytes))
        }
        Ok(Err(e)) => Err(HttpError::invalid("body", format!("cannot read it: {e}"))),
    }
}

/// Read and decode a JSON body into `T`.
pub(crate) async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Incoming,
    limits: BodyLimits,
) -> Result<T, HttpError> {
    let bytes = read_json_bytes(headers, body, limits).await?;
    decode(&bytes)
}

fn too_large(max: usize) -> HttpError {
    HttpError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "body: larger than the limit of {max} bytes ({} KiB)",
            max / 1024
        ),
    )
}

/// 415 unless the content type is `application/json` (parameters such as `charset` allowed).
pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(HttpError::new(
            ErrorCode::UnsupportedMediaType,
            "content-type: missing, expected application/json",
        ));
    };
    let text = value.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(HttpError::new(
            ErrorCode::UnsupportedMediaType,
            format!("content-type: {text:?} is not supported, expected application/json"),
        ))
    }
}

/// Decode `bytes` as `T`; the error names the field (`meta.tags.env: invalid type...`).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(HttpError::invalid("body", "expected a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(describe)?;
    de.end().map_err(|e| {
        HttpError::invalid("body", format!("trailing data after the JSON value: {e}"))
    })?;
    Ok(value)
}

fn describe(e: serde_path_to_error::Error<serde_json::Error>) -> HttpError {
    use serde_json::error::Category;
    let path = e.path().to_string();
    let inner = e.inner();
    match inner.classify() {
        Category::Data => {
            let message = strip_position(&inner.to_string());
            // `.` is the body itself (a missing or unknown field: serde's message names it);
            // `?` and `[n]` appear only for input that is not the expected object.
            let field = if path == "." {
                field_of(&message).unwrap_or("body").to_string()
            } else if path.contains('?') || path.starts_with('[') {
                "body".to_string()
            } else {
                path
            };
            HttpError::invalid(&field, message)
        }
        Category::Eof if path == "." => HttpError::invalid(
            "body",
            "expected a JSON object, the body is empty or cut short",
        ),
        _ => HttpError::invalid("body", format!("invalid JSON: {inner}")),
    }
}

/// `missing field `url`` → `url` (also for `unknown field`); nothing for other messages.
fn field_of(message: &str) -> Option<&str> {
    if !(message.starts_with("missing field") || message.starts_with("unknown field")) {
        return None;
    }
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// serde_json appends ` at line L column C`; the path says more for data errors.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        flag: bool,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        url: String,
        #[serde(default)]
        restart: bool,
        #[serde(default)]
        inner: Option<Inner>,
    }

    fn message(json: &str) -> String {
        decode::<Outer>(json.as_bytes()).unwrap_err().message
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(message("{}"), "url: missing field `url`");
        assert!(
            message(r#"{"url":"x","nope":1}"#).starts_with("nope: unknown field `nope`"),
            "{}",
            message(r#"{"url":"x","nope":1}"#)
        );
        assert_eq!(
            message(r#"{"url":"x","restart":"yes"}"#),
            "restart: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            message(r#"{"url":"x","inner":{"flag":1}}"#),
            "inner.flag: invalid type: integer `1`, expected a boolean"
        );
        assert!(
            message(r#"{"url":"x","inner":{"z":1}}"#).starts_with("inner.z: unknown field `z`")
        );
        assert_eq!(
            message(""),
            "body: expected a JSON object, the body is empty or cut short"
        );
        assert!(message("{").starts_with("body: "), "{}", message("{"));
        assert!(
            message("{url}").starts_with("body: invalid JSON"),
            "{}",
            message("{url}")
        );
        assert!(message(r#"{"url":"x"} []"#).starts_with("body: trailing data"));
        assert!(
            message("[1]").starts_with("body: expected a JSON object"),
            "{}",
            message("[1]")
        );
        assert_eq!(message("5"), "body: expected a JSON object");
        assert_eq!(message(r#" ["url"]"#), "body: expected a JSON object");
    }

    #[test]
    fn content_type_must_be_json() {
        let mut h = HeaderMap::new();
        assert_eq!(
            check_json_content_type(&h).unwrap_err().code,
            ErrorCode::UnsupportedMediaType
        );
        for ok in ["application/json", "Application/JSON; charset=utf-8"] {
            h.insert(header::CONTENT_TYPE, ok.parse().unwrap());
            assert!(check_json_content_type(&h).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            h.insert(header::CONTENT_TYPE, bad.parse().unwrap());
            assert!(check_json_content_type(&h).is_err(), "{bad}");
        }
    }
}
