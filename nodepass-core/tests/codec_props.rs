//! Property tests of the codecs that face untrusted input: protocol frames, UDP datagram frames
//! and PROXY headers. Decoding arbitrary bytes never panics, and `decode(encode(x)) == x` for
//! every value the encoder accepts. (The URL language has its own in `config/tests.rs`.) The
//! fuzz targets in `fuzz/` check the same contracts with coverage guidance.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BytesMut;
use nodepass_core::protocol::{
    self, Chunks, ConnKind, FRAME_HEADER_LEN, Flow, MAX_FRAME_LEN, Message, RefuseCode, StreamKind,
    datagram, proxy,
};
use proptest::prelude::*;

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
    ]
}

fn stream_kind() -> impl Strategy<Value = StreamKind> {
    prop_oneof![Just(StreamKind::Tcp), Just(StreamKind::Udp)]
}

/// Every refuse code; `Other` only with codes that do not name a known one (an `Other(1)`
/// would come back as `BadKey`, which is the point of the known codes).
fn refuse_code() -> impl Strategy<Value = RefuseCode> {
    prop_oneof![
        Just(RefuseCode::BadKey),
        Just(RefuseCode::Version),
        Just(RefuseCode::TlsRequired),
        Just(RefuseCode::StaleSession),
        Just(RefuseCode::Unavailable),
        Just(RefuseCode::WebSocketRequired),
        Just(RefuseCode::Http2Required),
        Just(RefuseCode::QuicRequired),
        any::<u8>()
            .prop_filter("a known code", |c| !(1..=8).contains(c))
            .prop_map(RefuseCode::Other),
    ]
}

/// A SPAKE2 message: any 33 bytes (the codec does not interpret them).
fn pake_msg() -> impl Strategy<Value = [u8; 33]> {
    proptest::collection::vec(any::<u8>(), 33)
        .prop_map(|v| <[u8; 33]>::try_from(v).expect("33 bytes"))
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u8>(),
            prop_oneof![Just(ConnKind::Control), Just(ConnKind::Pool)],
            any::<[u8; 32]>(),
            any::<[u8; 16]>(),
            proptest::option::of(pake_msg()),
        )
            .prop_map(|(version, kind, nonce, session, pake)| Message::Hello {
                version,
                kind,
                nonce,
                session,
                pake,
            }),
        (
            any::<u8>(),
            any::<[u8; 32]>(),
            proptest::option::of(pake_msg()),
            any::<[u8; 32]>(),
        )
            .prop_map(|(version, nonce, pake, proof)| Message::Challenge {
                version,
                nonce,
                pake,
                proof,
            }),
        any::<[u8; 32]>().prop_map(|proof| Message::Proof { proof }),
        (
            any::<[u8; 16]>(),
            prop_oneof![Just(Flow::Reverse), Just(Flow::Forward)],
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(session, flow, max, heartbeat_ms, tcp, udp, reuse, reuse_plain)| {
                    Message::Welcome {
                        session,
                        flow,
                        max,
                        heartbeat_ms,
                        tcp,
                        udp,
                        reuse,
                        reuse_plain,
                    }
                }
            ),
        Just(Message::Reuse),
        Just(Message::ReusePlain),
        Just(Message::PoolReady),
        // Messages up to the frame limit (longer ones are cut, tested in protocol/tests.rs).
        (refuse_code(), any::<u8>(), "(?s).{0,300}")
            .prop_filter("fits a frame", |(_, _, m)| m.len() <= MAX_FRAME_LEN - 2)
            .prop_map(|(code, arg, message)| Message::Refuse { code, arg, message }),
        any::<u64>().prop_map(|seq| Message::Ping { seq }),
        any::<u64>().prop_map(|seq| Message::Pong { seq }),
        (
            stream_kind(),
            socket_addr(),
            socket_addr(),
            prop_oneof![Just(Chunks::Off), Just(Chunks::Narrow), Just(Chunks::Wide)]
        )
            .prop_map(|(kind, src, dst, chunks)| Message::Open {
                kind,
                src,
                dst,
                // Only a TCP session travels in chunks.
                chunks: if kind == StreamKind::Tcp {
                    chunks
                } else {
                    Chunks::Off
                },
            }),
        Just(Message::Goodbye),
    ]
}

