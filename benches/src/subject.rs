//! The subjects of a run: the direct baseline, nodepass at each TLS mode, and `--peer`
//! implementations given as shell command templates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::{self, Proc};
use crate::wan::Testbed;
use crate::wan::testbed::ADDR_A;

/// Placeholders a peer template may use (see `docs/benchmarks.md`).
pub const PLACEHOLDERS: &[&str] = &[
    "host",
    "tunnel_port",
    "tunnel_addr",
    "user_port",
    "user_addr",
    "target_port",
    "target_addr",
    "key",
    "tls",
    "type",
    "workdir",
];

/// What every subject's start needs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The nodepass executable.
    pub nodepass: PathBuf,
    /// The harness's target (TCP echo/sink and UDP sink).
    pub target: SocketAddr,
    /// Scratch directory for logs.
    pub work_dir: PathBuf,
    /// The tunnel key of this run.
    pub key: String,
    /// How long a tunnel may take to carry its first echo.
    pub ready_timeout: Duration,
    /// The emulated WAN, when the run crosses one: then the harness runs in its namespace A
    /// with the servers, and clients start in namespace B, near the target.
    pub wan: Option<Arc<Testbed>>,
}

impl Ctx {
    /// The address a server listens on for its clients: across the link on the WAN.
    fn tunnel_host(&self) -> String {
        match self.wan {
            Some(_) => ADDR_A.to_string(),
            None => "127.0.0.1".into(),
        }
    }

    /// Start a process of `role`: a client on the target's side of the WAN, anything else
    /// here.
    fn spawn(&self, role: &str, cmd: Command, log: &std::path::Path) -> anyhow::Result<Proc> {
        match &self.wan {
            Some(tb) if role == "client" => tb.b().run(|| Proc::spawn(role, cmd, log))?,
            _ => Proc::spawn(role, cmd, log),
        }
    }
}

/// A started subject: where users connect, and its processes (none for the direct baseline).
pub struct Endpoint {
    /// The TCP and UDP address users send to.
    pub addr: SocketAddr,
    /// The processes, stopped when the endpoint is dropped.
    pub procs: Vec<Proc>,
}

/// One column of the report.
#[derive(Debug, Clone)]
pub enum Subject {
    /// Straight to the target.
    Direct,
    /// nodepass server and client processes, reverse flow.
    Nodepass {
        /// The server's `tls` mode.
        tls: u8,
        /// The server's pool transport (`type`): 0 TCP, 1 QUIC, 2 WebSocket, 3 HTTP/2.
        pool_type: u8,
    },
    /// Another implementation from `--peer`.
    Peer {
        /// Its templates.
        spec: Arc<PeerSpec>,
        /// The TLS mode given to `{tls}`, when its templates use it.
        tls: Option<u8>,
        /// The pool transport given to `{type}`, when its templates use it.
        pool_type: Option<u8>,
    },
}

impl Subject {
    /// The column label: `direct`, `nodepass tls=0`, `NAME tls=1` or `NAME`.
    pub fn label(&self) -> String {
        match (self.implementation(), self.tls()) {
            (name, Some(tls)) => format!("{name} tls={tls}"),
            (name, None) => name.to_owned(),
        }
    }

    /// `direct`, `nodepass` or the peer's name, followed by ` type=N` for a pool transport
    /// other than TCP (`nodepass type=2`, `go type=3`).
    pub fn implementation(&self) -> String {
        let (name, pool_type) = match self {
            Subject::Direct => return "direct".into(),
            Subject::Nodepass { pool_type, .. } => ("nodepass", Some(*pool_type)),
            Subject::Peer {
                spec, pool_type, ..
            } => (spec.name.as_str(), *pool_type),
        };
        match pool_type {
            Some(t) if t != 0 => format!("{name} type={t}"),
            _ => name.to_owned(),
        }
    }

    /// The pool transport (`type`), if the subject has one.
    pub fn pool_type(&self) -> Option<u8> {
        match self {
            Subject::Direct => None,
            Subject::Nodepass { pool_type, .. } => Some(*pool_type),
            Subject::Peer { pool_type, .. } => *pool_type,
        }
    }

