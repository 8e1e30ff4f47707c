//! What every request handler shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepass_core::Supervisor;
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

/// The master's shared state; one `Arc` per connection.
pub(crate) struct State {
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
}
