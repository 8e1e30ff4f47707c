//! `GET /v1/instances/{id}/traffic`: rate and total series from the master's stored traffic
//! history, so that frontends need not keep their own.
//!
//! The supervisor stores the cumulative counters of every running instance once per history
//! interval (60 s by default) and keeps 7 days. [`series`] turns those samples into fixed-width
//! buckets:
//! - the bytes between two consecutive samples are spread evenly over the time between them;
//!   a bucket's rate is its bytes divided by the time it has data for;
//! - counters survive a master restart (the store holds the totals), so a restart is no reset;
//!   the time the master was down is a gap: when two samples are further apart than
//!   [`GAP_FACTOR`] intervals, their bytes are put in the last interval before the later sample
//!   and the buckets in between have no data (`null`);
//! - a `reset` writes an all-zero sample (the supervisor does it), so the bytes after a reset
//!   count from zero; any other drop of a counter (counts lost when a master died between two
//!   flushes) is taken as no traffic, never as a spike.

use http::StatusCode;
use nodepass_core::store::{TrafficSample, TrafficTotals};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::HttpError;
use crate::openapi::{Envelope, ErrorEnvelope};
use crate::response;
use crate::router::{Ctx, Reply};

/// Samples further apart than this many history intervals leave a gap.
pub(crate) const GAP_FACTOR: i64 = 3;

/// At most this many points per answer.
pub(crate) const MAX_POINTS: i64 = 2000;

/// The longest range one request may cover: 8 days (the history keeps 7).
const MAX_RANGE_MS: i64 = 8 * 24 * 3600 * 1000;

/// Query of `GET /v1/instances/{id}/traffic`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TrafficQuery {
    /// Start, unix milliseconds (default: `to` minus one hour).
    #[param(value_type = Option<i64>, minimum = 0)]
    from: Option<String>,
    /// End, unix milliseconds (default: now).
    #[param(value_type = Option<i64>, minimum = 0)]
    to: Option<String>,
    /// Bucket width in seconds, at least 1 (default: the range over 360, at least the history
    /// interval).
    #[param(value_type = Option<i64>, minimum = 0)]
    step: Option<String>,
}

/// Four series of the same length as `time`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub(crate) struct Counters<T> {
    /// TCP bytes received (the instance's `tcprx`).
    pub tcprx: Vec<T>,
    /// TCP bytes sent (`tcptx`).
    pub tcptx: Vec<T>,
    /// UDP bytes received (`udprx`).
    pub udprx: Vec<T>,
    /// UDP bytes sent (`udptx`).
    pub udptx: Vec<T>,
}

impl<T: Copy> Counters<T> {
    fn push(&mut self, v: [T; 4]) {
        self.tcprx.push(v[0]);
        self.tcptx.push(v[1]);
        self.udprx.push(v[2]);
        self.udptx.push(v[3]);
    }
}

/// The answer of `GET /v1/instances/{id}/traffic`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct TrafficSeries {
    /// The instance.
    pub id: String,
    /// Start of the first bucket, unix milliseconds.
    pub from: i64,
    /// End of the range, unix milliseconds.
    pub to: i64,
    /// Bucket width, seconds.
    pub step: i64,
    /// Start of each bucket, unix milliseconds.
    pub time: Vec<i64>,
    /// Average bytes per second in each bucket; `null` where nothing was recorded (instance
    /// stopped, master down).
    #[schema(value_type = Counters<Option<f64>>)]
    pub rate: Counters<Option<f64>>,
    /// The cumulative counters at the end of each bucket (the last sample before it); `null`
    /// before the first sample.
    #[schema(value_type = Counters<Option<u64>>)]
    pub total: Counters<Option<u64>>,
}

fn counters(t: &TrafficTotals) -> [u64; 4] {
    [t.tcp_in, t.tcp_out, t.udp_in, t.udp_out]
}

/// Bytes between two consecutive samples, per counter.
fn delta(a: &TrafficTotals, b: &TrafficTotals) -> [u64; 4] {
    let (a, b) = (counters(a), counters(b));
    let mut out = [0; 4];
    for i in 0..4 {
        // A drop is either the reset marker (all zero: nothing since) or counts lost at a
        // crash: no traffic either way.
        out[i] = b[i].saturating_sub(a[i]);
    }
    out
}

