//! The testbed: namespace A (users, load generator, nodepass server) and namespace B (target,
//! nodepass client), each with a TUN device `wan0`, joined by a [`Link`] in this process.
//!
//! ```text
//!  namespace A                       this process                     namespace B
//!  10.99.0.1 wan0 <--TUN fd--> [delay, jitter, loss, rate] <--TUN fd--> wan0 10.99.0.2
//! ```
//!
//! Both namespaces are private to the process ([`Netns`]), so every run may use the same
//! addresses.

use std::net::Ipv4Addr;

use anyhow::Context;
use tun_rs::{DeviceBuilder, SyncDevice};

use super::link::{DirStats, Link};
use super::netns::Netns;
use super::profile::Profile;

/// Address of namespace A on the link.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// Address of namespace B on the link.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// Name of the link's device in both namespaces.
pub const DEVICE: &str = "wan0";
/// Where a namespace's TCP congestion control is set.
const CC_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_congestion_control";
/// Congestion controls a namespace other than the first may choose.
const ALLOWED_CC: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";
/// MTU of the link's devices (Ethernet's).
pub const MTU: u16 = 1500;

/// Two namespaces and the emulated link between them; all gone when dropped.
pub struct Testbed {
    profile: Profile,
    // Field order is drop order: stop the link before the namespaces go.
    link: Link,
    a: Netns,
    b: Netns,
}

impl Testbed {
    /// Create the namespaces and devices, and start the link.
    pub fn start(profile: &Profile) -> anyhow::Result<Testbed> {
        let a = Netns::create("a")?;
        let b = Netns::create("b")?;
        let dev_a = device(&a, ADDR_A, ADDR_B)?;
        let dev_b = device(&b, ADDR_B, ADDR_A)?;
        if let Some(cc) = &profile.cc {
            for ns in [&a, &b] {
                // /proc/sys/net is the namespace of the thread that opens it.
                ns.run(|| std::fs::write(CC_SYSCTL, cc))?.with_context(|| {
                    let allowed = std::fs::read_to_string(ALLOWED_CC).unwrap_or_default();
                    format!(
                        "cc: set TCP congestion control {cc:?} (a namespace may only use \
                             net.ipv4.tcp_allowed_congestion_control: {})",
                        allowed.trim()
                    )
                })?;
            }
        }
        let link = Link::start(dev_a, dev_b, profile).context("start the link's threads")?;
        Ok(Testbed {
            profile: profile.clone(),
            link,
            a,
            b,
        })
    }

    /// The users' side: load generator and nodepass server.
    pub fn a(&self) -> &Netns {
        &self.a
    }

    /// The target's side: target and nodepass client.
    pub fn b(&self) -> &Netns {
        &self.b
    }

    /// The TCP congestion control in use in namespace A.
    pub fn congestion_control(&self) -> String {
        self.a
            .run(|| std::fs::read_to_string(CC_SYSCTL))
            .ok()
            .and_then(Result::ok)
            .map_or_else(|| "unknown".into(), |s| s.trim().to_owned())
    }

    /// The link's settings.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Whether the link's threads run with the real-time policy.
    pub fn realtime(&self) -> bool {
        self.link.realtime()
    }

    /// Packets from A to B so far.
    pub fn a_to_b(&self) -> DirStats {
        self.link.a_to_b()
    }

    /// Packets from B to A so far.
    pub fn b_to_a(&self) -> DirStats {
        self.link.b_to_a()
    }
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Testbed({})", self.profile)
    }
}

/// A TUN device in `ns` with address `local` and the other side `peer`, up.
fn device(ns: &Netns, local: Ipv4Addr, peer: Ipv4Addr) -> anyhow::Result<SyncDevice> {
    // The device is created in the namespace of the thread that opens it.
    let dev = ns
        .run(|| DeviceBuilder::new().name(DEVICE).mtu(MTU).build_sync())?
        .with_context(|| format!("create the TUN device in namespace {}", ns.label()))?;
    let (local, peer) = (local.to_string(), peer.to_string());
    // No IPv6 link-local address: without it the kernel sends no router solicitations or
    // MLD reports of its own, so the link carries (and counts) only the traffic under test.
    ns.ip(&["link", "set", "dev", DEVICE, "addrgenmode", "none"])?;
    ns.ip(&["addr", "add", &local, "peer", &peer, "dev", DEVICE])?;
    ns.ip(&["link", "set", DEVICE, "up"])?;
    Ok(dev)
}
