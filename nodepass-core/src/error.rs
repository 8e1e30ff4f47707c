//! The error type of nodepass-core.

use std::io;

use crate::config::ConfigError;

/// Everything that can go wrong in nodepass-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A name did not resolve.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host name.
        host: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// TLS setup (certificates, keys) failed.
    #[error("tls: {0}")]
    Tls(String),
    /// A feature named in the configuration is not available in this build.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An I/O error with context.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// The kinds of failure a program may want to tell apart (see [`Error::kind`],
/// [`TunnelError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer refused our key, or could not prove it knows the key (wrong key on one side,
    /// or a man in the middle).
    AuthRefused,
    /// The peer could not be reached: name resolution, connect refused or timed out, the
    /// connection closed or timed out before the handshake finished.
    Unreachable,
    /// An established connection to the peer was lost (silence, close, goodbye).
    Disconnected,
    /// TLS failed: certificates, keys, verification, or a TLS mode the peer does not accept.
    Tls,
    /// The peer broke the wire protocol or speaks another version.
    Protocol,
    /// The configuration is invalid or asks for something this build cannot do.
    Config,
    /// A local I/O failure (binding a listener, a socket option, a file).
    Io,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::AuthRefused => "authentication refused",
            ErrorKind::Unreachable => "peer unreachable",
            ErrorKind::Disconnected => "peer disconnected",
            ErrorKind::Tls => "tls failure",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Config => "configuration error",
            ErrorKind::Io => "i/o error",
        })
    }
}

/// Why a tunnel is reconnecting or has failed, as kept in its
/// [`TunnelState`](crate::tunnel::TunnelState): the [`ErrorKind`] and the message (its
/// `Display`, readable for users). Cheap to clone and comparable, unlike [`Error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TunnelError {
    kind: ErrorKind,
    message: String,
}

impl TunnelError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        TunnelError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message (the same text as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<&Error> for TunnelError {
    fn from(e: &Error) -> Self {
        TunnelError::new(e.kind(), e.to_string())
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::Unsupported(_) => ErrorKind::Config,
            Error::Resolve { .. } => ErrorKind::Unreachable,
            Error::Tls(_) => ErrorKind::Tls,
            Error::Bind { .. } | Error::Io { .. } => ErrorKind::Io,
        }
    }

    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Building configuration errors from code outside the parser.
pub(crate) trait ConfigErrorExt {
    /// An invalid value of a named field.
    fn invalid(field: &str, value: &str, reason: &str) -> Self;
}

impl ConfigErrorExt for Error {
    fn invalid(field: &str, value: &str, reason: &str) -> Self {
        Error::Config(ConfigError::Invalid {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        })
    }
}
