//! Child processes of the tunnels under test: spawning, readiness, settling, cleanup, and
//! finding (or building) the `nodepass` executable.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procfs;

/// Poll interval while waiting for an observable event.
const POLL: Duration = Duration::from_millis(20);

/// One running process of a subject (a tunnel server or client); killed when dropped.
pub struct Proc {
    role: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Start `cmd` with its stderr and stdout appended to `log`.
    pub fn spawn(role: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn the {role}: {cmd:?}"))?;
        Ok(Proc {
            role: role.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its role: `server`, `client` or a peer's process name.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// An error (with the end of its log) if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the {} exited ({status}); end of its log:\n{}",
                self.role,
                self.log_tail()
            );
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loopback ports that were free a moment ago, all different: each for TCP, and for UDP too
/// where `udp[i]` is set. Every socket found is held until the last port is chosen, so the
/// kernel cannot hand the same port out twice (a tunnel and a user port picked one after the
/// other once came out equal and the second bind failed). Free when returned, not reserved.
pub fn free_ports<const N: usize>(udp: [bool; N]) -> io::Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0; N];
    for (slot, wants_udp) in ports.iter_mut().zip(udp) {
        for _ in 0..50 {
            let tcp = TcpListener::bind("127.0.0.1:0")?;
            let port = tcp.local_addr()?.port();
            let udp = if wants_udp {
                match UdpSocket::bind(("127.0.0.1", port)) {
                    Ok(u) => Some(u),
                    Err(_) => continue,
                }
            } else {
                None
            };
            held.push((tcp, udp));
            *slot = port;
            break;
        }
        if *slot == 0 {
            return Err(io::Error::other("no port free for both TCP and UDP"));
        }
    }
    Ok(ports)
}

/// Wait until something listens on TCP `port`, failing early if a process exits.
pub fn wait_listening(port: u16, procs: &mut [Proc], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !procfs::is_listening(port) {
        procs.iter_mut().try_for_each(Proc::check_alive)?;
        if Instant::now() >= deadline {
            bail!("nothing listens on port {port} after {timeout:?}");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Wait until a one-byte echo through `addr` works (the whole path is up), failing early if a
/// process exits.
pub fn wait_ready(addr: SocketAddr, procs: &mut [Proc], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        procs.iter_mut().try_for_each(Proc::check_alive)?;
        let err = match echo_once(addr) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!("no echo through {addr} after {timeout:?}: {err}");
        }
        std::thread::sleep(POLL);
    }
}

fn echo_once(addr: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"r")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    if b != *b"r" {
        return Err(io::Error::other("echo returned a different byte"));
    }
    Ok(())
}

/// Wait until the processes' descriptor counts stop changing for `quiet` (a pool has filled),
/// at most `max`.
pub fn settle(procs: &[Proc], quiet: Duration, max: Duration) {
    let sample = || -> Vec<usize> {
        procs
            .iter()
            .map(|p| procfs::fd_count(p.pid()).unwrap_or(0))
            .collect()
    };
    let start = Instant::now();
    let mut last = sample();
    let mut since = Instant::now();
    while start.elapsed() < max {
        std::thread::sleep(POLL);
        let now = sample();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}

/// When [`locate_nodepass`] runs cargo to build `nodepass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Always (a no-op when it is fresh): what `cargo run -p nodepass-benches` wants, so the
    /// benchmark never measures a stale binary.
    Always,
    /// Only when the executable is missing: for tests, where `cargo test --workspace` has just
    /// built it (a nested build with other feature unification would rebuild the world).
    IfMissing,
}

/// The `nodepass` executable: `explicit` if given, else the one beside this executable (in the
/// same cargo profile directory), built first with `cargo build -p nodepass-cli --bin
/// nodepass` in the same profile as `build` says.
pub fn locate_nodepass(explicit: Option<&Path>, build: Build) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("--nodepass {}: no such file", p.display());
        }
        return Ok(p.to_owned());
    }
    let exe = std::env::current_exe().context("locate this executable")?;
    let mut dir = exe.parent().context("executable without a directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("deps without a parent")?;
    }
    let bin = dir.join("nodepass");
    if build == Build::Always || !bin.is_file() {
        build_nodepass(dir)?;
    }
    if !bin.is_file() {
        bail!("{} is missing; pass --nodepass PATH", bin.display());
    }
    Ok(bin)
}

fn build_nodepass(profile_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = profile_dir.parent().context("profile dir without parent")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => bail!("cannot tell the cargo profile of {}", profile_dir.display()),
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("manifest dir without parent")?;
    let mut cmd = Command::new(cargo);
    // Variables the outer cargo set for this program's own crate would leak into build
    // scripts (some read CARGO_PKG_*) and force rebuilds; the nested build must not see them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*name)
        {
            cmd.env_remove(&*name);
        }
    }
    let status = cmd
        .current_dir(workspace)
        .args([
            "build",
            "-p",
            "nodepass-cli",
            "--bin",
            "nodepass",
            "--profile",
        ])
        .arg(profile)
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .context("run cargo to build nodepass")?;
    if !status.success() {
        bail!("cargo build of nodepass failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawned_process_is_watched_and_killed() {
        let dir = std::env::temp_dir().join(format!("np-bench-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo bye >&2; exit 3"]);
        let mut p = Proc::spawn("quitter", cmd, &dir.join("q.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            if let Err(e) = p.check_alive() {
                break e.to_string();
            }
            assert!(Instant::now() < deadline, "child never exited");
            std::thread::sleep(POLL);
        };
        assert!(err.contains("quitter") && err.contains("bye"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A port from `free_ports` with UDP takes a TCP and a UDP bind. It is free when returned,
    /// not reserved: another test binding port 0 meanwhile may get it (seen once in CI), so one
    /// of a few tries must succeed.
    #[test]
    fn free_ports_are_bindable() {
        let mut last = None;
        for _ in 0..10 {
            let [p] = free_ports([true]).unwrap();
            match TcpListener::bind(("127.0.0.1", p)) {
                Ok(_tcp) => match UdpSocket::bind(("127.0.0.1", p)) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                },
                Err(e) => last = Some(e),
            }
        }
        assert!(last.is_none(), "no port bindable for TCP and UDP: {last:?}");
    }

    /// Ports chosen together never repeat, however the kernel recycles released ones. With the
    /// sockets released after each pick this fails within the 20 000 tries (checked, 0.5 s).
    #[test]
    fn ports_chosen_together_differ() {
        for _ in 0..20_000 {
            let ports = free_ports([false, true, false]).unwrap();
            assert!(ports.iter().all(|&p| p != 0), "{ports:?}");
            assert!(
                ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2],
                "{ports:?}"
            );
        }
    }
}