    /// The TLS mode, if the subject has one.
    pub fn tls(&self) -> Option<u8> {
        match self {
            Subject::Direct => None,
            Subject::Nodepass { tls, .. } => Some(*tls),
            Subject::Peer { tls, .. } => *tls,
        }
    }

    /// Whether this is the direct baseline.
    pub fn is_direct(&self) -> bool {
        matches!(self, Subject::Direct)
    }

    /// Start the subject's processes and wait until an echo goes through.
    pub fn start(&self, ctx: &Ctx) -> anyhow::Result<Endpoint> {
        match self {
            Subject::Direct => Ok(Endpoint {
                addr: ctx.target,
                procs: Vec::new(),
            }),
            Subject::Nodepass { tls, pool_type } => start_nodepass(ctx, *tls, *pool_type),
            // A peer that does not carry its first echo is started once more, afresh: the Go
            // NodePass sometimes loses its first pool connection and stalls ("pool connection
            // not found"), which says nothing about its speed once it runs.
            Subject::Peer {
                spec,
                tls,
                pool_type,
            } => start_peer(ctx, spec, *tls, *pool_type).or_else(|first| {
                eprintln!("{}: {first:#}; starting it once more", spec.name);
                start_peer(ctx, spec, *tls, *pool_type)
                    .map_err(|again| again.context(format!("and before: {first:#}")))
            }),
        }
    }
}

fn start_nodepass(ctx: &Ctx, tls: u8, pool_type: u8) -> anyhow::Result<Endpoint> {
    // QUIC (type=1) listens on the tunnel port number over UDP too.
    let [tunnel, user] = process::free_ports([pool_type == 1, true])?;
    let (key, target, host) = (&ctx.key, ctx.target, ctx.tunnel_host());
    let urls = [
        (
            "server",
            format!(
                "server://{key}@{host}:{tunnel}/127.0.0.1:{user}?mode=1&tls={tls}&type={pool_type}"
            ),
        ),
        (
            "client",
            format!("client://{key}@{host}:{tunnel}/{target}?mode=2&min=64"),
        ),
    ];
    let mut procs = Vec::new();
    for (role, url) in urls {
        let mut cmd = Command::new(&ctx.nodepass);
        // The key travels in the environment, never in the process arguments.
        cmd.env("NODEPASS_URL", url)
            .env_remove("NODEPASS_LOG_FORMAT");
        let log = ctx
            .work_dir
            .join(format!("nodepass-type{pool_type}-tls{tls}-{role}.log"));
        procs.push(ctx.spawn(role, cmd, &log)?);
        if role == "server" {
            process::wait_listening(tunnel, &mut procs, ctx.ready_timeout)?;
        }
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], user));
    process::wait_ready(addr, &mut procs, ctx.ready_timeout)?;
    Ok(Endpoint { addr, procs })
}

fn start_peer(
    ctx: &Ctx,
    spec: &PeerSpec,
    tls: Option<u8>,
    pool_type: Option<u8>,
) -> anyhow::Result<Endpoint> {
    let [tunnel, user] = process::free_ports([false, true])?;
    let work = ctx.work_dir.join(format!("peer-{}", spec.name));
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let tls_text = tls.map(|t| t.to_string()).unwrap_or_default();
    let type_text = pool_type.map(|t| t.to_string()).unwrap_or_default();
    let values = [
        ("host", "127.0.0.1".to_owned()),
        ("tunnel_port", tunnel.to_string()),
        ("tunnel_addr", format!("{}:{tunnel}", ctx.tunnel_host())),
        ("user_port", user.to_string()),
        ("user_addr", format!("127.0.0.1:{user}")),
        ("target_port", ctx.target.port().to_string()),
        ("target_addr", ctx.target.to_string()),
        ("key", ctx.key.clone()),
        ("tls", tls_text.clone()),
        ("type", type_text.clone()),
        ("workdir", work.display().to_string()),
    ];
    for (name, template) in &spec.files {
        let path = work.join(name);
        std::fs::write(&path, expand(template, &values))
            .with_context(|| format!("write {}", path.display()))?;
    }
    for src in &spec.copies {
        let name = src.file_name().context("a copied file needs a name")?;
        let dst = work.join(name);
        // A copy still running from an earlier subject cannot be overwritten; unlink it first.
        let _ = std::fs::remove_file(&dst);
        std::fs::copy(src, &dst)
            .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
    }
    let mut procs = Vec::new();
    for (role, template) in &spec.procs {
        let line = expand(template, &values);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("exec {line}"))
            .env("BENCH_KEY", &ctx.key)
            .env("BENCH_TLS", &tls_text)
            .env("BENCH_TYPE", &type_text)
            .env("BENCH_WORKDIR", &work);
        let log = work.join(format!("{role}-tls{tls_text}-type{type_text}.log"));
        procs.push(ctx.spawn(role, cmd, &log)?);
        if role == "server" && spec.procs.len() > 1 {
            // Give the server the chance to listen before its client dials; a server that
            // listens on something other than TCP simply takes the whole wait.
            let wait = ctx.ready_timeout.min(Duration::from_secs(3));
            let _ = process::wait_listening(tunnel, &mut procs, wait);
        }
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], user));
    process::wait_ready(addr, &mut procs, ctx.ready_timeout)?;
    Ok(Endpoint { addr, procs })
}

