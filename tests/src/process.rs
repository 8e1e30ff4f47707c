//! The executables as child processes: started with a URL in `NODEPASS_URL`, their stderr
//! collected, killed when the guard drops. And `curl`, found or explained.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most stderr bytes kept per child.
const MAX_STDERR_BYTES: usize = 4 << 20;
/// How often [`Process::wait_for_stderr`] looks.
const POLL: Duration = Duration::from_millis(20);

/// A running executable, killed (and reaped) on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Process {
    /// Start `exe` with `url` in `NODEPASS_URL` (not on the command line, where `ps` shows it),
    /// logging at the URL's level as text. `name` labels failure messages.
    pub fn spawn(exe: &str, name: &str, url: &str) -> Process {
        let mut child = Command::new(exe)
            .env("NODEPASS_URL", url)
            .env_remove("NODEPASS_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {exe}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        // Ends at EOF, when the child exits.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                if s.len() < MAX_STDERR_BYTES {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Process {
            name: name.to_string(),
            child,
            stderr,
        }
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The exit status if the child has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Wait until stderr contains `needle` (true) or the child exits or `within` passes
    /// (false). Blocking: call it from a test thread, not from async code.
    pub fn wait_for_stderr(&mut self, needle: &str, within: Duration) -> bool {
        let start = Instant::now();
        let max_polls = within.as_millis() / POLL.as_millis() + 1;
        for _ in 0..max_polls {
            if self.stderr().contains(needle) {
                return true;
            }
            if self.exited().is_some() || start.elapsed() >= within {
                // One last look: the line may have arrived with the exit.
                std::thread::sleep(POLL);
                return self.stderr().contains(needle);
            }
            std::thread::sleep(POLL);
        }
        false
    }

    /// Kill the child at once (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A description for failure messages: name, exit status and stderr.
    pub fn report(&mut self) -> String {
        let status = self.exited();
        format!(
            "--- {} (exit: {status:?}) stderr:\n{}",
            self.name,
            self.stderr()
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `curl` can run. When it cannot: with the `CI` environment variable set this panics
/// (CI must install it, see `.ci/run`); otherwise it prints why the caller skips and returns
/// false.
pub fn curl_or_skip(test: &str) -> bool {
    let found = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: curl is required in CI but was not found on PATH (.ci/run installs it)");
    }
    eprintln!("{test}: SKIPPED: curl not found on PATH (install curl to run this test)");
    false
}

/// Run `curl` on `url` (at most `max_time`); returns (exit status, stdout, stderr).
pub fn curl(url: &str, max_time: Duration) -> (ExitStatus, String, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--noproxy", "*", "--max-time"])
        .arg(max_time.as_secs().max(1).to_string())
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
