//! Listen-address conflicts between instances.
//!
//! An instance's *configured listen endpoints* are the addresses its tunnel will bind as written
//! in its URL: a server's tunnel address, plus its target address in reverse flow (`mode=1`),
//! and a single-end client's (`mode=1`) tunnel address. Two endpoints conflict when they name
//! the same non-zero port and their hosts overlap: equal, or either side is the empty host or an
//! unspecified address (`0.0.0.0`, `[::]`), which listen on every address. Port 0 asks the OS for
//! a free port and never conflicts. Auto modes (`mode=0`) decide at bind time and only their
//! server tunnel address is counted.

use crate::config::{ClientMode, Endpoint, Host, ServerMode};
use crate::tunnel::TunnelConfig;

/// The endpoints `config` will listen on, as written (see the module docs).
pub(crate) fn listen_endpoints(config: &TunnelConfig) -> Vec<&Endpoint> {
    match config {
        TunnelConfig::Server(s) => {
            let mut out = vec![&s.params.tunnel];
            if s.mode == ServerMode::Reverse {
                out.extend(s.params.targets.first());
            }
            out
        }
        TunnelConfig::Client(c) if c.mode == ClientMode::SingleEnd => vec![&c.params.tunnel],
        TunnelConfig::Client(_) => Vec::new(),
    }
}

/// Whether two listen endpoints would collide.
pub(crate) fn overlaps(a: &Endpoint, b: &Endpoint) -> bool {
    a.port != 0 && a.port == b.port && hosts_overlap(&a.host, &b.host)
}

fn is_wildcard(host: &Host) -> bool {
    match host {
        Host::Any => true,
        Host::Ip(ip) => ip.is_unspecified(),
        Host::Name(_) => false,
    }
}

fn hosts_overlap(a: &Host, b: &Host) -> bool {
    is_wildcard(a) || is_wildcard(b) || a == b
}

/// The first pair of endpoints of `mine` and `theirs` that collide.
pub(crate) fn first_conflict<'a>(
    mine: &'a TunnelConfig,
    theirs: &'a TunnelConfig,
) -> Option<(&'a Endpoint, &'a Endpoint)> {
    let theirs = listen_endpoints(theirs);
    listen_endpoints(mine)
        .into_iter()
        .find_map(|m| theirs.iter().find(|t| overlaps(m, t)).map(|t| (m, *t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> TunnelConfig {
        url.parse().unwrap()
    }

    #[test]
    fn listen_endpoints_follow_role_and_mode() {
        let show = |url: &str| -> Vec<String> {
            listen_endpoints(&cfg(url))
                .iter()
                .map(|e| e.to_string())
                .collect()
        };
        assert_eq!(
            show("server://k@:1000/127.0.0.1:80?mode=1"),
            [":1000", "127.0.0.1:80"]
        );
        assert_eq!(show("server://k@:1000/127.0.0.1:80?mode=2"), [":1000"]);
        assert_eq!(show("server://k@:1000/127.0.0.1:80"), [":1000"]);
        assert_eq!(
            show("client://127.0.0.1:2000/127.0.0.1:80?mode=1"),
            ["127.0.0.1:2000"]
        );
        assert!(show("client://k@127.0.0.1:2000/127.0.0.1:80?mode=2").is_empty());
        assert!(show("client://k@127.0.0.1:2000/127.0.0.1:80").is_empty());
    }

    #[test]
    fn conflicts_need_the_same_port_and_overlapping_hosts() {
        let table = [
            (
                "server://k@:1000/1.2.3.4:1",
                "server://k@127.0.0.1:1000/1.2.3.4:1",
                true,
            ),
            (
                "server://k@0.0.0.0:1000/1.2.3.4:1",
                "server://k@127.0.0.2:1000/1.2.3.4:1",
                true,
            ),
            (
                "server://k@[::]:1000/1.2.3.4:1",
                "server://k@127.0.0.1:1000/1.2.3.4:1",
                true,
            ),
            (
                "server://k@127.0.0.1:1000/1.2.3.4:1",
                "server://k@127.0.0.1:1000/1.2.3.4:1",
                true,
            ),
            (
                "server://k@127.0.0.1:1000/1.2.3.4:1",
                "server://k@127.0.0.2:1000/1.2.3.4:1",
                false,
            ),
            (
                "server://k@127.0.0.1:1000/1.2.3.4:1",
                "server://k@127.0.0.1:1001/1.2.3.4:1",
                false,
            ),
            (
                "server://k@127.0.0.1:0/1.2.3.4:1",
                "server://k@127.0.0.1:0/1.2.3.4:1",
                false,
            ),
            (
                "server://k@a.example:1000/1.2.3.4:1",
                "server://k@a.example:1000/1.2.3.4:1",
                true,
            ),
            (
                "server://k@a.example:1000/1.2.3.4:1",
                "server://k@b.example:1000/1.2.3.4:1",
                false,
            ),
            // A reverse-flow server's target against a single-end client's listener.
            (
                "server://k@:1000/127.0.0.1:3000?mode=1",
                "client://127.0.0.1:3000/1.2.3.4:1?mode=1",
                true,
            ),
            (
                "server://k@:1000/127.0.0.1:3000?mode=2",
                "client://127.0.0.1:3000/1.2.3.4:1?mode=1",
                false,
            ),
            // A dual-end client listens on nothing it names.
            (
                "server://k@:1000/1.2.3.4:1",
                "client://k@127.0.0.1:1000/1.2.3.4:1?mode=2",
                false,
            ),
        ];
        for (a, b, want) in table {
            assert_eq!(
                first_conflict(&cfg(a), &cfg(b)).is_some(),
                want,
                "{a} vs {b}"
            );
            assert_eq!(
                first_conflict(&cfg(b), &cfg(a)).is_some(),
                want,
                "{b} vs {a}"
            );
        }
    }
}
