//! `GET /v1/info` in the NodePass dialect: the fields of the Go NodePass v1.14 master (system
//! figures from `/proc` on Linux, 0 elsewhere), plus ours.

use nodepass_core::config::TlsMode;
use serde::Serialize;

use crate::info::{CpuInfo, InstanceCounts, kib_field};
use crate::state::State;

/// The NodePass API level this master serves: frontends refuse a `ver` below 1.10.0.
pub(crate) const NODEPASS_API_LEVEL: &str = "v1.14.0";

/// The master as NodePass describes it, then our additions.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NpInfo {
    pub mid: String,
    pub alias: String,
    pub os: &'static str,
    /// Go's architecture names (`amd64`, `arm64`, ...).
    pub arch: &'static str,
    /// Logical CPUs.
    pub noc: usize,
    /// System CPU use in percent since the previous call.
    pub cpu: u64,
    pub mem_total: u64,
    pub mem_used: u64,
    pub swap_total: u64,
    pub swap_used: u64,
    /// Bytes received and sent by the machine's network interfaces (loopback excluded).
    pub netrx: u64,
    pub nettx: u64,
    /// Bytes read from and written to the machine's disks.
    pub diskr: u64,
    pub diskw: u64,
    /// Seconds since the machine booted.
    pub sysup: u64,
    /// The NodePass API level served ([`NODEPASS_API_LEVEL`]).
    pub ver: &'static str,
    /// The host of the master URL.
    pub name: String,
    /// Seconds since the master started.
    pub uptime: u64,
    pub log: String,
    /// `0`, `1` or `2`.
    pub tls: &'static str,
    /// Certificate and key file paths with `tls=2` (paths, never contents), else `""`.
    pub crt: String,
    pub key: String,
    /// Our own version (an addition).
    pub version: &'static str,
    /// Process id (an addition).
    pub pid: u32,
    /// Instances by status (an addition).
    pub instances: InstanceCounts,
}

/// Rust's architecture names as Go spells them.
pub(crate) fn go_arch(arch: &'static str) -> &'static str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

pub(crate) fn np_info(state: &State, cpu: CpuInfo, counts: InstanceCounts) -> NpInfo {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| kib_field(&meminfo, name).unwrap_or(0);
    let (netrx, nettx) = net_bytes(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default());
    let (diskr, diskw) =
        disk_bytes(&std::fs::read_to_string("/proc/diskstats").unwrap_or_default());
    let (tls, crt, key) = match &state.facts.tls {
        TlsMode::Off => ("0", String::new(), String::new()),
        TlsMode::SelfSigned => ("1", String::new(), String::new()),
        TlsMode::Files { cert, key } => {
            ("2", cert.display().to_string(), key.display().to_string())
        }
    };
    NpInfo {
        mid: state.facts.mid.clone(),
        alias: crate::sync::lock(&state.alias).clone(),
        os: std::env::consts::OS,
        arch: go_arch(std::env::consts::ARCH),
        noc: cpu.cores,
        cpu: cpu.system_percent.unwrap_or(0.0).round().max(0.0) as u64,
        mem_total: field("MemTotal:"),
        mem_used: field("MemTotal:").saturating_sub(field("MemAvailable:")),
        swap_total: field("SwapTotal:"),
        swap_used: field("SwapTotal:").saturating_sub(field("SwapFree:")),
        netrx,
        nettx,
        diskr,
        diskw,
        sysup: std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0, |s| s as u64),
        ver: NODEPASS_API_LEVEL,
        name: state.facts.name.clone(),
        uptime: state.started.elapsed().as_secs(),
        log: state.facts.log.to_string(),
        tls,
        crt,
        key,
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        instances: counts,
    }
}

/// Received and sent bytes of every interface but `lo`, from `/proc/net/dev`.
fn net_bytes(text: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() >= 9 {
            rx = rx.saturating_add(f[0]);
            tx = tx.saturating_add(f[8]);
        }
    }
    (rx, tx)
}

/// Bytes read and written by whole disks (not partitions, loop or ram devices), from
/// `/proc/diskstats` (sectors of 512 bytes).
fn disk_bytes(text: &str) -> (u64, u64) {
    let mut r = 0u64;
    let mut w = 0u64;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let name = f[2];
        let partition =
            std::path::Path::new(&format!("/sys/class/block/{name}/partition")).exists();
        if partition || name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        let sectors = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        r = r.saturating_add(sectors(5).saturating_mul(512));
        w = w.saturating_add(sectors(9).saturating_mul(512));
    }
    (r, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures_parse() {
        let dev = "Inter-|   Receive\n face |bytes\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 2000 5 0 0 0 0 0 0 3000 7 0 0 0 0 0 0\n";
        assert_eq!(net_bytes(dev), (2000, 3000));
        let disks = "   8       0 zzdisk 10 0 4 0 20 0 8 0 0 0 0\n   7       0 loop0 1 0 100 0 1 0 100 0 0 0 0\n";
        assert_eq!(disk_bytes(disks), (4 * 512, 8 * 512));
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }
}
