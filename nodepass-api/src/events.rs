//! `GET /v1/events`: the supervisor's events as server-sent events.
//!
//! A stream opens with a `retry:` hint and one `initial` event per instance, then forwards
//! `create`, `update`, `delete`, `log` and `stats` as they happen; a comment line is sent as a
//! heartbeat; a subscriber that fell behind gets `resync` followed by fresh `initial` events;
//! when the master shuts down every stream gets `shutdown` and ends. In the NodePass dialect a
//! rotation of the API key is sent as an `update` of its pseudo-instance `********` (masked).
//! In fleet mode the stream covers the whole fleet: `initial` lists every node's instances,
//! and the other nodes' instances send `create`, `update`, `stats` and `delete` as the fleet
//! refresh sees them change (their `log` lines stay on their node).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Frame;
use nodepass_core::config::ApiDialect;
use nodepass_core::supervisor::{Event, EventKind, Events};
use std::collections::HashMap;
use tokio::sync::{broadcast, mpsc};

use crate::error::{ErrorCode, HttpError};
use crate::np::{self, NpEvent, NpInstance};
use crate::openapi::ErrorEnvelope;
use crate::router::{Ctx, Reply};
use crate::state::State;
use crate::view::{EventType, EventView, InstanceView, now_rfc3339, rfc3339};
use std::sync::Arc;

/// Frames buffered per stream before the stream waits for its client.
const STREAM_BUFFER: usize = 64;

/// A client that takes no frame for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Server-sent events: `initial`, `create`, `update`, `delete`, `log`, `stats`, `resync`,
/// `shutdown` (the `data:` of each is an `EventView`).
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events",
    tag = "events",
    responses(
        (status = 200, description = "`text/event-stream`; each `data:` line is an EventView", content_type = "text/event-stream", body = String),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 429, description = "Too many open event streams", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn stream(ctx: Ctx) -> Reply {
    let state = ctx.state;
    let permit = state
        .event_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| HttpError::new(ErrorCode::RateLimited, "too many open event streams"))?;
    let events = state.supervisor.subscribe();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let pump_state = state.clone();
    state.tracker.spawn(async move {
        let _permit = permit;
        pump(pump_state, events, tx).await;
    });
    let mut res = Response::new(ChannelBody { rx }.boxed());
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// One `event:`/`data:` frame.
fn frame(event: &EventView) -> Bytes {
    let json = serde_json::to_string(event).expect("events serialize");
    Bytes::from(format!("event: {}\ndata: {json}\n\n", event.kind.as_str()))
}

/// Why a stream ended.
enum End {
    ClientGone,
}

async fn send(tx: &mpsc::Sender<Bytes>, bytes: Bytes) -> Result<(), End> {
    match tokio::time::timeout(SEND_TIMEOUT, tx.send(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(End::ClientGone),
    }
}

async fn initial(state: &State, tx: &mpsc::Sender<Bytes>) -> Result<(), End> {
    if state.dialect != ApiDialect::Envelope {
        let key = crate::instances::key_view(state, None);
        send(
            tx,
            np_frame("initial", now_rfc3339(), Some(key), String::new()),
        )
        .await?;
        for info in crate::fleet::list(state) {
            let view = NpInstance::of(&state.supervisor, &info);
            send(
                tx,
                np_frame("initial", now_rfc3339(), Some(view), String::new()),
            )
            .await?;
        }
        return Ok(());
    }
    for info in crate::fleet::list(state) {
        let view = InstanceView::of(&state.supervisor, &info);
        send(tx, frame(&EventView::own(EventType::Initial, Some(view)))).await?;
    }
    Ok(())
}

/// One NodePass frame: every event is `event: instance`, its type is in the data.
fn np_frame(kind: &'static str, time: String, instance: Option<NpInstance>, logs: String) -> Bytes {
    let event = NpEvent {
        kind,
        time,
        instance,
        logs,
    };
    let json = serde_json::to_string(&event).expect("events serialize");
    Bytes::from(format!("event: instance\ndata: {json}\n\n"))
}

/// What NodePass frontends see of one supervisor event: `log` events one line each, `stats`
/// as `update` only when the figures changed since the last one sent for the instance.
fn np_frames(state: &State, e: &Event, last: &mut HashMap<String, NpInstance>) -> Vec<Bytes> {
    let time = rfc3339(e.time);
    let view = e
        .instance
        .as_ref()
        .map(|i| NpInstance::of(&state.supervisor, i));
    let kind = match e.kind {
        EventKind::Create => "create",
        EventKind::Update => "update",
        EventKind::Delete => "delete",
        EventKind::Log => {
            return e
                .logs
                .iter()
                .flatten()
                .map(|l| np_frame("log", time.clone(), view.clone(), np::log_text(l)))
                .collect();
        }
        EventKind::Stats => {
            let Some(v) = &view else { return Vec::new() };
            if last.get(&v.id).is_some_and(|old| same_figures(old, v)) {
                return Vec::new();
            }
            "update"
        }
        _ => return Vec::new(),
    };
    if let Some(v) = &view {
        if e.kind == EventKind::Delete {
            last.remove(&v.id);
        } else {
            last.insert(v.id.clone(), v.clone());
        }
    }
    vec![np_frame(kind, time, view, String::new())]
}

/// The figures a `stats` event may change.
fn same_figures(a: &NpInstance, b: &NpInstance) -> bool {
    (
        a.status, a.pool, a.tcps, a.udps, a.tcprx, a.tcptx, a.udprx, a.udptx, a.ping,
    ) == (
        b.status, b.pool, b.tcps, b.udps, b.tcprx, b.tcptx, b.udprx, b.udptx, b.ping,
    )
}

/// The next event of another node's instance; never, outside fleet mode.
async fn remote_event(
    rx: &mut Option<broadcast::Receiver<Event>>,
) -> Result<Event, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn pump(state: Arc<State>, mut events: Events, tx: mpsc::Sender<Bytes>) {
    let settings = state.event_settings;
    let mut remote = state.fleet.as_ref().map(|f| f.subscribe());
    let result: Result<(), End> = async {
        send(
            &tx,
            Bytes::from(format!("retry: {}\n\n", settings.retry.as_millis())),
        )
        .await?;
        initial(&state, &tx).await?;
        let nodepass = state.dialect != ApiDialect::Envelope;
        let mut rotations = state.keys.rotations();
        let mut last = HashMap::new();
        let start = tokio::time::Instant::now() + settings.heartbeat;
        let mut heartbeat = tokio::time::interval_at(start, settings.heartbeat);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => break,
                _ = tx.closed() => return Err(End::ClientGone),
                _ = heartbeat.tick() => send(&tx, Bytes::from_static(b": heartbeat\n\n")).await?,
                // The API key was rotated: NodePass sends its pseudo-instance as `update` (with
                // the new key; ours stays masked). The envelope dialect has no pseudo-instance.
                Ok(()) = rotations.changed(), if nodepass => {
                    let key = crate::instances::key_view(&state, None);
                    send(&tx, np_frame("update", now_rfc3339(), Some(key), String::new())).await?;
                }
                event = events.recv() => match event {
                    None => break,
                    Some(e) if e.kind == EventKind::Shutdown => break,
                    Some(e) if e.kind == EventKind::Resync => {
                        // NodePass has no resync: its frontends get fresh initial events.
                        if !nodepass {
                            send(&tx, frame(&EventView::own(EventType::Resync, None))).await?;
                        }
                        initial(&state, &tx).await?;
                    }
                    Some(e) if nodepass => {
                        for f in np_frames(&state, &e, &mut last) {
                            send(&tx, f).await?;
                        }
                    }
                    Some(e) => send(&tx, frame(&EventView::of(&state.supervisor, &e))).await?,
                },
                event = remote_event(&mut remote) => match event {
                    Ok(e) if nodepass => {
                        for f in np_frames(&state, &e, &mut last) {
                            send(&tx, f).await?;
                        }
                    }
                    Ok(e) => send(&tx, frame(&EventView::of(&state.supervisor, &e))).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if !nodepass {
                            send(&tx, frame(&EventView::own(EventType::Resync, None))).await?;
                        }
                        initial(&state, &tx).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => remote = None,
                },
            }
        }
        if nodepass {
            return send(
                &tx,
                np_frame("shutdown", now_rfc3339(), None, String::new()),
            )
            .await;
        }
        send(&tx, frame(&EventView::own(EventType::Shutdown, None))).await
    }
    .await;
    if let Err(End::ClientGone) = result {
        tracing::debug!("event stream closed by the client");
    }
}

