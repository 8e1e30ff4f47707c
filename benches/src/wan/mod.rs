//! The emulated WAN (issues 15 and 17): two private network namespaces joined by a link with
//! configurable delay, jitter, loss and bandwidth, emulated in user space (this kernel has no
//! `netem`). See `docs/benchmarks.md`, "WAN testbed".
//!
//! - [`profile`]: the link's settings, parsed from `40ms,1%,100mbit`.
//! - [`netns`]: namespaces that belong to this process and vanish with it.
//! - [`link`]: the forwarder between two TUN devices (timer queue, random loss, rate).
//! - [`testbed`]: namespaces A and B, their devices and the link.
//! - [`measure`]: round trip and loss (UDP echo) and bandwidth (`iperf3`) across the link.

pub mod link;
pub mod measure;
pub mod netns;
pub mod profile;
pub mod testbed;

pub use profile::Profile;
pub use testbed::Testbed;
