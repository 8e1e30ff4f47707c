//! Loopback ports chosen ahead of use, for executables and URLs that must name their ports
//! before anything listens on them.
//!
//! A port from here was free a moment ago, not reserved: something else binding port 0 in
//! between may take it, so callers that can retry do. Ports chosen in one call are all
//! different: every socket is held until the last port is found, because the kernel hands a
//! just-released port out again (two ports picked one after the other once came out equal).

use std::net::{Ipv4Addr, TcpListener};

/// `N` different TCP ports on 127.0.0.1 that were free a moment ago. Panics if binding
/// `127.0.0.1:0` fails.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"))
        })
        .collect();
    std::array::from_fn(|i| {
        held[i]
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read a bound port: {e}"))
            .port()
    })
}

/// One TCP port on 127.0.0.1 that was free a moment ago (see [`free_ports`] for several).
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports chosen together never repeat. Picking each with its socket released at once
    /// fails this within the 20 000 tries.
    #[test]
    fn ports_chosen_together_differ() {
        for _ in 0..20_000 {
            let [a, b, c] = free_ports();
            assert!(a != b && b != c && a != c, "{a} {b} {c}");
            assert!(a != 0 && b != 0 && c != 0);
        }
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let mut last = None;
        for _ in 0..10 {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, free_port())) {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        assert!(last.is_none(), "{last:?}");
    }
}