/// Bucket the samples (oldest first; those before `from` are used as the starting point)
/// into `[from, to)` with `step_ms` wide buckets. `interval_ms` is the history interval.
pub(crate) fn series(
    id: &str,
    samples: &[TrafficSample],
    from: i64,
    to: i64,
    step_ms: i64,
    interval_ms: i64,
) -> TrafficSeries {
    let n = usize::try_from((to - from + step_ms - 1) / step_ms).unwrap_or(0);
    let mut bytes = vec![[0f64; 4]; n];
    let mut covered = vec![0i64; n];
    let gap = interval_ms.saturating_mul(GAP_FACTOR);
    for pair in samples.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.ts_ms <= a.ts_ms {
            continue;
        }
        let d = delta(&a.traffic, &b.traffic);
        // Across a gap the bytes went through in the last interval before `b`.
        let start = if b.ts_ms - a.ts_ms > gap {
            b.ts_ms - interval_ms
        } else {
            a.ts_ms
        };
        let span = (b.ts_ms - start) as f64;
        let first = ((start.max(from) - from) / step_ms).max(0);
        let mut k = first;
        while k < n as i64 {
            let lo = from + k * step_ms;
            let hi = lo + step_ms;
            if lo >= b.ts_ms || lo >= to {
                break;
            }
            let overlap = hi.min(b.ts_ms).min(to) - lo.max(start);
            if overlap > 0 {
                let share = overlap as f64 / span;
                let slot = &mut bytes[k as usize];
                for i in 0..4 {
                    slot[i] += d[i] as f64 * share;
                }
                covered[k as usize] += overlap;
            }
            k += 1;
        }
    }
    let mut out = TrafficSeries {
        id: id.to_string(),
        from,
        to,
        step: step_ms / 1000,
        time: Vec::with_capacity(n),
        rate: Counters::default(),
        total: Counters::default(),
    };
    let mut next = 0;
    let mut last: Option<[u64; 4]> = None;
    for k in 0..n {
        let lo = from + k as i64 * step_ms;
        let hi = (lo + step_ms).min(to);
        out.time.push(lo);
        if covered[k] > 0 {
            let secs = covered[k] as f64 / 1000.0;
            out.rate.push(bytes[k].map(|b| Some(b / secs)));
        } else {
            out.rate.push([None; 4]);
        }
        while next < samples.len() && samples[next].ts_ms <= hi {
            last = Some(counters(&samples[next].traffic));
            next += 1;
        }
        out.total.push(match last {
            Some(c) => c.map(Some),
            None => [None; 4],
        });
    }
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn int(field: &str, value: Option<&str>) -> Result<Option<i64>, HttpError> {
    value
        .map(|v| match v.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n),
            Ok(_) => Err(HttpError::invalid(field, "must not be negative")),
            Err(_) => Err(HttpError::invalid(
                field,
                format!("{v:?} is not a whole number"),
            )),
        })
        .transpose()
}

