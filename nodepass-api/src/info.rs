//! `GET /v1/info`: version, uptime, platform, CPU and memory use (from `/proc` on Linux), and
//! instance counts by status.

use std::sync::Mutex;
use std::time::Instant;

use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use http::Response;
use nodepass_core::config::ApiDialect;
use nodepass_core::store::MAX_ALIAS_CHARS;
use serde::Deserialize;

use crate::error::HttpError;
use crate::info_np::np_info;
use crate::openapi::{Envelope, ErrorEnvelope};
use crate::response::{self, Body};
use crate::router::{Ctx, Reply};
use crate::state::State;
use crate::view::{Status, rfc3339};

/// Linux reports process CPU time in `USER_HZ` ticks, 100 per second on every architecture
/// the kernel exposes to user space this way.
const TICKS_PER_SECOND: f64 = 100.0;

/// Shorter intervals than this reuse the previous CPU figures (too few ticks to be useful).
const MIN_SAMPLE_SECONDS: f64 = 0.25;

/// CPU use.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, Default, PartialEq)]
pub(crate) struct CpuInfo {
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// CPU used by the master since the previous `/v1/info` (or its start), in percent of one
    /// core (up to `cores` × 100). `null` where `/proc` is not available.
    pub process_percent: Option<f64>,
    /// CPU used by the whole system over the same interval, in percent of all cores.
    pub system_percent: Option<f64>,
    /// 1, 5 and 15 minute load averages.
    pub load: Option<[f64; 3]>,
}

/// Memory use in bytes; `null` where `/proc` is not available.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, Default, PartialEq, Eq)]
pub(crate) struct MemoryInfo {
    /// Resident set size of the master process.
    pub process_rss: Option<u64>,
    /// Total system memory.
    pub system_total: Option<u64>,
    /// Memory available for new work.
    pub system_available: Option<u64>,
}

/// Instances by status.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, Default, PartialEq, Eq)]
pub(crate) struct InstanceCounts {
    /// All instances.
    pub total: usize,
    /// `running`.
    pub running: usize,
    /// `starting`.
    pub starting: usize,
    /// `stopped`.
    pub stopped: usize,
    /// `error`.
    pub error: usize,
}

/// `data` of `GET /v1/info`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct MasterInfo {
    /// The master's alias (`POST /v1/info`).
    pub alias: String,
    /// The nodepass version.
    pub version: &'static str,
    /// Seconds since the master started.
    pub uptime: u64,
    /// When the master started (RFC 3339).
    pub started_at: String,
    /// Operating system (`linux`, `macos`, ...).
    pub os: &'static str,
    /// CPU architecture (`x86_64`, `aarch64`, ...).
    pub arch: &'static str,
    /// Process id.
    pub pid: u32,
    /// CPU use.
    pub cpu: CpuInfo,
    /// Memory use.
    pub memory: MemoryInfo,
    /// Instances by status.
    pub instances: InstanceCounts,
}

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    process_ticks: Option<u64>,
    /// (busy, total) jiffies of all CPUs.
    system: Option<(u64, u64)>,
}

impl CpuSample {
    fn now() -> Self {
        CpuSample {
            at: Instant::now(),
            process_ticks: process_ticks(),
            system: system_ticks(),
        }
    }
}

/// Keeps the previous CPU reading so that each `/v1/info` reports use since the last one.
#[derive(Debug)]
pub(crate) struct CpuMeter {
    // std lock: held only while computing, never across `.await`.
    last: Mutex<(CpuSample, CpuInfo)>,
}

impl CpuMeter {
    pub(crate) fn new() -> Self {
        CpuMeter {
            last: Mutex::new((CpuSample::now(), CpuInfo::default())),
        }
    }

    pub(crate) fn read(&self) -> CpuInfo {
        let now = CpuSample::now();
        let mut last = crate::sync::lock(&self.last);
        let (prev, prev_info) = *last;
        let seconds = now.at.duration_since(prev.at).as_secs_f64();
        let mut info = CpuInfo {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load: load_average(),
            ..prev_info
        };
        if seconds >= MIN_SAMPLE_SECONDS || prev_info.process_percent.is_none() {
            info.process_percent = match (prev.process_ticks, now.process_ticks) {
                (Some(a), Some(b)) if seconds > 0.0 => Some(round2(
                    b.saturating_sub(a) as f64 / TICKS_PER_SECOND / seconds * 100.0,
                )),
                _ => None,
            };
            info.system_percent = match (prev.system, now.system) {
                (Some((busy_a, total_a)), Some((busy_b, total_b))) if total_b > total_a => {
                    Some(round2(
                        busy_b.saturating_sub(busy_a) as f64 / (total_b - total_a) as f64 * 100.0,
                    ))
                }
                _ => None,
            };
            *last = (now, info);
        }
        info
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// utime + stime of this process, from `/proc/self/stat`.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_process_ticks(&stat)
}

fn parse_process_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// (busy, total) from the `cpu` line of `/proc/stat`.
fn system_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_system_ticks(&stat)
}

