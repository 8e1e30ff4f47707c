//! The error type of nodepass-core.

use std::io;
use std::net::SocketAddr;

use crate::config::ConfigError;
use crate::protocol::ProtocolError;

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
    /// The tunnel peer could not be reached.
    #[error("cannot connect to {addr}")]
    Connect {
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
    /// The tunnel handshake failed (wrong key, version mismatch, bad peer, timeout).
    #[error("handshake with {peer} failed: {reason}")]
    Handshake {
        /// The peer.
        peer: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The peer broke the wire protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
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

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
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
