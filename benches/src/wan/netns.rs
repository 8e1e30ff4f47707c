//! Network namespaces that belong to this process alone: created under a unique name, opened,
//! and unnamed again at once, so nothing but our open descriptor keeps them alive. The kernel
//! removes them (and their interfaces) when the harness exits, however it exits (panic,
//! signal, `kill -9`), and parallel runs never see each other's.
//!
//! Work inside a namespace runs on a short-lived thread that entered it ([`Netns::run`]):
//! sockets keep the namespace they were created in, and child processes inherit the spawning
//! thread's, so a listener, a thread pool or a `nodepass` process started there stays there.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Namespaces created by this process so far (for unique names).
static CREATED: AtomicU32 = AtomicU32::new(0);

/// A network namespace held open by this process.
#[derive(Debug)]
pub struct Netns {
    file: File,
    label: String,
}

impl Netns {
    /// A new, empty namespace (only `lo`, brought up here). `label` names it in messages.
    pub fn create(label: &str) -> anyhow::Result<Netns> {
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let name = format!("npwan-{}-{n}-{label}", std::process::id());
        run_ip(&["netns", "add", &name])?;
        let path = format!("/run/netns/{name}");
        let opened = File::open(&path).with_context(|| format!("open {path}"));
        // Unname it whatever happened: from now on only our descriptor holds it.
        let unnamed = run_ip(&["netns", "delete", &name]);
        let ns = Netns {
            file: opened?,
            label: label.to_owned(),
        };
        unnamed?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The label given at creation.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Run `f` on a thread inside this namespace and return its result. Threads `f` spawns,
    /// sockets it creates and processes it starts live in the namespace too.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> anyhow::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    move_into_link_name_space(self.file.as_fd(), Some(LinkNameSpaceType::Network))
                        .with_context(|| format!("enter the network namespace {}", self.label))?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Run `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        self.run(|| run_ip(args))?
            .with_context(|| format!("in the namespace {}", self.label))
    }
}

/// Run `ip ARGS` (in the calling thread's namespace), failing with its stderr.
fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("run `ip {}` (is iproute2 installed?)", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Why the testbed cannot run here, if it cannot: it needs root (namespaces, TUN devices),
/// `ip` and `/dev/net/tun`.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (the WAN testbed creates network namespaces)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_private_and_gone_when_dropped() {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
        let ns = Netns::create("t").unwrap();
        // Nothing named after us is left in /run/netns.
        let prefix = format!("npwan-{}-", std::process::id());
        let named = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
            .unwrap_or(false);
        assert!(!named, "a namespace name was left behind");
        // Inside, a listener on 127.0.0.1 is invisible from outside.
        let inside = ns
            .run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let port = inside.local_addr().unwrap().port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        drop(inside);
    }
}