fn parse_system_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

pub(crate) fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

pub(crate) fn memory() -> MemoryInfo {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    MemoryInfo {
        process_rss: kib_field(&status, "VmRSS:"),
        system_total: kib_field(&meminfo, "MemTotal:"),
        system_available: kib_field(&meminfo, "MemAvailable:"),
    }
}

/// `VmRSS:   1234 kB` → 1234 × 1024.
pub(crate) fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// What the master is and how it is doing.
#[utoipa::path(
    get,
    path = "/v1/info",
    operation_id = "info",
    tag = "master",
    responses(
        (status = 200, description = "The master", body = Envelope<MasterInfo>),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn info(ctx: Ctx) -> Reply {
    Ok(current(&ctx.state))
}

/// The body of `POST /v1/info`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InfoBody {
    /// The master's new alias (at most 256 characters; `""` clears it).
    alias: String,
}

/// Set the master's alias (kept in the state store); answers as `GET /v1/info`.
#[utoipa::path(
    post,
    path = "/v1/info",
    operation_id = "updateInfo",
    tag = "master",
    request_body(content = InfoBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The master", body = Envelope<MasterInfo>),
        (status = 400, description = "Invalid body or alias", body = ErrorEnvelope),
        (status = 401, description = "Missing or wrong API key", body = ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = ErrorEnvelope),
        (status = 415, description = "Not application/json", body = ErrorEnvelope),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn update(ctx: Ctx) -> Reply {
    let (state, headers, incoming) = ctx.into_body();
    let body: InfoBody = crate::body::read_json(&headers, incoming, state.limits).await?;
    set_alias(&state, body.alias).await?;
    Ok(current(&state))
}

/// Store and apply the master's alias.
pub(crate) async fn set_alias(state: &State, alias: String) -> Result<(), HttpError> {
    let chars = alias.chars().count();
    if chars > MAX_ALIAS_CHARS {
        return Err(HttpError::invalid(
            "alias",
            format!("{chars} characters, at most {MAX_ALIAS_CHARS} allowed"),
        ));
    }
    state
        .supervisor
        .store()
        .set_setting(crate::master::ALIAS_SETTING, &alias)
        .await?;
    *crate::sync::lock(&state.alias) = alias;
    Ok(())
}

fn current(state: &State) -> Response<Body> {
    let mut counts = InstanceCounts::default();
    for i in state.supervisor.list() {
        counts.total += 1;
        match Status::from(i.status) {
            Status::Running => counts.running += 1,
            Status::Starting => counts.starting += 1,
            Status::Stopped => counts.stopped += 1,
            Status::Error => counts.error += 1,
        }
    }
    let cpu = state.cpu.read();
    if state.dialect != ApiDialect::Envelope {
        return response::bare(StatusCode::OK, &np_info(state, cpu, counts));
    }
    let info = MasterInfo {
        alias: crate::sync::lock(&state.alias).clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime: state.started.elapsed().as_secs(),
        started_at: rfc3339(state.started_unix_ms),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        pid: std::process::id(),
        cpu,
        memory: memory(),
        instances: counts,
    };
    response::ok(StatusCode::OK, &info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat =
            "4242 (odd name) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 8 0 1 1 1";
        assert_eq!(parse_process_ticks(stat), Some(320));
        let system = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_system_ticks(system), Some((160, 980)));
        assert_eq!(
            kib_field("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2 * 1024 * 1024)
        );
        assert_eq!(kib_field("nothing", "VmRSS:"), None);
    }

    #[test]
    fn this_process_is_measured_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let meter = CpuMeter::new();
        let cpu = meter.read();
        assert!(cpu.cores >= 1);
        assert!(cpu.process_percent.is_some());
        let mem = memory();
        assert!(mem.process_rss.unwrap() > 0);
        assert!(mem.system_total.unwrap() >= mem.system_available.unwrap());
    }
}