/// Replace every `{name}` of `values` in `template`.
fn expand(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_owned(), |s, (name, value)| {
        s.replace(&format!("{{{name}}}"), value)
    })
}

/// An implementation to compare, from one or more `--peer NAME=[ROLE:]TEMPLATE` flags, or a
/// built-in reference peer ([`crate::reference`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The column name.
    pub name: String,
    /// `(role, template)` in start order: `server` first, then `proc`, then `client`.
    pub procs: Vec<(String, String)>,
    /// `(file name, template)`: written into `{workdir}`, placeholders expanded, before the
    /// processes start (configuration files).
    pub files: Vec<(String, String)>,
    /// Files copied into `{workdir}` before the processes start (executables that write
    /// beside themselves).
    pub copies: Vec<PathBuf>,
    /// The workloads the peer runs (`None`: all).
    pub workloads: Option<Vec<crate::plan::Workload>>,
}

impl PeerSpec {
    /// Whether the templates use `{tls}` (then the peer runs once per TLS mode).
    pub fn uses_tls(&self) -> bool {
        self.procs
            .iter()
            .chain(&self.files)
            .any(|(_, t)| t.contains("{tls}"))
    }

    /// Whether the templates use `{type}` (then the peer runs once per pool transport of the
    /// run that it takes, at each TLS mode).
    pub fn uses_type(&self) -> bool {
        self.procs
            .iter()
            .chain(&self.files)
            .any(|(_, t)| t.contains("{type}"))
    }

    /// Whether the peer runs `w`.
    pub fn runs(&self, w: crate::plan::Workload) -> bool {
        self.workloads.as_ref().is_none_or(|ws| ws.contains(&w))
    }

    /// Merge `--peer` flags by name, in order of first appearance.
    pub fn merge(flags: &[PeerFlag]) -> anyhow::Result<Vec<PeerSpec>> {
        let mut peers: Vec<PeerSpec> = Vec::new();
        for f in flags {
            let i = match peers.iter().position(|p| p.name == f.name) {
                Some(i) => i,
                None => {
                    peers.push(PeerSpec {
                        name: f.name.clone(),
                        procs: Vec::new(),
                        files: Vec::new(),
                        copies: Vec::new(),
                        workloads: None,
                    });
                    peers.len() - 1
                }
            };
            let peer = &mut peers[i];
            if peer.procs.iter().any(|(r, _)| *r == f.role) {
                bail!("--peer {}: the {} template is given twice", f.name, f.role);
            }
            peer.procs.push((f.role.clone(), f.template.clone()));
        }
        for p in &mut peers {
            p.procs.sort_by_key(|(role, _)| match role.as_str() {
                "server" => 0,
                "proc" => 1,
                _ => 2,
            });
        }
        Ok(peers)
    }
}

