//! nodepass-api: the NodePass master, an HTTP(S) REST API over a `nodepass-core`
//! [`Supervisor`](nodepass_core::Supervisor).
//!
//! `nodepass "master://0.0.0.0:9090/api?tls=1"` serves `https://HOST:9090/api/v1/...`: instances
//! are created, controlled and watched over JSON and server-sent events, with an API key,
//! CORS, limits on slow or large requests, Prometheus metrics, and its own OpenAPI 3.1
//! document and Swagger UI (served from the binary, works offline). Two dialects (`api=` in
//! the master URL): `nodepass` (default), the contract of the Go NodePass v1.14 master that
//! NodePass frontends use; `envelope`, `{"success", "data"}` envelopes. `docs/api.md`
//! describes every endpoint.
//!
//! # Layout
//! - `master`: [`Master`] (bind, run, shutdown), [`MasterOptions`], [`serve`].
//! - `router`: the route table, built from the OpenAPI document, and the request pipeline
//!   (origin, prefix, path, key, method, handler).
//! - `openapi`: the envelope dialect's utoipa document; `openapi_np`: the NodePass dialect's;
//!   `docs`: `openapi.json`, Swagger UI, health.
//! - `instances`, `events`, `info`, `tcping`, `metrics`, `keys`, `transfer` (export, import,
//!   migration from a Go master): the endpoints; `goclient`: the HTTP client `transfer` uses.
//! - `view`: the instance and event objects of the envelope dialect (RFC 3339 times); `np`
//!   and `info_np`: the NodePass dialect's instance, event, log line and `/info`.
//! - `targets`: the per-target field of the instance object and its metrics.
//! - `source_limit`: per-source connection cap and first-byte timeout of the listener.
//! - `dashboard`: the web dashboard at `/` (files compiled into the binary); `session`: its
//!   cookie sign-in and CSRF check; `traffic`: rate and total series from the stored history.
//! - `auth` ([`ApiKey`]), `cors` ([`CorsOrigins`]), `body` (JSON bodies, limits), `response`
//!   (both dialects' bodies), `error` ([`ApiError`], and the one mapping of core errors to
//!   statuses).
//!
//! # Shutdown
//! [`Master::run`] takes a `CancellationToken`. When it is cancelled the listener closes, every
//! event stream gets a `shutdown` event, in-flight requests get a grace period, and the
//! supervisor stops every instance and flushes traffic totals.
//!
//! # Example
//! ```no_run
//! use nodepass_api::{Master, MasterOptions};
//! use nodepass_core::Config;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let Config::Master(config) = Config::parse("master://127.0.0.1:0/api?state=/tmp/np.db")? else {
//!     unreachable!()
//! };
//! let mut master = Master::bind(&config, MasterOptions::from_env()?).await?;
//! if let Some(key) = master.take_generated_key() {
//!     eprintln!("API key: {}", key.expose());
//! }
//! println!("serving {}/v1/instances", master.url());
//! let shutdown = CancellationToken::new();
//! master.run(shutdown).await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod body;
mod cors;
mod dashboard;
mod docs;
mod error;
mod events;
mod fleet;
mod goclient;
mod info;
mod info_np;
mod instances;
mod keys;
mod master;
mod metrics;
mod np;
mod openapi;
mod openapi_np;
mod response;
mod router;
mod session;
mod source_limit;
mod state;
mod sync;
mod targets;
mod tcping;
mod traffic;
mod transfer;
mod view;

pub use auth::{ApiKey, KEY_HEADER, KEY_SETTING};
pub use cors::{CORS_ENV, CorsOrigins};
pub use error::{ApiError, ErrorCode, HttpError};
pub use fleet::{DEFAULT_INTERVAL as DEFAULT_FLEET_INTERVAL, FLEET_INTERVAL_ENV};
pub use master::{
    API_KEY_ENV, DEFAULT_MAX_BODY_BYTES, DEFAULT_STATE_FILE, Master, MasterOptions,
    default_state_path, serve, serve_with,
};
pub use session::{CSRF_HEADER, SESSION_COOKIE, SESSION_LIFETIME};
pub use transfer::{
    BACKUP_FORMAT, Backup, BackupInstance, ImportReport, Imported, Skipped, backup, import_from_go,
    import_remote,
};
