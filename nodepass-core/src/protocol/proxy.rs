//! HAProxy PROXY protocol headers (`proxy=1|2`): pure encoders, no I/O.
//!
//! With `proxy=1` or `proxy=2` the tunnel writes one header to the target before any user data,
//! carrying the real user address (`src`) and the address the user connected to (`dst`), so the
//! target sees who its client really is. [`encode`] picks the version from the configuration;
//! [`encode_v1`] and [`encode_v2`] write one version directly.
//!
//! Addresses are first made canonical (an IPv4-mapped IPv6 address such as `::ffff:1.2.3.4`, as
//! a dual-stack listener reports IPv4 users, becomes `1.2.3.4`). If `src` and `dst` are then of
//! different families, the IPv4 one is written as an IPv4-mapped IPv6 address and the header
//! uses the IPv6 family, since a header carries a single family.
//!
//! ```ignore
//! // doc-hidden module (cargo feature `fuzzing`): not compiled as a doctest
//! use bytes::BytesMut;
//! use nodepass_core::config::ProxyProtocol;
//! use nodepass_core::protocol::{proxy, StreamKind};
//!
//! let src = "192.0.2.1:56324".parse().unwrap();
//! let dst = "198.51.100.7:443".parse().unwrap();
//! let mut out = BytesMut::new();
//! proxy::encode(ProxyProtocol::V1, src, dst, StreamKind::Tcp, &mut out);
//! assert_eq!(&out[..], b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, BytesMut};

use super::StreamKind;
use crate::config::ProxyProtocol;

/// The 12 bytes that open every version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header the specification allows, `\r\n` included.
pub const V1_MAX_LEN: usize = 107;

/// Version 2, command PROXY.
const V2_VERSION_PROXY: u8 = 0x21;
/// Address family nibbles (high half of the family/transport byte).
const V2_AF_INET: u8 = 0x10;
const V2_AF_INET6: u8 = 0x20;
/// Transport nibbles (low half).
const V2_STREAM: u8 = 0x01;
const V2_DGRAM: u8 = 0x02;
/// Length of the address block: two addresses and two ports.
const V2_ADDR_LEN_INET: u16 = 4 + 4 + 2 + 2;
const V2_ADDR_LEN_INET6: u16 = 16 + 16 + 2 + 2;

/// Append the header selected by `proto` for a session of `kind` to `out`.
///
/// Writes nothing for [`ProxyProtocol::Off`], and nothing for [`ProxyProtocol::V1`] with
/// [`StreamKind::Udp`]: version 1 can only describe TCP, so UDP targets get no header and the
/// datagrams are relayed unchanged. Use `proxy=2` to announce UDP sessions.
pub fn encode(
    proto: ProxyProtocol,
    src: SocketAddr,
    dst: SocketAddr,
    kind: StreamKind,
    out: &mut BytesMut,
) {
    match (proto, kind) {
        (ProxyProtocol::Off, _) | (ProxyProtocol::V1, StreamKind::Udp) => {}
        (ProxyProtocol::V1, StreamKind::Tcp) => encode_v1(src, dst, out),
        (ProxyProtocol::V2, _) => encode_v2(src, dst, kind, out),
    }
}

/// Append a version 1 (text) header for a TCP session:
/// `PROXY TCP4 <src ip> <dst ip> <src port> <dst port>\r\n`, or `TCP6` for IPv6.
///
/// The result is at most [`V1_MAX_LEN`] bytes.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr, out: &mut BytesMut) {
    let (src_ip, dst_ip) = same_family(src.ip(), dst.ip());
    let family = match src_ip {
        IpAddr::V4(_) => "TCP4",
        IpAddr::V6(_) => "TCP6",
    };
    let start = out.len();
    // `BytesMut` grows as needed, so writing to it cannot fail.
    write!(
        out,
        "PROXY {family} {src_ip} {dst_ip} {} {}\r\n",
        src.port(),
        dst.port()
    )
    .expect("writing to a BytesMut cannot fail");
    debug_assert!(out.len() - start <= V1_MAX_LEN);
}

/// Append a version 2 (binary) header with command PROXY for a session of `kind`.
///
/// Layout: [`V2_SIGNATURE`], `0x21` (version 2, PROXY), the family/transport byte (`0x11` TCP
/// over IPv4, `0x12` UDP over IPv4, `0x21` TCP over IPv6, `0x22` UDP over IPv6), the address
/// block length as a big-endian `u16` (12 for IPv4, 36 for IPv6), then source address,
/// destination address, source port and destination port, all big-endian. No TLVs.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr, kind: StreamKind, out: &mut BytesMut) {
    let transport = match kind {
        StreamKind::Tcp => V2_STREAM,
        StreamKind::Udp => V2_DGRAM,
    };
    let (src_ip, dst_ip) = same_family(src.ip(), dst.ip());
    let (family, len) = match src_ip {
        IpAddr::V4(_) => (V2_AF_INET, V2_ADDR_LEN_INET),
        IpAddr::V6(_) => (V2_AF_INET6, V2_ADDR_LEN_INET6),
    };
    out.reserve(V2_SIGNATURE.len() + 4 + usize::from(len));
    out.put_slice(&V2_SIGNATURE);
    out.put_u8(V2_VERSION_PROXY);
    out.put_u8(family | transport);
    out.put_u16(len);
    for ip in [src_ip, dst_ip] {
        match ip {
            IpAddr::V4(v4) => out.put_slice(&v4.octets()),
            IpAddr::V6(v6) => out.put_slice(&v6.octets()),
        }
    }
    out.put_u16(src.port());
    out.put_u16(dst.port());
}