/// Timings of the event streams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventSettings {
    /// A comment line this often.
    pub heartbeat: Duration,
    /// The `retry:` hint.
    pub retry: Duration,
}

/// The response body of a stream: frames from the pump task.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Master, MasterOptions};
    use nodepass_core::Config;
    use nodepass_core::store::MemoryStore;
    use nodepass_core::supervisor::{CreateInstance, UpdateInstance};

    #[tokio::test]
    async fn a_lagging_stream_gets_resync_then_fresh_initial_events() {
        let Config::Master(config) =
            Config::parse("master://127.0.0.1:0/api?api=envelope").unwrap()
        else {
            unreachable!()
        };
        let mut options = MasterOptions {
            api_key: Some(crate::ApiKey::new("k").unwrap()),
            ..Default::default()
        };
        options.supervisor.event_capacity = 2;
        let master = Master::with_store(&config, options, Arc::new(MemoryStore::new()))
            .await
            .unwrap();
        let state = master.state.clone();
        let sup = state.supervisor.clone();
        let info = sup
            .create(CreateInstance {
                url: "server://k@127.0.0.1:0/127.0.0.1:0".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        // Room for one frame: the pump blocks while nobody reads, and the supervisor's buffer
        // of 2 overflows.
        let (tx, mut rx) = mpsc::channel(1);
        let pump = tokio::spawn(pump(state.clone(), sup.subscribe(), tx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while rx.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pump never started"
            );
            tokio::task::yield_now().await;
        }
        for n in 0..10 {
            let update = UpdateInstance {
                alias: Some(Some(format!("alias-{n}"))),
                ..Default::default()
            };
            sup.update(&info.id, update).await.unwrap();
        }
        let mut frames = Vec::new();
        while !frames
            .iter()
            .any(|f: &String| f.starts_with("event: initial") && f.contains("alias-9"))
        {
            let frame = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("frames within the deadline")
                .expect("the stream is open");
            frames.push(String::from_utf8(frame.to_vec()).unwrap());
        }
        let resync = frames
            .iter()
            .position(|f| f.starts_with("event: resync"))
            .unwrap_or_else(|| panic!("no resync in {frames:?}"));
        assert!(
            frames[resync + 1].starts_with("event: initial"),
            "{frames:?}"
        );
        state.shutdown.cancel();
        while let Some(frame) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the stream ends within the deadline")
        {
            frames.push(String::from_utf8(frame.to_vec()).unwrap());
        }
        assert!(
            frames.last().unwrap().starts_with("event: shutdown"),
            "{frames:?}"
        );
        tokio::time::timeout(Duration::from_secs(10), pump)
            .await
            .unwrap()
            .unwrap();
    }
}
