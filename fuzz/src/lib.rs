//! The checks behind nodepass's fuzz targets, one function per decoder of untrusted input.
//!
//! Each function takes arbitrary bytes, feeds them to a decoder of nodepass-core and asserts
//! the decoder's contract: no panic, and whatever decodes re-encodes to something that decodes
//! to the same value. The libFuzzer binaries in `fuzz_targets/` call these functions; the test
//! in `tests/corpus.rs` replays the committed corpus through them on the stable toolchain.
//!
//! | function | decoder | input from |
//! | --- | --- | --- |
//! | [`frame`] | `protocol::decode` (control and pool frames) | the tunnel peer, before and after authentication |
//! | [`datagram`] | `protocol::datagram::decode` | the peer of a UDP session |
//! | [`url`] | `Config::parse`, `TunnelConfig::from_str` | API requests, the command line, the store |
//! | [`sniff`] | `sniff::classify` (`block=`) | any user connecting to a tunnel |
//! | [`proxy`] | `proxy::encode_v1/v2` of peer-supplied addresses | `Open` frames from the peer |
//!
//! nodepass writes PROXY headers but never reads one, so [`proxy`] checks the encoder: for any
//! pair of addresses (as an `Open` frame can carry them) the header is well formed, within the
//! length the specification allows, and names exactly those addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BytesMut;
use nodepass_core::TunnelConfig;
use nodepass_core::config::{BlockSet, Config};
use nodepass_core::protocol::StreamKind;
use nodepass_core::protocol::{self, FRAME_HEADER_LEN, MAX_FRAME_LEN, Message, datagram, proxy};
use nodepass_core::sniff::{self, Verdict};

/// Protocol frames: decode all at once and byte by byte (same messages, same error), and every
/// decoded message survives `decode(encode(m)) == m`.
pub fn frame(data: &[u8]) {
    let whole = decode_frames(data, data.len().max(1));
    // The stream is read in whatever pieces the socket returns: the result may not depend on
    // them. Byte-at-a-time is the worst split; 7 bytes is an arbitrary uneven one.
    if data.len() <= 4096 {
        assert_eq!(
            decode_frames(data, 1),
            whole,
            "byte-at-a-time decoding differs"
        );
        assert_eq!(
            decode_frames(data, 7),
            whole,
            "7-byte-chunk decoding differs"
        );
    }
    for msg in whole.0 {
        let mut wire = BytesMut::new();
        protocol::encode(&msg, &mut wire);
        assert!(
            wire.len() <= FRAME_HEADER_LEN + MAX_FRAME_LEN,
            "encoder built an oversize frame for {msg:?}"
        );
        let again = protocol::decode(&mut wire)
            .expect("a re-encoded message decodes")
            .expect("a re-encoded message is one whole frame");
        assert_eq!(again, msg, "decode(encode(m)) != m");
        assert!(wire.is_empty(), "re-encoded frame left bytes behind");
    }
}

/// The messages decoded from `data` fed in chunks of `chunk` bytes, and how decoding ended:
/// `Ok(leftover)` when the input ran out, or the error.
fn decode_frames(data: &[u8], chunk: usize) -> (Vec<Message>, Result<usize, String>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match protocol::decode(&mut buf) {
                Ok(Some(msg)) => out.push(msg),
                Ok(None) => break,
                Err(e) => return (out, Err(e.to_string())),
            }
        }
    }
    (out, Ok(buf.len()))
}