/// Canonicalise both addresses and, if their families still differ, map the IPv4 one to IPv6.
fn same_family(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    match (src.to_canonical(), dst.to_canonical()) {
        (IpAddr::V4(s), IpAddr::V6(d)) => (IpAddr::V6(s.to_ipv6_mapped()), IpAddr::V6(d)),
        (IpAddr::V6(s), IpAddr::V4(d)) => (IpAddr::V6(s), IpAddr::V6(d.to_ipv6_mapped())),
        same => same,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ipv6_from(octets: &[u8]) -> Ipv6Addr {
        Ipv6Addr::from(<[u8; 16]>::try_from(octets).unwrap())
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Decode a version 1 header (test helper): `(family, src, dst, rest)`.
    fn parse_v1(buf: &[u8]) -> (String, SocketAddr, SocketAddr, &[u8]) {
        let end = buf.windows(2).position(|w| w == b"\r\n").expect("no CRLF");
        let line = std::str::from_utf8(&buf[..end]).unwrap();
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 6, "{line:?}");
        assert_eq!(parts[0], "PROXY");
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let port = |s: &str| -> u16 { s.parse().unwrap() };
        let src = SocketAddr::new(ip(parts[2]), port(parts[4]));
        let dst = SocketAddr::new(ip(parts[3]), port(parts[5]));
        match parts[1] {
            "TCP4" => assert!(src.is_ipv4() && dst.is_ipv4()),
            "TCP6" => assert!(src.is_ipv6() && dst.is_ipv6()),
            other => panic!("bad family {other}"),
        }
        (parts[1].to_owned(), src, dst, &buf[end + 2..])
    }

    /// Decode a version 2 PROXY header (test helper): `(kind, src, dst, rest)`.
    fn parse_v2(buf: &[u8]) -> (StreamKind, SocketAddr, SocketAddr, &[u8]) {
        assert_eq!(buf[..12], V2_SIGNATURE);
        assert_eq!(buf[12], 0x21);
        let kind = match buf[13] & 0x0f {
            1 => StreamKind::Tcp,
            2 => StreamKind::Udp,
            other => panic!("bad transport {other}"),
        };
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        let body = &buf[16..16 + len];
        let (src_ip, dst_ip, ports): (IpAddr, IpAddr, &[u8]) = match (buf[13] >> 4, len) {
            (1, 12) => (
                Ipv4Addr::new(body[0], body[1], body[2], body[3]).into(),
                Ipv4Addr::new(body[4], body[5], body[6], body[7]).into(),
                &body[8..],
            ),
            (2, 36) => (
                ipv6_from(&body[..16]).into(),
                ipv6_from(&body[16..32]).into(),
                &body[32..],
            ),
            other => panic!("bad family/length {other:?}"),
        };
        let src = SocketAddr::new(src_ip, u16::from_be_bytes([ports[0], ports[1]]));
        let dst = SocketAddr::new(dst_ip, u16::from_be_bytes([ports[2], ports[3]]));
        (kind, src, dst, &buf[16 + len..])
    }

    fn v1(src: &str, dst: &str) -> BytesMut {
        let mut out = BytesMut::new();
        encode_v1(addr(src), addr(dst), &mut out);
        out
    }

    fn v2(src: &str, dst: &str, kind: StreamKind) -> BytesMut {
        let mut out = BytesMut::new();
        encode_v2(addr(src), addr(dst), kind, &mut out);
        out
    }

    #[test]
    fn v1_tcp4() {
        assert_eq!(
            &v1("192.168.0.1:56324", "10.0.0.2:443")[..],
            b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n"
        );
    }

    #[test]
    fn v1_tcp6() {
        assert_eq!(
            &v1("[2001:db8::1]:1234", "[2001:db8::2]:80")[..],
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\n"
        );
    }

    #[test]
    fn v1_mixed_families_map_ipv4_into_ipv6() {
        assert_eq!(
            &v1("192.0.2.1:5000", "[2001:db8::2]:80")[..],
            b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 5000 80\r\n"
        );
        assert_eq!(
            &v1("[2001:db8::1]:5000", "192.0.2.2:80")[..],
            b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.2 5000 80\r\n"
        );
    }

    #[test]
    fn v1_ipv4_mapped_addresses_are_written_as_ipv4() {
        // What a dual-stack listener reports for an IPv4 user.
        assert_eq!(
            &v1("[::ffff:192.0.2.1]:5000", "[::ffff:192.0.2.2]:80")[..],
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\n"
        );
    }

    #[test]
    fn v1_longest_header_fits_the_limit() {
        let out = v1(
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        );
        // 104 bytes: the specification's 107 leaves room for the longer word `UNKNOWN`.
        assert_eq!(out.len(), 104);
        assert!(out.len() <= V1_MAX_LEN);
    }

    #[test]
    fn v2_tcp4() {
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
            0x21,                   // version 2, PROXY
            0x11,                   // TCP over IPv4
            0x00, 0x0c,             // 12 bytes follow
            192, 168, 0, 1,         // src addr
            10, 0, 0, 2,            // dst addr
            0xdc, 0x04,             // src port 56324
            0x01, 0xbb,             // dst port 443
        ];
        assert_eq!(
            &v2("192.168.0.1:56324", "10.0.0.2:443", StreamKind::Tcp)[..],
            expected
        );
    }

    #[test]
    fn v2_tcp6() {
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
            0x21,
            0x21,                   // TCP over IPv6
            0x00, 0x24,             // 36 bytes follow
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // 2001:db8::1
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // 2001:db8::2
            0x04, 0xd2,             // src port 1234
            0x00, 0x50,             // dst port 80
        ];
        assert_eq!(
            &v2("[2001:db8::1]:1234", "[2001:db8::2]:80", StreamKind::Tcp)[..],
            expected
        );
    }

    #[test]
    fn v2_udp4() {
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
            0x21,
            0x12,                   // UDP over IPv4
            0x00, 0x0c,
            127, 0, 0, 1,
            127, 0, 0, 2,
            0x00, 0x35,             // src port 53
            0x13, 0x88,             // dst port 5000
        ];
        assert_eq!(
            &v2("127.0.0.1:53", "127.0.0.2:5000", StreamKind::Udp)[..],
            expected
        );
    }

    #[test]
    fn v2_udp6_and_mixed_families() {
        let out = v2("[2001:db8::1]:1", "192.0.2.2:2", StreamKind::Udp);
        assert_eq!(out[13], 0x22);
        assert_eq!(&out[14..16], &[0, 36]);
        assert_eq!(
            &out[32..48],
            &Ipv4Addr::new(192, 0, 2, 2).to_ipv6_mapped().octets()
        );
    }

    #[test]
    fn signature_matches_the_specification() {
        assert_eq!(
            V2_SIGNATURE,
            [
                0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
            ]
        );
    }

    #[test]
    fn encode_dispatches_on_the_configuration() {
        let (src, dst) = (addr("192.0.2.1:1000"), addr("192.0.2.2:2000"));
        let run = |proto, kind| {
            let mut out = BytesMut::from(&b"keep"[..]);
            encode(proto, src, dst, kind, &mut out);
            out
        };
        assert_eq!(&run(ProxyProtocol::Off, StreamKind::Tcp)[..], b"keep");
        assert_eq!(&run(ProxyProtocol::Off, StreamKind::Udp)[..], b"keep");
        // Version 1 cannot express UDP: nothing is written.
        assert_eq!(&run(ProxyProtocol::V1, StreamKind::Udp)[..], b"keep");
        // Headers are appended after what is already in the buffer.
        assert_eq!(
            &run(ProxyProtocol::V1, StreamKind::Tcp)[..],
            b"keepPROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\n"
        );
        let out = run(ProxyProtocol::V2, StreamKind::Udp);
        assert_eq!(&out[..4], b"keep");
        assert_eq!(parse_v2(&out[4..]).0, StreamKind::Udp);
    }

    #[test]
    fn round_trips() {
        let cases = [
            ("192.0.2.1:1", "198.51.100.2:65535"),
            ("0.0.0.0:0", "255.255.255.255:80"),
            ("[::1]:22", "[fe80::1]:2222"),
            ("[2001:db8:0:1:2:3:4:5]:40000", "[::]:443"),
        ];
        for (src, dst) in cases {
            let (src, dst) = (addr(src), addr(dst));
            let mut wire = BytesMut::new();
            encode_v1(src, dst, &mut wire);
            wire.put_slice(b"payload");
            let (_, s, d, rest) = parse_v1(&wire);
            assert_eq!((s, d, rest), (src, dst, &b"payload"[..]));
            for kind in [StreamKind::Tcp, StreamKind::Udp] {
                let mut wire = BytesMut::new();
                encode_v2(src, dst, kind, &mut wire);
                wire.put_slice(b"payload");
                let (k, s, d, rest) = parse_v2(&wire);
                assert_eq!((k, s, d, rest), (kind, src, dst, &b"payload"[..]));
            }
        }
        // Mixed families come back as IPv6, with the IPv4 side mapped.
        let (src, dst) = (addr("192.0.2.1:7"), addr("[2001:db8::9]:8"));
        let mapped = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().into(), 7);
        let mut wire = BytesMut::new();
        encode_v1(src, dst, &mut wire);
        let (family, s, d, _) = parse_v1(&wire);
        assert_eq!((family.as_str(), s, d), ("TCP6", mapped, dst));
        let mut wire = BytesMut::new();
        encode_v2(src, dst, StreamKind::Tcp, &mut wire);
        let (_, s, d, _) = parse_v2(&wire);
        assert_eq!((s, d), (mapped, dst));
    }
}
