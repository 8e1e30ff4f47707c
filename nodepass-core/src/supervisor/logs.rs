//! Per-instance log capture: a bounded ring of recent lines per instance, fed by a `tracing`
//! [`Layer`] that the program installs once.
//!
//! Every instance has a `tracing` span (target [`INSTANCE_SPAN_TARGET`], name `instance`, fields
//! `id` and `sink`). The supervisor runs the instance's tunnel inside that span, and the tunnel's
//! tasks inherit it, so every event a tunnel logs has the instance span in its scope.
//! [`LogCapture`] looks for that span and copies the event into the instance's [`LogRing`].
//!
//! How a span finds its ring without a global registry: when the supervisor creates an instance
//! it asks the current `tracing` dispatcher for a [`LogCapture`] layer (`downcast_ref`), registers
//! the ring there under a process-unique `sink` number, and then creates the span carrying that
//! number. When no `LogCapture` is installed, nothing is captured and [`Instance::logs`] stays
//! empty.
//!
//! [`Instance::logs`]: super::Instance::logs

use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::event::LogLine;
use crate::config::LogLevel;

/// The target of instance spans (and of nothing else).
pub const INSTANCE_SPAN_TARGET: &str = "nodepass::instance";
/// The name of instance spans.
const INSTANCE_SPAN_NAME: &str = "instance";
/// The target of the tunnels' periodic status lines (`log=event` keeps only these).
const STATUS_EVENT_TARGET: &str = "nodepass::event";

/// Process-unique numbers for [`LogRing`] registrations.
static NEXT_SINK: AtomicU64 = AtomicU64::new(1);

/// The recent log lines of one instance, oldest first, at most `capacity`.
#[derive(Debug)]
pub(crate) struct LogRing {
    capacity: usize,
    /// The instance's `log` level, as [`level_code`].
    level: AtomicU8,
    /// Never held across `.await` (and never while logging).
    lines: Mutex<Lines>,
    /// Woken for every new line (a stored permit covers lines pushed while nobody waits).
    pub(crate) notify: Notify,
}

#[derive(Debug, Default)]
struct Lines {
    ring: VecDeque<LogLine>,
    /// Sequence number of the next line pushed.
    next: u64,
}

impl LogRing {
    pub(crate) fn new(capacity: usize, level: LogLevel) -> Self {
        LogRing {
            capacity,
            level: AtomicU8::new(level_code(level)),
            lines: Mutex::new(Lines::default()),
            notify: Notify::new(),
        }
    }

    /// Follow a changed `log` parameter.
    pub(crate) fn set_level(&self, level: LogLevel) {
        self.level.store(level_code(level), Ordering::Relaxed);
    }

    fn lines(&self) -> std::sync::MutexGuard<'_, Lines> {
        // A poisoned ring still holds whole lines.
        crate::sync::lock(&self.lines)
    }

    /// Whether the instance's `log` level keeps an event with this metadata.
    fn accepts(&self, meta: &Metadata<'_>) -> bool {
        let level = self.level.load(Ordering::Relaxed);
        if level == LEVEL_EVENT {
            return meta.target() == STATUS_EVENT_TARGET;
        }
        level != LEVEL_NONE && severity(meta.level()) >= level
    }

    pub(crate) fn push(&self, line: LogLine) {
        if self.capacity == 0 {
            return;
        }
        {
            let mut lines = self.lines();
            if lines.ring.len() == self.capacity {
                lines.ring.pop_front();
            }
            lines.ring.push_back(line);
            lines.next += 1;
        }
        self.notify.notify_one();
    }

    /// Every line kept, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<LogLine> {
        self.lines().ring.iter().cloned().collect()
    }

    /// The lines pushed since sequence number `seq` that are still kept, and the next number.
    pub(crate) fn since(&self, seq: u64) -> (Vec<LogLine>, u64) {
        let lines = self.lines();
        let first_kept = lines.next - lines.ring.len() as u64;
        let skip = seq.saturating_sub(first_kept) as usize;
        (lines.ring.iter().skip(skip).cloned().collect(), lines.next)
    }
}

const LEVEL_NONE: u8 = u8::MAX;
const LEVEL_EVENT: u8 = u8::MAX - 1;

/// Severity order: debug (and trace) 0, info 1, warn 2, error 3.
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 2,
        Level::INFO => 1,
        _ => 0,
    }
}

fn level_code(level: LogLevel) -> u8 {
    match level {
        LogLevel::None => LEVEL_NONE,
        LogLevel::Event => LEVEL_EVENT,
        LogLevel::Debug => 0,
        LogLevel::Info => 1,
        LogLevel::Warn => 2,
        LogLevel::Error => 3,
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        _ => "debug",
    }
}

/// A `tracing` [`Layer`] that copies each event logged inside an instance's span into that
/// instance's ring of recent lines (what [`Instance::logs`](super::Instance::logs) returns and
/// `log` events carry).
///
/// Install it once, in the subscriber that is the global default, before opening a
/// [`Supervisor`](super::Supervisor):
///
/// ```no_run
/// use nodepass_core::supervisor::LogCapture;
/// use tracing_subscriber::filter::{LevelFilter, Targets};
/// use tracing_subscriber::{Layer, layer::SubscriberExt};
///
/// // Only nodepass events, down to debug (each instance's `log=` level filters further).
/// let nodepass = Targets::new().with_target("nodepass", LevelFilter::DEBUG);
/// let subscriber = tracing_subscriber::registry().with(LogCapture::new().with_filter(nodepass));
/// tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
/// ```
///
/// The filter is optional but keeps other crates' debug and trace events from being built only
/// to be dropped here.
///
/// Use the global default (`set_global_default`), not a scoped one (`set_default`): `tracing`
/// caches which callsites are enabled process-wide, so with a single scoped subscriber, lines
/// first logged on another thread can stay disabled for it.
///
/// The layer sees only events the subscriber enables: give other layers their own filters
/// (`Layer::with_filter`) rather than a global one, or an instance's `log=debug` lines never
/// reach it. Instances created while no `LogCapture` is installed keep no lines.
#[derive(Clone, Default)]
pub struct LogCapture {
    /// Registered rings by sink number; never held across `.await` or while logging.
    sinks: Arc<Mutex<HashMap<u64, Weak<LogRing>>>>,
}