/// One `--peer NAME=[server:|client:]TEMPLATE` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFlag {
    /// The peer's name.
    pub name: String,
    /// `server`, `client`, or `proc` when no role prefix is given.
    pub role: String,
    /// The shell command line with placeholders.
    pub template: String,
}

impl FromStr for PeerFlag {
    type Err = String;

    fn from_str(s: &str) -> Result<PeerFlag, String> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=[server:|client:]TEMPLATE"))?;
        let valid_name = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if name.is_empty() || !name.chars().all(valid_name) {
            return Err(format!(
                "peer name {name:?}: use letters, digits, '-', '_' or '.'"
            ));
        }
        if name == "direct" || name == "nodepass" {
            return Err(format!("peer name {name:?} is taken"));
        }
        let (role, template) = match rest.split_once(':') {
            Some((r @ ("server" | "client"), t)) => (r, t),
            _ => ("proc", rest),
        };
        let template = template.trim();
        if template.is_empty() {
            return Err(format!("--peer {name}: empty {role} template"));
        }
        if let Some(bad) = unknown_placeholder(template) {
            return Err(format!(
                "--peer {name}: unknown placeholder {{{bad}}} (known: {})",
                PLACEHOLDERS.join(", ")
            ));
        }
        Ok(PeerFlag {
            name: name.to_owned(),
            role: role.to_owned(),
            template: template.to_owned(),
        })
    }
}

/// The first `{word}` (lower-case letters and `_`, not after `$`) that is not a placeholder.
fn unknown_placeholder(template: &str) -> Option<&str> {
    let mut rest = template;
    let mut prev = None;
    while let Some(open) = rest.find('{') {
        let after_dollar = rest[..open].chars().last().or(prev) == Some('$');
        let tail = &rest[open + 1..];
        if let Some(close) = tail.find('}') {
            let word = &tail[..close];
            let is_word =
                !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if is_word && !after_dollar && !PLACEHOLDERS.contains(&word) {
                return Some(word);
            }
        }
        prev = Some('{');
        rest = tail;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(s: &str) -> Result<PeerFlag, String> {
        s.parse()
    }

    #[test]
    fn parses_flags_with_and_without_roles() {
        let f = flag("gost=server:gost -L relay://:{tunnel_port}").unwrap();
        assert_eq!((f.name.as_str(), f.role.as_str()), ("gost", "server"));
        assert_eq!(f.template, "gost -L relay://:{tunnel_port}");
        let f = flag("socat=socat TCP-LISTEN:{user_port},fork TCP:{target_addr}").unwrap();
        assert_eq!(f.role, "proc");
        assert!(f.template.starts_with("socat TCP-LISTEN:"));
    }

    #[test]
    fn refuses_bad_flags() {
        for (input, expected) in [
            ("no-equals", "expected NAME="),
            ("=cmd", "peer name"),
            ("a b=cmd", "peer name"),
            ("nodepass=cmd", "taken"),
            ("x=server:  ", "empty server template"),
            ("x=cmd {user_prot}", "unknown placeholder {user_prot}"),
        ] {
            let err = flag(input).unwrap_err();
            assert!(err.contains(expected), "{input}: {err}");
        }
        // Shell syntax with braces is not a placeholder.
        assert!(flag("x=cmd ${BENCH_KEY} ${tls} {a,b} {}").is_ok());
    }

    #[test]
    fn merges_by_name_and_orders_server_first() {
        let flags: Vec<PeerFlag> = ["g=client:c {tls}", "s=socat", "g=server:s"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let peers = PeerSpec::merge(&flags).unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].procs[0], ("server".into(), "s".into()));
        assert_eq!(peers[0].procs[1], ("client".into(), "c {tls}".into()));
        assert!(peers[0].uses_tls() && !peers[1].uses_tls());
        let twice: Vec<PeerFlag> = vec![flag("g=a").unwrap(), flag("g=b").unwrap()];
        assert!(PeerSpec::merge(&twice).is_err());
    }

    #[test]
    fn expands_placeholders() {
        let v = [("user_port", "9".to_owned()), ("key", "k".to_owned())];
        assert_eq!(expand("a {user_port} {key} {x}", &v), "a 9 k {x}");
    }
}
