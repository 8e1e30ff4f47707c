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
//!
//! ```
//! use nodepass_core::config::{Config, Role};
//!
//! let config: Config = "server://secret@:10101/127.0.0.1:8080?max=512".parse().unwrap();
//! assert_eq!(config.role(), Role::Server);
//! assert!(config.to_string().starts_with("server://****@:10101/127.0.0.1:8080?log=info&tls=0"));
//! assert_eq!(Config::parse(&config.to_url_with_secret()), Ok(config));
//! ```
//!
//! # Typed construction
//! Without a URL string: [`ServerConfig::builder`], [`ClientConfig::builder`] and
//! [`MasterConfig::builder`] start from the addresses a configuration cannot do without; each
//! setter stands for one URL parameter (named in its documentation) and `build()` checks
//! everything. The URL stays the canonical form: a builder records each setting in the URL's
//! spelling and `build()` runs the URL parser's own checks, so a builder and the equivalent URL
//! give equal values, and bad input is the [`ConfigError`] the URL would get, naming the URL
//! parameter (`wsping`, `max`, `target`, ...). Addresses are [`Endpoint`]s:
//! `Endpoint::from(SocketAddr)`, [`Endpoint::new`] for a host name, [`Endpoint::any`] for all
//! addresses.
//!
//! Defaults: a setting not made keeps the value of a URL without that parameter: no explicit
//! key (it is derived from the tunnel port), `log` info, `dns` 5m, `dial` auto, no `read`
//! timeout, no `rate` limit, `slot` 65536, `proxy` off, nothing blocked, TCP and UDP on,
//! round-robin balancing without probes, `tls` off, `max` 1024 (server), `min` 64 (client),
//! `mode` 0 (auto), `type` 0 (TCP), `wspath` `/`, `wsping` 20s, `wsbind` 1; a master gets the
//! prefix `/api`, the `nodepass` dialect and the SQLite state file at its default place.
//!
//! ```
//! use std::net::SocketAddr;
//! use nodepass_core::config::{Config, ServerConfig, ServerMode};
//!
//! let tunnel: SocketAddr = "127.0.0.1:10101".parse().unwrap();
//! let users: SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! let built = ServerConfig::builder(tunnel, users)
//!     .key("example-key")
//!     .mode(ServerMode::Reverse)
//!     .max(512)
//!     .build()?;
//! let url = "server://example-key@127.0.0.1:10101/127.0.0.1:8080?mode=1&max=512";
//! assert_eq!(Config::Server(built), Config::parse(url)?);
//!
//! let bad = ServerConfig::builder(tunnel, users).max(0).build().unwrap_err();
//! assert!(bad.to_string().starts_with("invalid max \"0\""));
//! # Ok::<(), nodepass_core::config::ConfigError>(())
//! ```
//!
//! # Layout
//! - `types`: the typed configuration ([`Config`], [`ServerConfig`], [`TunnelParams`], ...).
//! - `builder`: [`ServerBuilder`], [`ClientBuilder`], [`MasterBuilder`]: typed construction,
//!   validated by the URL parser's own checks.
//! - `parse`: `FromStr` (URL structure and cross-parameter checks).
//! - `params`: the parameter table, which role accepts what, and each value's spelling.
//! - `address`: `HOST:PORT` parsing and printing.
//! - `duration`: Go-style durations (`1h30m`).
//! - `display`: the canonical URL.
//! - `secret`: the masked [`TunnelKey`] and the port-derived key.

mod address;
mod builder;
mod display;
pub mod duration;
mod params;
mod parse;
mod secret;
mod types;

#[cfg(test)]
mod balance_tests;
#[cfg(test)]
mod builder_tests;
#[cfg(test)]
mod tests;

pub use builder::{ClientBuilder, MasterBuilder, ServerBuilder};
pub use params::PARAMS;
pub use parse::MAX_URL_LEN;
pub use secret::{MASK, TunnelKey, WEAK_KEY_MIN_DISTINCT, WEAK_KEY_MIN_LEN};
pub use types::*;

impl Config {
    /// The role named by the scheme.
    pub fn role(&self) -> Role {
        match self {
            Config::Server(_) => Role::Server,
            Config::Client(_) => Role::Client,
            Config::Master(_) => Role::Master,
        }
    }

    /// The `log` level, whatever the role.
    pub fn log_level(&self) -> LogLevel {
        match self {
            Config::Server(c) => c.params.log,
            Config::Client(c) => c.params.log,
            Config::Master(c) => c.log,
        }
    }

    /// True when this instance relies on a port-derived key that others can reach (see
    /// [`TunnelParams::is_derived_key_exposed`]). False for a master and for a single-end
    /// client, which have no tunnel peer to authenticate.
    pub fn is_derived_key_exposed(&self) -> bool {
        match self {
            Config::Server(c) => c.params.is_derived_key_exposed(),
            Config::Client(c) => {
                c.mode != ClientMode::SingleEnd && c.params.is_derived_key_exposed()
            }
            Config::Master(_) => false,
        }
    }

    /// The tunnel parameters of a server or client; `None` for a master.
    pub fn tunnel_params(&self) -> Option<&TunnelParams> {
        match self {
            Config::Server(c) => Some(&c.params),
            Config::Client(c) => Some(&c.params),
            Config::Master(_) => None,
        }
    }
}

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
