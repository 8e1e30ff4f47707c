//! The emulated WAN matches its settings: on two profiles, every UDP echo takes at least the
//! configured round trip (the link never delivers early), the median is near it, and the
//! measured loss lies within a binomial bound around the configured rate. Statistical bounds
//! only; nothing here depends on the machine being fast.
//!
//! Needs root, `ip` and `/dev/net/tun`: skipped with a message without them, failed under
//! `CI=true`.

use std::time::Duration;

use nodepass_benches::wan::{Profile, Testbed, measure, netns};

/// Probes per profile, one every millisecond.
const PROBES: u64 = 1500;

fn available() -> bool {
    match netns::unavailable() {
        None => true,
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the WAN testbed cannot run under CI: {why}")
        }
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// `k` out of `n` trials with probability `p` lies within 5 standard deviations of the mean
/// (plus one for rounding): fails by chance about once in 1.7 million runs.
fn within_binomial(k: u64, n: u64, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (k as f64 - mean).abs() <= 5.0 * sd + 1.0
}

fn check(profile: &str) {
    let p: Profile = profile.parse().unwrap();
    let tb = Testbed::start(&p).unwrap();
    let e = measure::udp_echo(&tb, PROBES, Duration::from_millis(1)).unwrap();
    let rtt = e.rtt.expect("no echo came back");
    let set_us = p.rtt.as_secs_f64() * 1e6;
    // Jitter may shorten each way by up to its amount.
    let floor_us = (p.rtt - p.jitter * 2).as_secs_f64() * 1e6;
    eprintln!(
        "{profile}: sent {} reached {} echoed {}; rtt min {:.0} p50 {:.0} p99 {:.0} µs (set {set_us:.0})",
        e.sent, e.reached, e.echoed, e.min_us, rtt.p50_us, rtt.p99_us
    );
    // The link holds every packet at least its delay (less jitter) each way.
    assert!(
        e.min_us >= floor_us,
        "{profile}: an echo came back in {} µs",
        e.min_us
    );
    // Half the echoes within the delay plus a generous allowance for a busy machine.
    assert!(
        rtt.p50_us <= set_us * 1.5 + 10_000.0,
        "{profile}: median round trip {} µs",
        rtt.p50_us
    );
    // One way: each probe reached B with probability 1 - loss.
    let lost = e.sent - e.reached;
    assert!(
        within_binomial(lost, e.sent, p.loss),
        "{profile}: {lost} of {} lost on the way, set {}",
        e.sent,
        p.loss
    );
    // Round trip: the echo is lost on either way.
    let missing = e.sent - e.echoed;
    assert!(
        within_binomial(missing, e.sent, p.round_trip_loss()),
        "{profile}: {missing} of {} echoes missing, expected rate {}",
        e.sent,
        p.round_trip_loss()
    );
    // The link's own counters agree: what it dropped is what went missing one way, give or
    // take the few packets that were not probes (the kernel's own, such as IPv6 neighbour
    // discovery: they cross the link too and may be dropped) and the probes a full send
    // buffer kept from the link (counted as sent and lost).
    let link = tb.a_to_b();
    let strays = link.received.saturating_sub(e.sent);
    let unsent = e.sent.saturating_sub(link.received);
    assert!(
        strays.max(unsent) <= e.sent / 100,
        "{profile}: the link carried {} packets for {} probes",
        link.received,
        e.sent
    );
    assert!(
        (lost.saturating_sub(unsent)..=lost + strays).contains(&link.lost),
        "{profile}: the link dropped {} where {lost} probes were lost ({} packets read)",
        link.lost,
        link.received
    );
    if p.loss == 0.0 {
        assert_eq!((lost, missing), (0, 0), "{profile}");
    }
}

#[test]
fn delay_and_loss_match_two_profiles() {
    if !available() {
        return;
    }
    check("20ms,0%,100mbit");
    check("10ms,5%,unlimited,jitter=2ms");
}