/// The traffic history of an instance as rate and total series.
#[utoipa::path(
    get,
    path = "/v1/instances/{id}/traffic",
    operation_id = "instanceTraffic",
    tag = "instances",
    params(("id" = String, Path, description = "Instance id"), TrafficQuery),
    responses(
        (status = 200, description = "Rate and total series", body = Envelope<TrafficSeries>),
        (status = 400, description = "Invalid range", body = ErrorEnvelope),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 404, description = "No such instance", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn traffic(ctx: Ctx) -> Reply {
    let q: TrafficQuery = ctx.query()?;
    let to = int("to", q.to.as_deref())?.unwrap_or_else(now_ms);
    let from = int("from", q.from.as_deref())?.unwrap_or(to.saturating_sub(3_600_000));
    if from >= to {
        return Err(HttpError::invalid("from", "must be before `to`"));
    }
    if to - from > MAX_RANGE_MS {
        return Err(HttpError::invalid(
            "from",
            "the range may span at most 8 days",
        ));
    }
    let interval_ms = i64::try_from(ctx.state.history_interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1000);
    let step_ms = match int("step", q.step.as_deref())? {
        Some(s) if s < 1 => return Err(HttpError::invalid("step", "must be at least 1 second")),
        Some(s) => s.saturating_mul(1000),
        None => ((to - from) / 360).max(interval_ms).saturating_add(999) / 1000 * 1000,
    };
    if (to - from) / step_ms >= MAX_POINTS {
        return Err(HttpError::invalid(
            "step",
            format!("too small for this range: at most {MAX_POINTS} points"),
        ));
    }
    let id = ctx.param().to_string();
    let state = ctx.state.clone();
    let since = from.saturating_sub(interval_ms.saturating_mul(GAP_FACTOR));
    let samples = match crate::fleet::remote_history(&state, &id, since).await? {
        Some(samples) => samples,
        None => state.supervisor.history(&id, since).await?,
    };
    let samples: Vec<TrafficSample> = samples.into_iter().filter(|s| s.ts_ms <= to).collect();
    Ok(response::data(
        ctx.state.dialect,
        StatusCode::OK,
        &series(&id, &samples, from, to, step_ms, interval_ms),
    ))
}

/// The endpoint in the NodePass dialect's OpenAPI document (bare JSON bodies).
pub(crate) fn np_paths() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    let int = |d: &str| json!({ "type": "string", "pattern": "^[0-9]+$", "description": d });
    vec![(
        "/v1/instances/{id}/traffic",
        json!({ "get": {
            "operationId": "instanceTraffic", "tags": ["instances"],
            "summary": "Rate and total series from the stored traffic history (an addition)",
            "security": [{ "ApiKeyAuth": [] }, { "bearer": [] }],
            "parameters": [
                { "name": "id", "in": "path", "required": true, "schema": { "type": "string", "minLength": 1 } },
                { "name": "from", "in": "query", "required": false, "schema": int("Start, unix ms (default: `to` minus 1 h)") },
                { "name": "to", "in": "query", "required": false, "schema": int("End, unix ms (default: now)") },
                { "name": "step", "in": "query", "required": false, "schema": int("Bucket width, seconds") },
            ],
            "responses": {
                "200": { "description": "The series", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/TrafficSeries" } } } },
                "400": err("Invalid range (the message names the parameter)"),
                "401": err("Missing or wrong API key"),
                "403": err("The request's origin is not allowed"),
                "404": err("No such instance"),
            },
        } }),
    )]
}

/// Schemas of [`np_paths`].
pub(crate) fn np_schemas() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let rates = json!({ "type": "array", "items": { "type": ["number", "null"] } });
    let totals = json!({ "type": "array", "items": { "type": ["integer", "null"], "minimum": 0 } });
    let four = |s: &serde_json::Value| {
        json!({ "type": "object", "required": ["tcprx", "tcptx", "udprx", "udptx"],
        "properties": { "tcprx": s, "tcptx": s, "udprx": s, "udptx": s } })
    };
    vec![(
        "TrafficSeries",
        json!({ "type": "object", "required": ["id", "from", "to", "step", "time", "rate", "total"],
            "properties": {
                "id": { "type": "string" }, "from": { "type": "integer" }, "to": { "type": "integer" },
                "step": { "type": "integer", "description": "Seconds" },
                "time": { "type": "array", "items": { "type": "integer" }, "description": "Bucket starts, unix ms" },
                "rate": four(&rates), "total": four(&totals) } }),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts_ms: i64, tcp_in: u64) -> TrafficSample {
        TrafficSample {
            ts_ms,
            traffic: TrafficTotals {
                tcp_in,
                tcp_out: tcp_in * 2,
                udp_in: 0,
                udp_out: 0,
            },
        }
    }

    #[test]
    fn steady_traffic_gives_a_steady_rate_and_growing_totals() {
        // 1000 bytes per 60 s sample = 16.67 B/s.
        let s: Vec<_> = (0..=10)
            .map(|i| sample(i * 60_000, i as u64 * 1000))
            .collect();
        let out = series("a", &s, 0, 600_000, 60_000, 60_000);
        assert_eq!(out.time.len(), 10);
        for r in &out.rate.tcprx {
            assert!((r.unwrap() - 1000.0 / 60.0).abs() < 1e-9, "{r:?}");
        }
        for r in &out.rate.tcptx {
            assert!((r.unwrap() - 2000.0 / 60.0).abs() < 1e-9, "{r:?}");
        }
        assert_eq!(out.total.tcprx[0], Some(1000));
        assert_eq!(out.total.tcprx[9], Some(10_000));
    }

    #[test]
    fn a_reset_marker_restarts_the_count_and_a_drop_is_no_spike() {
        let s = vec![
            sample(0, 5000),
            sample(60_000, 6000),
            sample(90_000, 0), // reset
            sample(120_000, 600),
            sample(180_000, 500), // counts lost at a crash: a drop
            sample(240_000, 1100),
        ];
        let out = series("a", &s, 0, 240_000, 60_000, 60_000);
        let r: Vec<f64> = out.rate.tcprx.iter().map(|r| r.unwrap()).collect();
        assert!((r[0] - 1000.0 / 60.0).abs() < 1e-9);
        assert!((r[1] - 600.0 / 60.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r[2], 0.0);
        assert!((r[3] - 600.0 / 60.0).abs() < 1e-9);
        assert!(r.iter().all(|r| *r >= 0.0));
    }

    #[test]
    fn a_gap_has_no_data_and_its_bytes_land_before_the_next_sample() {
        let s = vec![sample(0, 0), sample(60_000, 600), sample(600_000, 1200)];
        let out = series("a", &s, 0, 600_000, 60_000, 60_000);
        assert!(out.rate.tcprx[0].is_some());
        for k in 1..9 {
            assert_eq!(out.rate.tcprx[k], None, "bucket {k}");
            assert_eq!(out.total.tcprx[k], Some(600));
        }
        assert!((out.rate.tcprx[9].unwrap() - 10.0).abs() < 1e-9);
    }
}
