//! Errors: [`ApiError`] for starting and running the master, [`HttpError`] for one request, and
//! the one place where core errors become HTTP statuses ([`From<SupervisorError>`]).

use http::StatusCode;
use nodepass_core::store::StoreError;
use nodepass_core::supervisor::SupervisorError;

/// Why the master could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A setting of the master (URL, environment variable) is unusable.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The parameter or environment variable.
        field: String,
        /// Why.
        reason: String,
    },
    /// The state store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The supervisor could not start.
    #[error("cannot start the supervisor")]
    Supervisor(#[source] SupervisorError),
    /// The API listener could not be bound, or TLS could not be set up.
    #[error(transparent)]
    Core(#[from] nodepass_core::Error),
    /// An I/O operation outside the store failed.
    #[error("cannot {op}")]
    Io {
        /// What was being done.
        op: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The machine-readable `error.code` of a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the request is malformed or a field is invalid.
    Validation,
    /// 401: no API key, or a wrong one.
    Unauthorized,
    /// 403: the request's origin is not allowed.
    Forbidden,
    /// 404: no such path or instance.
    NotFound,
    /// 405: the path exists, the method does not (see `Allow`).
    MethodNotAllowed,
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 409: the request conflicts with the current state.
    Conflict,
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 429: too many concurrent requests of this kind.
    RateLimited,
    /// 500: the master failed (the state store, most likely).
    Internal,
    /// 502: another server (a Go master being imported) could not be read.
    BadGateway,
    /// 503: the master is shutting down.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in status order (for documentation and tests).
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::Validation,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::BadGateway,
        ErrorCode::Unavailable,
    ];

    /// The text of `error.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Validation => "VALIDATION_ERROR",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Internal => "INTERNAL_ERROR",
            ErrorCode::BadGateway => "BAD_GATEWAY",
            ErrorCode::Unavailable => "SERVICE_UNAVAILABLE",
        }
    }

    /// The HTTP status that carries this code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Validation => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A failed request: the code and a message that names the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The code (and so the status).
    pub code: ErrorCode,
    /// For the client; never contains a key.
    pub message: String,
}

impl HttpError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HttpError {
            code,
            message: message.into(),
        }
    }

    /// 400 naming `field`.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Validation, format!("{field}: {reason}"))
    }
}

/// THE mapping from core errors to HTTP statuses; no other code decides a status for a core
/// error.
impl From<SupervisorError> for HttpError {
    fn from(e: SupervisorError) -> Self {
        let code = match &e {
            SupervisorError::NotFound(_) => ErrorCode::NotFound,
            SupervisorError::Invalid { .. } => ErrorCode::Validation,
            SupervisorError::Conflict(_) => ErrorCode::Conflict,
            SupervisorError::ShuttingDown => ErrorCode::Unavailable,
            SupervisorError::Store(StoreError::Unavailable { .. }) => {
                // Fleet mode: the database is down or restarting. Nothing was changed.
                tracing::warn!(error = %error_chain(&e), "request refused: store unavailable");
                return HttpError::new(
                    ErrorCode::Unavailable,
                    "the state database is unavailable; nothing was changed, try again later",
                );
            }
            SupervisorError::Store(_) => ErrorCode::Internal,
            _ => ErrorCode::Internal,
        };
        if code == ErrorCode::Internal {
            // The detail (paths, SQLite messages) goes to the log, not to the client.
            tracing::error!(error = %error_chain(&e), "request failed");
            return HttpError::new(code, "internal error, see the master's log");
        }
        HttpError::new(code, e.to_string())
    }
}

/// A store error outside the supervisor (the API key setting) is an internal error.
impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        HttpError::from(SupervisorError::Store(e))
    }
}

/// `error: source: source...` on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_documented_statuses() {
        let table: Vec<(&str, u16)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str(), c.status().as_u16()))
            .collect();
        assert_eq!(
            table,
            [
                ("VALIDATION_ERROR", 400),
                ("UNAUTHORIZED", 401),
                ("FORBIDDEN", 403),
                ("NOT_FOUND", 404),
                ("METHOD_NOT_ALLOWED", 405),
                ("REQUEST_TIMEOUT", 408),
                ("CONFLICT", 409),
                ("PAYLOAD_TOO_LARGE", 413),
                ("UNSUPPORTED_MEDIA_TYPE", 415),
                ("RATE_LIMITED", 429),
                ("INTERNAL_ERROR", 500),
                ("BAD_GATEWAY", 502),
                ("SERVICE_UNAVAILABLE", 503),
            ]
        );
    }

    #[test]
    fn supervisor_errors_map_to_one_status_each() {
        let cases = [
            (SupervisorError::NotFound("0000abcd".into()), 404),
            (
                SupervisorError::Invalid {
                    field: "url".into(),
                    reason: "bad".into(),
                },
                400,
            ),
            (SupervisorError::Conflict("port in use".into()), 409),
            (SupervisorError::ShuttingDown, 503),
            (
                SupervisorError::Store(StoreError::Invalid { reason: "x".into() }),
                500,
            ),
        ];
        for (e, status) in cases {
            let text = e.to_string();
            let h = HttpError::from(e);
            assert_eq!(h.code.status().as_u16(), status, "{text}");
        }
        let h = HttpError::from(SupervisorError::Invalid {
            field: "alias".into(),
            reason: "too long".into(),
        });
        assert_eq!(h.message, "invalid alias: too long");
        let h = HttpError::from(SupervisorError::Store(StoreError::Invalid {
            reason: "/secret/path".into(),
        }));
        assert!(!h.message.contains("/secret/path"), "{}", h.message);
    }
}