proptest! {
    /// A sequence of messages, encoded back to back and fed in arbitrary pieces, decodes to the
    /// same sequence with nothing left over.
    #[test]
    fn frames_round_trip_in_any_split(
        msgs in proptest::collection::vec(message(), 1..8),
        piece in 1usize..64,
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            protocol::encode(m, &mut wire);
        }
        let mut rx = BytesMut::new();
        let mut out = Vec::new();
        for chunk in wire.chunks(piece) {
            rx.extend_from_slice(chunk);
            while let Some(m) = protocol::decode(&mut rx).expect("valid frames decode") {
                out.push(m);
            }
        }
        prop_assert_eq!(out, msgs);
        prop_assert!(rx.is_empty());
    }

    /// Arbitrary bytes: an error or a message, never a panic; a decoded message re-encodes to a
    /// frame that decodes to the same message, and a frame is never longer than the limit.
    #[test]
    fn frame_decoding_never_panics(
        ty in 0u8..16,
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut src = BytesMut::new();
        src.extend_from_slice(&[ty]);
        src.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        src.extend_from_slice(&payload);
        src.extend_from_slice(&tail);
        if let Ok(Some(msg)) = protocol::decode(&mut src) {
            let mut wire = BytesMut::new();
            protocol::encode(&msg, &mut wire);
            prop_assert!(wire.len() <= FRAME_HEADER_LEN + MAX_FRAME_LEN);
            prop_assert_eq!(protocol::decode(&mut wire), Ok(Some(msg)));
            prop_assert!(wire.is_empty());
        }
    }

    /// Datagrams (empty ones included) survive framing and any split of the byte stream.
    #[test]
    fn datagrams_round_trip_in_any_split(
        datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..6),
        piece in 1usize..97,
    ) {
        let mut wire = BytesMut::new();
        for d in &datagrams {
            datagram::encode(d, &mut wire);
        }
        let mut rx = BytesMut::new();
        let mut out = Vec::new();
        for chunk in wire.chunks(piece) {
            rx.extend_from_slice(chunk);
            while let Some(d) = datagram::decode(&mut rx, 600).expect("frames within max") {
                out.push(d.to_vec());
            }
        }
        prop_assert_eq!(out, datagrams);
        prop_assert!(rx.is_empty());
    }

    /// Arbitrary bytes and limits: never a panic, never a datagram over the limit.
    #[test]
    fn datagram_decoding_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        max in 0usize..70_000,
    ) {
        let mut src = BytesMut::from(&bytes[..]);
        for _ in 0..=bytes.len() {
            match datagram::decode(&mut src, max) {
                Ok(Some(d)) => prop_assert!(d.len() <= max),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// PROXY headers name exactly the addresses given (IPv4 mapped to IPv6 when the families
    /// differ), with a v2 length field that matches and a v1 line within the specified length.
    #[test]
    fn proxy_headers_carry_the_addresses(
        src in socket_addr(),
        dst in socket_addr(),
        kind in stream_kind(),
    ) {
        let (src_ip, dst_ip) = match (src.ip().to_canonical(), dst.ip().to_canonical()) {
            (IpAddr::V4(s), IpAddr::V6(d)) => (IpAddr::V6(s.to_ipv6_mapped()), IpAddr::V6(d)),
            (IpAddr::V6(s), IpAddr::V4(d)) => (IpAddr::V6(s), IpAddr::V6(d.to_ipv6_mapped())),
            same => same,
        };

        let mut v1 = BytesMut::new();
        proxy::encode_v1(src, dst, &mut v1);
        prop_assert!(v1.len() <= proxy::V1_MAX_LEN);
        let line = std::str::from_utf8(&v1).unwrap().strip_suffix("\r\n").unwrap().to_owned();
        let fields: Vec<&str> = line.split(' ').collect();
        prop_assert_eq!(fields.len(), 6);
        prop_assert_eq!(fields[1], if src_ip.is_ipv4() { "TCP4" } else { "TCP6" });
        prop_assert_eq!(fields[2].parse::<IpAddr>(), Ok(src_ip));
        prop_assert_eq!(fields[3].parse::<IpAddr>(), Ok(dst_ip));
        prop_assert_eq!(fields[4].parse::<u16>(), Ok(src.port()));
        prop_assert_eq!(fields[5].parse::<u16>(), Ok(dst.port()));

        let mut v2 = BytesMut::new();
        proxy::encode_v2(src, dst, kind, &mut v2);
        prop_assert_eq!(&v2[..12], &proxy::V2_SIGNATURE[..]);
        let len = usize::from(u16::from_be_bytes([v2[14], v2[15]]));
        prop_assert_eq!(len, v2.len() - 16);
        let body = &v2[16..];
        let decoded = if src_ip.is_ipv4() {
            prop_assert_eq!(v2[13] >> 4, 1);
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap());
            (ip(0), ip(4), &body[8..])
        } else {
            prop_assert_eq!(v2[13] >> 4, 2);
            let ip = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap());
            (ip(0), ip(16), &body[32..])
        };
        prop_assert_eq!((decoded.0, decoded.1), (src_ip, dst_ip));
        prop_assert_eq!(decoded.2, &[src.port().to_be_bytes(), dst.port().to_be_bytes()].concat()[..]);
    }
}