/// Datagram frames: the first two input bytes pick the receiver's maximum, the rest is the
/// stream. Every datagram respects the maximum, and re-encoding the datagrams reproduces the
/// consumed bytes exactly (the framing is canonical).
pub fn datagram(data: &[u8]) {
    let Some((max, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = usize::from(u16::from_be_bytes(*max));
    let mut buf = BytesMut::from(stream);
    let mut again = BytesMut::new();
    // Each step consumes at least the 2-byte header, so this ends; the bound is a backstop.
    for _ in 0..=stream.len() {
        match datagram::decode(&mut buf, max) {
            Ok(Some(d)) => {
                assert!(
                    d.len() <= max,
                    "datagram of {} bytes over max {max}",
                    d.len()
                );
                datagram::encode(&d, &mut again);
            }
            Ok(None) => {
                if let Some(len) = buf.first_chunk::<2>() {
                    let len = usize::from(u16::from_be_bytes(*len));
                    assert!(
                        len <= max && buf.len() < 2 + len,
                        "stalled on a whole frame"
                    );
                }
                break;
            }
            Err(_) => break,
        }
    }
    assert_eq!(
        &again[..],
        &stream[..stream.len() - buf.len()],
        "re-encoded datagrams differ from the consumed bytes"
    );
}

/// The URL language: parsing never panics, and a parsed URL written back with its key parses
/// to the same configuration (the contract of `Config::to_url_with_secret`). The same string
/// goes through `TunnelConfig`, which must agree with `Config` on tunnel URLs.
pub fn url(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Config::parse(s);
    if let Ok(config) = &parsed {
        let canonical = config.to_url_with_secret();
        assert_eq!(
            Config::parse(&canonical).as_ref(),
            Ok(config),
            "canonical URL {canonical:?} does not parse back"
        );
        // The masked form is for display; it must not panic either.
        let _ = config.to_string();
    }
    let tunnel = s.parse::<TunnelConfig>();
    if tunnel.is_ok() {
        assert!(
            parsed.is_ok(),
            "TunnelConfig accepts what Config refuses: {s:?}"
        );
    }
}

/// `block=` sniffing: for every combination of blocked protocols, a decision is final: once a
/// prefix of the input is allowed or blocked, every longer prefix gets the same verdict.
pub fn sniff(data: &[u8]) {
    let data = &data[..data.len().min(512)];
    for bits in 0u8..8 {
        let block = BlockSet {
            socks: bits & 1 != 0,
            http: bits & 2 != 0,
            tls: bits & 4 != 0,
        };
        let verdicts: Vec<Verdict> = (0..=data.len())
            .map(|n| sniff::classify(&data[..n], &block))
            .collect();
        if block.is_empty() {
            assert!(verdicts.iter().all(|v| *v == Verdict::Allow));
        }
        if let Some(first) = verdicts.iter().position(|v| *v != Verdict::NeedMore) {
            for (n, v) in verdicts.iter().enumerate().skip(first) {
                assert_eq!(
                    *v, verdicts[first],
                    "verdict changed from {:?} at {first} bytes to {v:?} at {n} bytes ({block:?})",
                    verdicts[first]
                );
            }
        }
    }
}

/// PROXY headers for addresses a peer chose: the input is read as two addresses (a family
/// byte, 4 or 16 address bytes, a port, each) and a transport bit. Both versions must be well
/// formed and name exactly those addresses, IPv4 ones mapped to IPv6 when the families differ.
pub fn proxy(data: &[u8]) {
    let mut rest = data;
    let Some(kind) = take(&mut rest, 1) else {
        return;
    };
    let kind = if kind[0] & 1 == 0 {
        StreamKind::Tcp
    } else {
        StreamKind::Udp
    };
    let (Some(src), Some(dst)) = (address(&mut rest), address(&mut rest)) else {
        return;
    };
    let (src_ip, dst_ip) = match (src.ip().to_canonical(), dst.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V6(d)) => (IpAddr::V6(s.to_ipv6_mapped()), IpAddr::V6(d)),
        (IpAddr::V6(s), IpAddr::V4(d)) => (IpAddr::V6(s), IpAddr::V6(d.to_ipv6_mapped())),
        same => same,
    };

    let mut v1 = BytesMut::new();
    proxy::encode_v1(src, dst, &mut v1);
    assert!(
        v1.len() <= proxy::V1_MAX_LEN,
        "v1 header of {} bytes",
        v1.len()
    );
    let text = std::str::from_utf8(&v1).expect("v1 header is ASCII");
    let line = text.strip_suffix("\r\n").expect("v1 header ends in CRLF");
    let fields: Vec<&str> = line.split(' ').collect();
    let family = if src_ip.is_ipv4() { "TCP4" } else { "TCP6" };
    assert_eq!(fields.len(), 6, "v1 fields: {line:?}");
    assert_eq!(fields[0], "PROXY");
    assert_eq!(fields[1], family);
    assert_eq!(fields[2].parse::<IpAddr>(), Ok(src_ip));
    assert_eq!(fields[3].parse::<IpAddr>(), Ok(dst_ip));
    assert_eq!(fields[4], src.port().to_string());
    assert_eq!(fields[5], dst.port().to_string());

    let mut v2 = BytesMut::new();
    proxy::encode_v2(src, dst, kind, &mut v2);
    let (head, body) = v2.split_at(16);
    assert_eq!(head[..12], proxy::V2_SIGNATURE);
    assert_eq!(head[12], 0x21, "version 2, command PROXY");
    let transport = match kind {
        StreamKind::Tcp => 0x01,
        StreamKind::Udp => 0x02,
    };
    let family = if src_ip.is_ipv4() { 0x10 } else { 0x20 };
    assert_eq!(head[13], family | transport);
    assert_eq!(
        usize::from(u16::from_be_bytes([head[14], head[15]])),
        body.len()
    );
    let ip_len = if src_ip.is_ipv4() { 4 } else { 16 };
    assert_eq!(body.len(), 2 * ip_len + 4);
    let ip_at = |at: usize| match ip_len {
        4 => IpAddr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap()),
        _ => IpAddr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap()),
    };
    assert_eq!(ip_at(0), src_ip);
    assert_eq!(ip_at(ip_len), dst_ip);
    let ports = &body[2 * ip_len..];
    assert_eq!(u16::from_be_bytes([ports[0], ports[1]]), src.port());
    assert_eq!(u16::from_be_bytes([ports[2], ports[3]]), dst.port());
}

/// One address from the fuzz input: a family byte (even: IPv4, odd: IPv6), the address bytes,
/// a big-endian port.
fn address(rest: &mut &[u8]) -> Option<SocketAddr> {
    let family = take(rest, 1)?[0];
    let ip = if family & 1 == 0 {
        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(take(rest, 4)?).ok()?))
    } else {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(take(rest, 16)?).ok()?))
    };
    let port = take(rest, 2)?;
    Some(SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])))
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}
