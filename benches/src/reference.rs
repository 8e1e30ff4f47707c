//! The reference peers of issues 15 and 17 as built-in subjects (`--reference-peers DIR`): the
//! Go NodePass v1.14 (`DIR/nodepass-go`, at every `--tls` mode and with every `--type` of the
//! run, so each of our pool transports meets Go's of the same type) and rathole 0.5
//! (`DIR/rathole`, plain TCP only), both in reverse flow like nodepass, with a pool of 64 for
//! Go.
//!
//! Go runs the TCP workloads ([`GO_WORKLOADS`]): it closes a connection on the user's
//! half-close, so its bulk transfers are counted where they arrive (the target's sink ledger),
//! and it merges UDP datagrams, so `udp` is left out. rathole runs the latency workloads only
//! ([`REFERENCE_WORKLOADS`]; it carries UDP only as a separately configured service). Other
//! workloads can still be compared with hand-written `--peer` templates.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::plan::Workload;
use crate::subject::PeerSpec;

/// Where the reference peers live, relative to the project's root.
pub const DEFAULT_DIR: &str = "../shared/peers";

/// The workloads rathole runs.
pub const REFERENCE_WORKLOADS: &[Workload] = &[Workload::Connect, Workload::Burst, Workload::Rtt];

/// The workloads the Go NodePass runs.
pub const GO_WORKLOADS: &[Workload] = &[
    Workload::Bulk,
    Workload::Parallel,
    Workload::Connect,
    Workload::Burst,
    Workload::Rtt,
];

/// The Go NodePass and rathole from `dir`; an error names a missing executable.
pub fn peers(dir: &Path) -> anyhow::Result<Vec<PeerSpec>> {
    let go = executable(dir, "nodepass-go")?;
    let rathole = executable(dir, "rathole")?;
    Ok(vec![go_peer(&go), rathole_peer(&rathole)])
}

fn executable(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("reference peer {name}: {} not found", path.display()))?;
    if !meta.is_file() {
        bail!("reference peer {name}: {} is not a file", path.display());
    }
    // Absolute, so the templates work whatever the peers' working directory.
    std::path::absolute(&path).with_context(|| format!("resolve {}", path.display()))
}

/// Quote `p` for `sh`.
fn quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The Go NodePass writes `gob/` beside its executable, so each run starts a copy in its
/// scratch directory. Its key ends up in its process arguments (it reads no environment): a
/// random key of this run only. `log=warn` keeps its per-connection logging off the path.
/// The pool transport is the server's `type=` (the client learns it), as in ours.
fn go_peer(exe: &Path) -> PeerSpec {
    let run = |url: &str| format!("{{workdir}}/nodepass-go \"{url}\"");
    PeerSpec {
        name: "go".into(),
        procs: vec![
            (
                "server".into(),
                run(
                    "server://$BENCH_KEY@{tunnel_addr}/{user_addr}?mode=1&tls={tls}&type={type}\
                     &log=warn",
                ),
            ),
            (
                "client".into(),
                run("client://$BENCH_KEY@{tunnel_addr}/{target_addr}?mode=2&min=64&log=warn"),
            ),
        ],
        files: Vec::new(),
        copies: vec![exe.to_path_buf()],
        workloads: Some(GO_WORKLOADS.to_vec()),
    }
}

/// rathole reads its token from a configuration file in the scratch directory.
fn rathole_peer(exe: &Path) -> PeerSpec {
    let exe = quoted(exe);
    PeerSpec {
        name: "rathole".into(),
        procs: vec![
            (
                "server".into(),
                format!("{exe} --server {{workdir}}/server.toml"),
            ),
            (
                "client".into(),
                format!("{exe} --client {{workdir}}/client.toml"),
            ),
        ],
        files: vec![
            (
                "server.toml".into(),
                "[server]\nbind_addr = \"{tunnel_addr}\"\n\n[server.services.bench]\n\
                 token = \"{key}\"\nbind_addr = \"{user_addr}\"\n"
                    .into(),
            ),
            (
                "client.toml".into(),
                "[client]\nremote_addr = \"{tunnel_addr}\"\n\n[client.services.bench]\n\
                 token = \"{key}\"\nlocal_addr = \"{target_addr}\"\n"
                    .into(),
            ),
        ],
        copies: Vec::new(),
        workloads: Some(REFERENCE_WORKLOADS.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_executables_are_named() {
        let dir = std::env::temp_dir().join(format!("np-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = peers(&dir).unwrap_err().to_string();
        assert!(err.contains("nodepass-go"), "{err}");
        std::fs::write(dir.join("nodepass-go"), "").unwrap();
        let err = peers(&dir).unwrap_err().to_string();
        assert!(err.contains("rathole"), "{err}");
        std::fs::write(dir.join("rathole"), "").unwrap();
        let p = peers(&dir).unwrap();
        assert_eq!(p[0].name, "go");
        assert!(p[0].uses_tls() && !p[1].uses_tls());
        assert!(p[0].uses_type() && !p[1].uses_type());
        assert!(p[0].runs(Workload::Bulk) && !p[0].runs(Workload::Udp));
        assert!(!p[1].runs(Workload::Bulk));
        assert_eq!(p[1].files.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