impl fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogCapture").finish_non_exhaustive()
    }
}

impl LogCapture {
    /// A layer with no instances registered yet.
    pub fn new() -> Self {
        LogCapture::default()
    }

    fn sinks(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<LogRing>>> {
        crate::sync::lock(&self.sinks)
    }

    fn register(&self, sink: u64, ring: &Arc<LogRing>) {
        let mut sinks = self.sinks();
        // Forget instances that are gone, so the map stays as small as the live set.
        sinks.retain(|_, r| r.strong_count() > 0);
        sinks.insert(sink, Arc::downgrade(ring));
    }
}

/// Create the span of instance `id`, registering `ring` with the current dispatcher's
/// [`LogCapture`], if it has one.
pub(crate) fn instance_span(id: &str, ring: &Arc<LogRing>) -> tracing::Span {
    let sink = NEXT_SINK.fetch_add(1, Ordering::Relaxed);
    tracing::dispatcher::get_default(|dispatch| {
        if let Some(capture) = dispatch.downcast_ref::<LogCapture>() {
            capture.register(sink, ring);
        }
    });
    // ERROR level so that any filter that lets anything through keeps the span.
    tracing::span!(target: INSTANCE_SPAN_TARGET, Level::ERROR, "instance", id = %id, sink)
}

/// The ring an instance span points to, kept in the span's extensions.
struct SinkRef(Arc<LogRing>);

impl<S> Layer<S> for LogCapture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if meta.target() != INSTANCE_SPAN_TARGET || meta.name() != INSTANCE_SPAN_NAME {
            return;
        }
        let mut visitor = SinkVisitor(None);
        attrs.record(&mut visitor);
        let Some(sink) = visitor.0 else { return };
        let Some(ring) = self.sinks().get(&sink).and_then(Weak::upgrade) else {
            return;
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SinkRef(ring));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let extensions = span.extensions();
            let Some(SinkRef(ring)) = extensions.get::<SinkRef>() else {
                continue;
            };
            if ring.accepts(event.metadata()) {
                ring.push(format_line(event));
            }
            return;
        }
    }
}

struct SinkVisitor(Option<u64>);

impl Visit for SinkVisitor {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "sink" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// `message key=value key=value`, as the event recorded it.
fn format_line(event: &Event<'_>) -> LogLine {
    let mut visitor = LineVisitor::default();
    event.record(&mut visitor);
    let mut message = visitor.message;
    if !visitor.fields.is_empty() {
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(&visitor.fields);
    }
    LogLine {
        time: super::now_ms(),
        level: level_name(event.metadata().level()).to_owned(),
        message,
    }
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn ring(capacity: usize, level: LogLevel) -> Arc<LogRing> {
        Arc::new(LogRing::new(capacity, level))
    }

    #[test]
    fn ring_keeps_the_newest_lines_and_reports_what_is_new() {
        let r = ring(3, LogLevel::Info);
        for i in 0..5 {
            r.push(LogLine {
                time: i,
                level: "info".into(),
                message: format!("line {i}"),
            });
        }
        let kept: Vec<_> = r.snapshot().into_iter().map(|l| l.time).collect();
        assert_eq!(kept, [2, 3, 4]);
        let (new, next) = r.since(3);
        assert_eq!(new.iter().map(|l| l.time).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(next, 5);
        let (lost_some, _) = r.since(0);
        assert_eq!(lost_some.len(), 3, "only what is still kept");
        assert!(r.since(5).0.is_empty());
    }

    #[test]
    fn capture_follows_the_instance_span_and_its_level() {
        let capture = LogCapture::new();
        let subscriber = tracing_subscriber::registry().with(capture);
        tracing::subscriber::with_default(subscriber, || {
            let info = ring(10, LogLevel::Info);
            let quiet = ring(10, LogLevel::None);
            let events = ring(10, LogLevel::Event);
            let a = instance_span("0000000a", &info);
            let b = instance_span("0000000b", &quiet);
            let c = instance_span("0000000c", &events);
            tracing::info!("outside any instance");
            a.in_scope(|| {
                tracing::debug!("too detailed");
                let inner = tracing::info_span!("session", peer = "x");
                inner.in_scope(|| tracing::info!(bytes = 5, who = "me", "copied"));
                tracing::warn!("careful");
            });
            b.in_scope(|| tracing::error!("silenced"));
            c.in_scope(|| {
                tracing::info!("not a status line");
                tracing::info!(target: "nodepass::event", tcp_rx = 1, "status");
            });
            let lines = info.snapshot();
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert_eq!(lines[0].message, r#"copied bytes=5 who="me""#);
            assert_eq!(lines[0].level, "info");
            assert_eq!(
                (lines[1].level.as_str(), lines[1].message.as_str()),
                ("warn", "careful")
            );
            assert!(quiet.snapshot().is_empty());
            let status = events.snapshot();
            assert_eq!(status.len(), 1);
            assert_eq!(status[0].message, "status tcp_rx=1");
        });
    }

    #[test]
    fn without_a_capture_layer_nothing_is_kept() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let r = ring(10, LogLevel::Debug);
            instance_span("0000000d", &r).in_scope(|| tracing::error!("lost"));
            assert!(r.snapshot().is_empty());
        });
    }
}
