//! The NodePass URL language, parsed once into typed configuration.
//!
//! ```text
//! server://[KEY@]TUNNEL_HOST:PORT/TARGET_HOST:PORT[,TARGET...][?params]
//! client://[KEY@]SERVER_HOST:PORT/TARGET_HOST:PORT[,TARGET...][?params]
//! master://LISTEN_HOST:PORT[/PREFIX][?params]
//! ```
//!
//! `Config::from_str` validates everything (unknown, invalid or misplaced parameters are
//! [`ConfigError`]s naming the parameter, the value and what is allowed); `Display` gives the
//! canonical URL with every default filled in and the key masked, and
//! [`Config::to_url_with_secret`] the same with the key, which parses back to an equal value.

mod secret;
mod types;

pub use secret::{MASK, TunnelKey};
pub use types::*;

/// Why a URL was refused. Messages name the field, the bad value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL as a whole is malformed.
    #[error("invalid url: {0}")]
    Syntax(String),
    /// A parameter (or URL part such as `port` or `target`) has a bad value.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The parameter or URL part.
        field: String,
        /// The value given (never a secret).
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// A parameter the URL language does not know.
    #[error("unknown parameter {name:?} (allowed for {role}: {allowed})")]
    Unknown {
        /// The parameter name.
        name: String,
        /// The role of the URL.
        role: Role,
        /// The parameters this role accepts.
        allowed: String,
    },
    /// A known parameter that does not apply to this role.
    #[error("parameter {name:?} does not apply to {role} (it is for {applies_to})")]
    WrongRole {
        /// The parameter name.
        name: String,
        /// The role of the URL.
        role: Role,
        /// Which roles accept it.
        applies_to: String,
    },
    /// A required part is missing.
    #[error("missing {field}: {reason}")]
    Missing {
        /// The missing field.
        field: String,
        /// Why it is needed.
        reason: String,
    },
    /// A parameter given twice.
    #[error("parameter {0:?} is given more than once")]
    Duplicate(String),
}
