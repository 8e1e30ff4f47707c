//! Response bodies in both dialects. `api=envelope`: `{"success": true, "data": ...}` or
//! `{"success": false, "error": {"code": ..., "message": ...}}`. `api=nodepass`: the bare value,
//! or `{"error": "message", "code": "..."}`. And the body type.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use serde::Serialize;

use nodepass_core::config::ApiDialect;

use crate::error::{ErrorCode, HttpError};

/// The body of every response: a buffer, or a stream for server-sent events.
pub type Body = BoxBody<Bytes, Infallible>;

/// `application/json`, the type of every envelope.
pub(crate) const JSON: &str = "application/json";

#[derive(Serialize)]
struct Success<'a, T: Serialize> {
    success: bool,
    data: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

#[derive(Serialize)]
struct Failure<'a> {
    success: bool,
    error: FailureDetail<'a>,
}

#[derive(Serialize)]
struct FailureDetail<'a> {
    code: &'a str,
    message: &'a str,
}

/// A body of bytes.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// An empty body.
pub(crate) fn empty() -> Body {
    Empty::new().boxed()
}

/// A response with `status`, `content-type` and a buffered body.
pub(crate) fn bytes(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        res.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    res
}

/// `{"success": true, "data": data}` with `status`.
pub(crate) fn ok<T: Serialize>(status: StatusCode, data: &T) -> Response<Body> {
    with_message(status, data, None)
}

/// `{"success": true, "data": data, "message": message}` with `status`.
pub(crate) fn with_message<T: Serialize>(
    status: StatusCode,
    data: &T,
    message: Option<&str>,
) -> Response<Body> {
    let envelope = Success {
        success: true,
        data,
        message,
    };
    match serde_json::to_vec(&envelope) {
        Ok(json) => bytes(status, JSON, json),
        Err(e) => failure(
            ApiDialect::Envelope,
            &HttpError::new(
                ErrorCode::Internal,
                format!("cannot encode the response: {e}"),
            ),
        ),
    }
}

/// The bare JSON of `data` with `status` (the NodePass dialect).
pub(crate) fn bare<T: Serialize>(status: StatusCode, data: &T) -> Response<Body> {
    match serde_json::to_vec(data) {
        Ok(json) => bytes(status, JSON, json),
        Err(e) => failure(
            ApiDialect::NodePass,
            &HttpError::new(
                ErrorCode::Internal,
                format!("cannot encode the response: {e}"),
            ),
        ),
    }
}

/// `data` in the dialect's form: bare, or inside the success envelope.
pub(crate) fn data<T: Serialize>(
    dialect: ApiDialect,
    status: StatusCode,
    data: &T,
) -> Response<Body> {
    match dialect {
        ApiDialect::Envelope => ok(status, data),
        _ => bare(status, data),
    }
}

#[derive(Serialize)]
struct BareFailure<'a> {
    error: &'a str,
    code: &'a str,
}

/// The failure body for `error` in the dialect's form, with its status.
pub(crate) fn failure(dialect: ApiDialect, error: &HttpError) -> Response<Body> {
    let json = match dialect {
        ApiDialect::Envelope => serde_json::to_vec(&Failure {
            success: false,
            error: FailureDetail {
                code: error.code.as_str(),
                message: &error.message,
            },
        }),
        _ => serde_json::to_vec(&BareFailure {
            error: &error.message,
            code: error.code.as_str(),
        }),
    }
    .expect("strings always serialize");
    let mut res = bytes(error.code.status(), JSON, json);
    if error.code == ErrorCode::Unauthorized {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="nodepass""#),
        );
    }
    res
}

/// 204 without a body.
pub(crate) fn no_content() -> Response<Body> {
    let mut res = Response::new(empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}
