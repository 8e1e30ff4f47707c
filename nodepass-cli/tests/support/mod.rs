//! Shared by the tests that run the executables and read their logs.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const NODEPASS: &str = env!("CARGO_BIN_EXE_nodepass");

/// A running executable whose stderr lines arrive on a channel; killed on drop.
pub struct Proc {
    child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Proc {
    pub fn start(url: &str, json: bool) -> Proc {
        Proc::start_in(url, json, None)
    }

    /// [`Proc::start`] with the working directory `dir`.
    pub fn start_in(url: &str, json: bool, dir: Option<&std::path::Path>) -> Proc {
        let mut cmd = Command::new(NODEPASS);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        cmd.env("NODEPASS_URL", url)
            .env("NODEPASS_LOG_FORMAT", if json { "json" } else { "text" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start nodepass");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (seen before or arriving within `within`) containing all of `words`.
    pub fn wait_for(&mut self, words: &[&str], within: Duration) -> String {
        let has = |l: &String| words.iter().all(|w| l.contains(w));
        if let Some(l) = self.seen.iter().find(|l| has(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if has(&line) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no log line with {words:?} within {within:?}; got:\n{}",
            self.seen.join("\n")
        );
    }

    pub fn assert_no_debug_formatting(&self) {
        for l in &self.seen {
            assert!(
                !l.contains("Some(") && !l.contains("None"),
                "Debug formatting: {l}"
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name=127.0.0.1:PORT` in `line`, with the port parsed (not 0).
pub fn addr_field(line: &str, name: &str) -> u16 {
    let start = line
        .find(&format!("{name}=127.0.0.1:"))
        .unwrap_or_else(|| panic!("{name} missing: {line}"));
    let rest = &line[start + name.len() + "=127.0.0.1:".len()..];
    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let port: u16 = port.parse().unwrap();
    assert_ne!(port, 0, "{line}");
    port
}
