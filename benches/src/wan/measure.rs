//! Measuring the testbed itself: round trip and loss with a UDP echo (our own probe: `ping`
//! is not installed on these machines), and bandwidth with `iperf3`.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::testbed::{ADDR_A, ADDR_B, Testbed};
use crate::procfs;
use crate::stats::Latency;

/// Size of an echo probe: sequence number and send time, padded.
const PROBE: usize = 64;

/// What a UDP echo run saw.
#[derive(Debug, Clone, Serialize)]
pub struct Echo {
    /// Probes sent from A.
    pub sent: u64,
    /// Probes that reached the echo server in B (one way).
    pub reached: u64,
    /// Echoes back in A (round trip).
    pub echoed: u64,
    /// Round-trip times of the echoes.
    pub rtt: Option<Latency>,
    /// The smallest round trip, µs.
    pub min_us: f64,
}

impl Echo {
    /// Share of probes lost on the way to B.
    pub fn one_way_loss(&self) -> f64 {
        1.0 - self.reached as f64 / self.sent.max(1) as f64
    }

    /// Share of probes without an echo.
    pub fn round_trip_loss(&self) -> f64 {
        1.0 - self.echoed as f64 / self.sent.max(1) as f64
    }
}

/// Send `count` probes from A to an echo server in B, one every `interval`, and collect the
/// echoes (waiting for stragglers at most one RTT plus a second).
pub fn udp_echo(tb: &Testbed, count: u64, interval: Duration) -> anyhow::Result<Echo> {
    let server = tb
        .b()
        .run(|| UdpSocket::bind((ADDR_B, 0)))?
        .context("bind the echo server")?;
    let server_addr = server.local_addr()?;
    server.set_read_timeout(Some(Duration::from_millis(50)))?;
    let reached = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let client = tb
        .a()
        .run(|| -> std::io::Result<UdpSocket> {
            let s = UdpSocket::bind((ADDR_A, 0))?;
            s.connect(server_addr)?;
            Ok(s)
        })?
        .context("bind the probe socket")?;
    client.set_read_timeout(Some(Duration::from_millis(50)))?;
    let linger = tb.profile().rtt + tb.profile().jitter * 2 + Duration::from_secs(1);

    let (samples, echoed) = std::thread::scope(|scope| {
        scope.spawn(|| echo_server(&server, &reached, &stop));
        let receiver = scope.spawn(|| collect(&client, count, &stop));
        let start = Instant::now();
        let mut buf = [0u8; PROBE];
        for seq in 0..count {
            let due = start + interval * seq as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            buf[..8].copy_from_slice(&seq.to_be_bytes());
            buf[8..16].copy_from_slice(&(crate::probe::now_ns()).to_be_bytes());
            // A full send buffer would be a loss like any other; count it as sent.
            let _ = client.send(&buf);
        }
        let deadline = Instant::now() + linger;
        while Instant::now() < deadline && !receiver.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        receiver.join().expect("receiver panicked")
    });
    let mut samples = samples;
    let min_us = samples.iter().min().map_or(0.0, |&n| n as f64 / 1e3);
    Ok(Echo {
        sent: count,
        reached: reached.load(Ordering::Relaxed),
        echoed,
        rtt: Latency::from_nanos(&mut samples),
        min_us,
    })
}

fn echo_server(sock: &UdpSocket, reached: &AtomicU64, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            reached.fetch_add(1, Ordering::Relaxed);
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

/// Round trips of distinct echoes (ns) and how many came back; stops when all did.
fn collect(sock: &UdpSocket, count: u64, stop: &AtomicBool) -> (Vec<u64>, u64) {
    let mut seen = vec![false; count as usize];
    let mut samples = Vec::with_capacity(count as usize);
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && (samples.len() as u64) < count {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let now = crate::probe::now_ns();
        if n != PROBE {
            continue;
        }
        let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
        let sent = u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes"));
        if let Some(s) = seen.get_mut(seq as usize).filter(|s| !**s) {
            *s = true;
            samples.push(now.saturating_sub(sent));
        }
    }
    let echoed = samples.len() as u64;
    (samples, echoed)
}

/// An `iperf3` run from A to B.
#[derive(Debug, Clone, Serialize)]
pub struct Iperf {
    /// Payload bits per second the receiver got.
    pub mbit_per_s: f64,
    /// UDP only: the share of datagrams lost, as iperf3 counts it.
    pub lost_pct: Option<f64>,
}

/// Run `iperf3` for `secs` seconds (after one omitted second): TCP with `streams` streams, or
/// UDP of 1400-byte datagrams offered at `udp_mbit`.
pub fn iperf3(
    tb: &Testbed,
    secs: u32,
    streams: u32,
    udp_mbit: Option<f64>,
) -> anyhow::Result<Iperf> {
    let port = tb
        .b()
        .run(|| UdpSocket::bind((ADDR_B, 0)).and_then(|s| s.local_addr()))??
        .port();
    let b_addr = SocketAddr::from((ADDR_B, port));
    let mut server = tb
        .b()
        .run(|| {
            Command::new("iperf3")
                .args([
                    "-s",
                    "-1",
                    "-B",
                    &ADDR_B.to_string(),
                    "-p",
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })?
        .context("start iperf3 -s (is iperf3 installed?)")?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !tb.b().run(|| procfs::is_listening(port))? {
            if Instant::now() > deadline {
                bail!("iperf3 -s does not listen on {b_addr} after 5 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut args = vec![
            "-c".to_owned(),
            ADDR_B.to_string(),
            "-p".into(),
            port.to_string(),
            "-t".into(),
            secs.to_string(),
            "-O".into(),
            "1".into(),
            "-P".into(),
            streams.to_string(),
            "-J".into(),
        ];
        if let Some(rate) = udp_mbit {
            args.extend([
                "-u".into(),
                "-b".into(),
                format!("{rate}M"),
                "-l".into(),
                "1400".into(),
            ]);
        }
        let out = tb
            .a()
            .run(|| Command::new("iperf3").args(&args).output())?
            .context("run iperf3 -c")?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("iperf3 -c printed no JSON ({})", out.status))?;
        if let Some(e) = json.get("error") {
            bail!("iperf3: {e}");
        }
        let end = &json["end"];
        let sum = if udp_mbit.is_some() {
            end.get("sum_received").unwrap_or(&end["sum"])
        } else {
            &end["sum_received"]
        };
        let bps = sum["bits_per_second"]
            .as_f64()
            .context("no bits_per_second in iperf3's output")?;
        Ok(Iperf {
            mbit_per_s: bps / 1e6,
            lost_pct: udp_mbit.and(end["sum"]["lost_percent"].as_f64()),
        })
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}
