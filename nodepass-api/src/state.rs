//! What every request handler shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepass_core::Supervisor;
use nodepass_core::config::{ApiDialect, LogLevel, TlsMode};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Keys;
use crate::body::BodyLimits;
use crate::cors::Cors;
use crate::docs::Docs;
use crate::events::EventSettings;
use crate::info::CpuMeter;
use crate::router::Router;
use crate::session::Sessions;
use crate::tcping::Prober;

/// What the master's own URL says, for `/v1/info` and for the instances it creates (which
/// inherit its `log` and `tls` where their URL sets none, as in NodePass).
#[derive(Debug, Clone)]
pub(crate) struct MasterFacts {
    /// `log=` of the master URL.
    pub log: LogLevel,
    /// `tls=`, `crt=`, `key=` of the master URL.
    pub tls: TlsMode,
    /// The host of the master URL (NodePass's `name`).
    pub name: String,
    /// A random id made at first start and kept in the store (NodePass's `mid`).
    pub mid: String,
}

/// The master's shared state; one `Arc` per connection.
pub(crate) struct State {
    /// The dialect served (`api=`).
    pub dialect: ApiDialect,
    /// The master's own settings.
    pub facts: MasterFacts,
    /// The master's alias (`POST /v1/info`), kept in the store; std lock, never held across
    /// `.await`.
    pub alias: std::sync::Mutex<String>,
    /// The instances.
    pub supervisor: Supervisor,
    /// The API key.
    pub keys: Keys,
    /// The origin policy.
    pub cors: Cors,
    /// The path prefix (`/api`), without a trailing `/`.
    pub prefix: String,
    /// The route table.
    pub router: Router,
    /// `openapi.json` and the Swagger UI.
    pub docs: Docs,
    /// Request body limits.
    pub limits: BodyLimits,
    /// When the master started.
    pub started: Instant,
    /// The same, unix milliseconds.
    pub started_unix_ms: i64,
    /// CPU use between `/v1/info` calls.
    pub cpu: CpuMeter,
    /// `/v1/tcping` bounds.
    pub tcping: Prober,
    /// Event stream timings.
    pub event_settings: EventSettings,
    /// One permit per open event stream.
    pub event_slots: Arc<Semaphore>,
    /// Cancelled when the master shuts down: event streams say `shutdown` and end.
    pub shutdown: CancellationToken,
    /// The event stream tasks.
    pub tracker: TaskTracker,
    /// Dashboard sign-in sessions.
    pub sessions: Sessions,
    /// How often the supervisor stores a traffic history sample.
    pub history_interval: Duration,
    /// Fleet mode (`store=postgres://...`): the shared store and the cached fleet view.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}
