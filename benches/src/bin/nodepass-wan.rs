//! `nodepass-wan check PROFILE...`: build the emulated WAN for each profile and measure it
//! (round trip and loss with a UDP echo, bandwidth with `iperf3`), to show it matches its
//! settings; `nodepass-wan ceiling`: the forwarder's own maximum (no delay, no rate limit).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nodepass_benches::wan::{Profile, Testbed, measure, netns};

/// The emulated WAN testbed of the benchmarks (needs root).
#[derive(Debug, Parser)]
#[command(name = "nodepass-wan", version)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Measure the link against each profile's settings.
    Check {
        /// Profiles as RTT,LOSS,RATE[,jitter=D][,queue=BYTES][,reorder], e.g. 40ms,1%,100mbit.
        #[arg(required = true)]
        profiles: Vec<Profile>,
        /// UDP echo probes per profile (one every 2 ms).
        #[arg(long, default_value_t = 5000)]
        probes: u64,
        /// Seconds of each iperf3 run (after one omitted second).
        #[arg(long, default_value_t = 5)]
        secs: u32,
    },
    /// The forwarder's ceiling: iperf3 TCP through a link with no delay and no rate limit.
    Ceiling {
        /// Seconds of each iperf3 run.
        #[arg(long, default_value_t = 5)]
        secs: u32,
    },
}

fn main() -> ExitCode {
    if let Some(why) = netns::unavailable() {
        eprintln!("error: {why}");
        return ExitCode::from(1);
    }
    let result = match Args::parse().cmd {
        Cmd::Check {
            profiles,
            probes,
            secs,
        } => profiles.iter().try_for_each(|p| check(p, probes, secs)),
        Cmd::Ceiling { secs } => ceiling(secs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check(p: &Profile, probes: u64, secs: u32) -> anyhow::Result<()> {
    println!("## {p}");
    let tb = Testbed::start(p)?;
    println!(
        "- TCP congestion control: {}; link threads real-time: {}",
        tb.congestion_control(),
        tb.realtime()
    );
    let e = measure::udp_echo(&tb, probes, Duration::from_millis(2))?;
    let set_rtt = p.rtt.as_secs_f64() * 1e3;
    if let Some(r) = &e.rtt {
        println!(
            "- UDP echo RTT ({} probes): min {:.2} ms, p50 {:.2} ms, mean {:.2} ms, p99 {:.2} ms \
             (set {set_rtt:.2} ms; p50 {:+.2}%)",
            e.echoed,
            e.min_us / 1e3,
            r.p50_us / 1e3,
            r.mean_us / 1e3,
            r.p99_us / 1e3,
            (r.p50_us / 1e3 / set_rtt - 1.0) * 100.0
        );
    }
    println!(
        "- loss: one way {:.3}% (set {:.3}%), round trip {:.3}% (expected {:.3}%); link \
         counters a>b {:?}",
        e.one_way_loss() * 100.0,
        p.loss * 100.0,
        e.round_trip_loss() * 100.0,
        p.round_trip_loss() * 100.0,
        tb.a_to_b()
    );
    if let Some(rate) = p.rate_bps {
        let mbit = rate as f64 / 1e6;
        // Goodput at full rate: TCP carries 1448 payload bytes in a 1500-byte IP packet
        // (timestamps on), UDP 1400 in 1428.
        let before = tb.a_to_b();
        let tcp = measure::iperf3(&tb, secs, 1, None)?;
        let after = tb.a_to_b();
        let (got, lost) = (after.received - before.received, after.lost - before.lost);
        println!(
            "- during iperf3 TCP: {got} packets A>B, {lost} lost ({:.3}%), {} dropped by the \
             full queue",
            lost as f64 / got.max(1) as f64 * 100.0,
            after.queue_drops - before.queue_drops
        );
        println!(
            "- iperf3 TCP, 1 stream: {:.2} Mbit/s (goodput at the set rate: {:.2}; {:.1}%)",
            tcp.mbit_per_s,
            mbit * 1448.0 / 1500.0,
            tcp.mbit_per_s / (mbit * 1448.0 / 1500.0) * 100.0
        );
        let udp = measure::iperf3(&tb, secs, 1, Some(mbit * 1.2))?;
        println!(
            "- iperf3 UDP offered at 1.2x the rate: {:.2} Mbit/s received (goodput at the set \
             rate: {:.2}; {:.1}%), iperf3 lost {:.2}%",
            udp.mbit_per_s,
            mbit * 1400.0 / 1428.0,
            udp.mbit_per_s / (mbit * 1400.0 / 1428.0) * 100.0,
            udp.lost_pct.unwrap_or(f64::NAN)
        );
    }
    println!();
    Ok(())
}

fn ceiling(secs: u32) -> anyhow::Result<()> {
    let p: Profile = "0,0%,unlimited".parse().map_err(anyhow::Error::msg)?;
    let tb = Testbed::start(&p)?;
    let e = measure::udp_echo(&tb, 2000, Duration::from_millis(1))?;
    if let Some(r) = &e.rtt {
        println!(
            "- UDP echo RTT through the forwarder, no delay: p50 {:.0} µs, p99 {:.0} µs",
            r.p50_us, r.p99_us
        );
    }
    for streams in [1, 8] {
        let t = measure::iperf3(&tb, secs, streams, None)?;
        println!(
            "- iperf3 TCP, {streams} stream(s), no delay, no rate limit: {:.0} Mbit/s",
            t.mbit_per_s
        );
    }
    Ok(())
}
