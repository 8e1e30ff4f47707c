//! Fixtures of the supervisor tests: an echo server, a store that fails on demand,
//! fast options, and bounded waits for statuses and events.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nodepass_core::Supervisor;
use nodepass_core::store::{
    InstanceRecord, MemoryStore, Store, StoreError, TrafficSample, TrafficTotals,
};
use nodepass_core::supervisor::{
    Event, EventKind, Events, Instance, InstanceStatus, LogCapture, SupervisorOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Upper bound of every wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A URL for a reverse-flow server on free loopback ports (tunnel and users).
pub const SERVER_URL: &str = "server://secret-key@127.0.0.1:0/127.0.0.1:0?mode=1";

/// A single-end client (a port forwarder) on a free loopback port.
pub const SINGLE_URL: &str = "client://127.0.0.1:0/127.0.0.1:9?mode=1";

/// Options with short intervals; starts wait up to [`DEADLINE`]. Installs the log capture.
pub fn options() -> SupervisorOptions {
    capture_logs();
    let mut o = SupervisorOptions::default();
    o.flush_interval = Duration::from_millis(200);
    o.stats_interval = Duration::from_millis(200);
    o.history_interval = Duration::from_millis(200);
    o.start_wait = DEADLINE;
    o.grace = Duration::from_secs(3);
    o
}

/// Install a [`LogCapture`] in the global default subscriber, once per test binary. (A scoped
/// default would not do: `tracing` caches callsite interest process-wide, and callsites first hit
/// on another thread would be disabled for it.)
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(LogCapture::new());
        tracing::subscriber::set_global_default(subscriber).expect("first global subscriber");
    });
}

pub async fn open(store: Arc<dyn Store>) -> (Supervisor, CancellationToken) {
    let token = CancellationToken::new();
    let sup = Supervisor::open(store, options(), token.clone())
        .await
        .expect("open supervisor");
    (sup, token)
}

pub async fn open_memory() -> (Supervisor, CancellationToken) {
    open(Arc::new(MemoryStore::new())).await
}

/// Run `f` with [`DEADLINE`], naming what was awaited on timeout.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Wait until the instance has `status`.
pub async fn wait_status(instance: &Instance, status: InstanceStatus) {
    let mut rx = instance.status();
    within(&format!("{} to be {status}", instance.id()), async {
        rx.wait_for(|s| *s == status).await.expect("instance alive");
    })
    .await;
}

/// Receive events until one satisfies `pred` (at most 10 000 events and [`DEADLINE`]).
pub async fn next_event(events: &mut Events, pred: impl Fn(&Event) -> bool) -> Event {
    next_event_in(events, DEADLINE, pred).await
}

/// [`next_event`] with another time limit (for tests on paused time).
pub async fn next_event_in(
    events: &mut Events,
    limit: Duration,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let find = async {
        for _ in 0..10_000 {
            let e = events.recv().await.expect("event channel open");
            if pred(&e) {
                return e;
            }
        }
        panic!("no matching event in 10000");
    };
    tokio::time::timeout(limit, find)
        .await
        .expect("timed out waiting for an event")
}

/// Whether `e` is an update of instance `id` to `status`.
pub fn is_update(e: &Event, id: &str, status: InstanceStatus) -> bool {
    e.kind == EventKind::Update
        && e.instance
            .as_ref()
            .is_some_and(|i| i.id == id && i.status == status)
}

/// A TCP echo server on 127.0.0.1:0 ([`nodepass_testkit::server::echo`]) that lives until
/// `stop` is cancelled.
pub async fn echo_server(stop: CancellationToken) -> SocketAddr {
    let server = nodepass_testkit::server::echo().await;
    let addr = server.addr();
    tokio::spawn(async move {
        stop.cancelled().await;
        drop(server);
    });
    addr
}

/// Send `payload`, half-close, read everything back.
pub async fn roundtrip(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    within("a round trip", async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(payload).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    })
    .await
}

/// Poll `cond` until it holds, at most [`DEADLINE`] ([`nodepass_testkit::eventually`]): for
/// figures that are updated just after the bytes they count were delivered.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    nodepass_testkit::eventually(DEADLINE, what, || std::future::ready(cond().then_some(()))).await
}

/// [`eventually`] for a condition that has to await (a store read).
pub async fn eventually_async<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    nodepass_testkit::eventually(DEADLINE, what, || {
        let check = cond();
        async move { check.await.then_some(()) }
    })
    .await
}

/// A [`MemoryStore`] whose every operation fails while `fail` is set.
#[derive(Debug, Default)]
pub struct FlakyStore {
    pub inner: MemoryStore,
    pub fail: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(StoreError::Io {
                op: "write (injected failure)",
                path: PathBuf::from("/flaky"),
                source: std::io::Error::other("injected"),
            })
        } else {
            Ok(())
        }
    }
}

#[nodepass_core::store::async_trait]
impl Store for FlakyStore {
    async fn load(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.check()?;
        self.inner.load().await
    }
    async fn put(&self, record: &InstanceRecord) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put(record).await
    }
    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete(id).await
    }
    async fn set_traffic(&self, totals: &[(String, TrafficTotals)]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set_traffic(totals).await
    }
    async fn reset_traffic(&self, id: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.reset_traffic(id).await
    }
    async fn append_history(
        &self,
        ts_ms: i64,
        s: &[(String, TrafficTotals)],
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append_history(ts_ms, s).await
    }
    async fn prune_history(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.prune_history(older_than_ms).await
    }
    async fn history(&self, id: &str, since_ms: i64) -> Result<Vec<TrafficSample>, StoreError> {
        self.check()?;
        self.inner.history(id, since_ms).await
    }
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.setting(name).await
    }
    async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set_setting(name, value).await
    }
}
