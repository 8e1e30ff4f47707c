//! A throw-away PostgreSQL server for tests: `initdb` into a temporary directory, `postgres` on
//! `127.0.0.1` and a free port, as the unprivileged `postgres` user when the tests run as root
//! (CI does), stopped and removed on drop.
//!
//! Uses only `std`, so that nodepass-core's store tests include this same file (`#[path]`).
//! The server binaries come from Debian's package (`/usr/lib/postgresql/VERSION/bin`, the newest
//! version) or from `NODEPASS_PG_BIN`. When they are missing, [`PgServer::start`] panics under
//! `CI=true` and otherwise returns `None` after printing why (the caller skips).
//!
//! The cluster has one superuser, [`PgServer::USER`], with the password [`PgServer::PASSWORD`]
//! (scram-sha-256 over TCP, so the password path of the client is exercised too).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nodepass_testkit::free_port;

/// How long a start or a stop of the server may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// A running test server.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PgServer {
    /// The superuser of the test cluster.
    pub const USER: &'static str = "nodepass";
    /// Its password.
    pub const PASSWORD: &'static str = "test-password-not-secret";

    /// Create a cluster and start the server; `None` (with a message) when PostgreSQL is not
    /// installed and `CI` is not `true`.
    pub fn start(label: &str) -> Option<PgServer> {
        let Some(bin) = find_bin() else {
            let msg = "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin; \
                       apt-get install postgresql, or set NODEPASS_PG_BIN)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("skipping: {msg}");
            return None;
        };
        let owner = if is_root() {
            Some(
                postgres_ids()
                    .expect("running as root needs the `postgres` user to run the server"),
            )
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!(
            "nodepass-pg-{label}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                ^ u128::from(free_port())
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, Self::PASSWORD).unwrap();
        if let Some((uid, gid)) = owner {
            chown(&dir, uid, gid);
            chown(&pwfile, uid, gid);
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                Self::USER,
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_owner(&mut initdb, owner);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            bin,
            dir,
            port: free_port(),
            owner,
            child: None,
        };
        server.launch();
        Some(server)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://USER@127.0.0.1:PORT/DB` (no password: it comes from elsewhere).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{db}", Self::USER, self.port)
    }

    /// Create database `name` (through `psql` from the same installation).
    pub fn create_db(&self, name: &str) {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", Self::USER, "-d", "postgres", "-v"])
            .arg("ON_ERROR_STOP=1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(format!("CREATE DATABASE \"{name}\""))
            .env("PGPASSWORD", Self::PASSWORD)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "create database {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop the server (fast shutdown: clients are disconnected) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + DEADLINE;
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Start the server again on the same port after [`stop`](Self::stop).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_owner(&mut cmd, self.owner);
        let mut child = cmd.spawn().expect("start postgres");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        let ready = rx.recv_timeout(DEADLINE);
        self.child = Some(child);
        assert!(
            ready.is_ok(),
            "postgres did not become ready within {DEADLINE:?}"
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("NODEPASS_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // std has no getuid; /proc/self/status names the real and effective uid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut f = line.split(':');
    let (uid, gid) = (f.nth(2)?.parse().ok()?, f.next()?.parse().ok()?);
    Some((uid, gid))
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
}
