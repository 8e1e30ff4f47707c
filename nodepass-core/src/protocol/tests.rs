//! Byte-level tests of the frame codec.

use super::*;
use std::net::SocketAddr;

fn roundtrip(msg: Message) {
    let mut buf = BytesMut::new();
    encode(&msg, &mut buf);
    let wire = buf.clone();
    // Every strict prefix needs more bytes and consumes nothing.
    for cut in 0..wire.len() {
        let mut part = BytesMut::from(&wire[..cut]);
        assert_eq!(decode(&mut part).unwrap(), None, "{msg:?} cut at {cut}");
        assert_eq!(part.len(), cut);
    }
    let got = decode(&mut buf).unwrap().unwrap();
    assert_eq!(got, msg);
    assert!(buf.is_empty());
}

fn all_messages() -> Vec<Message> {
    let v4: SocketAddr = "192.0.2.7:4242".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    vec![
        Message::Hello {
            version: PROTOCOL_VERSION,
            kind: ConnKind::Control,
            nonce: [0xab; NONCE_LEN],
            session: [0; 16],
            pake: Some([0x41; PAKE_MSG_LEN]),
        },
        Message::Hello {
            version: 9,
            kind: ConnKind::Pool,
            nonce: [1; NONCE_LEN],
            session: [7; 16],
            pake: None,
        },
        Message::Challenge {
            version: PROTOCOL_VERSION,
            nonce: [3; NONCE_LEN],
            pake: Some([0x42; PAKE_MSG_LEN]),
            proof: [4; PROOF_LEN],
        },
        Message::Challenge {
            version: PROTOCOL_VERSION,
            nonce: [3; NONCE_LEN],
            pake: None,
            proof: [4; PROOF_LEN],
        },
        Message::Proof {
            proof: [5; PROOF_LEN],
        },
        Message::Welcome {
            session: [6; 16],
            flow: Flow::Forward,
            max: 1024,
            heartbeat_ms: 5000,
            tcp: true,
            udp: false,
            reuse: true,
            reuse_plain: true,
        },
        Message::PoolReady,
        Message::Goodbye,
        Message::Reuse,
        Message::ReusePlain,
        Message::Refuse {
            code: RefuseCode::TlsRequired,
            arg: 2,
            message: "tls required".into(),
        },
        Message::Ping { seq: u64::MAX },
        Message::Pong { seq: 1 },
        Message::Open {
            kind: StreamKind::Tcp,
            src: v4,
            dst: v6,
            chunks: Chunks::Off,
        },
        Message::Open {
            kind: StreamKind::Tcp,
            src: v4,
            dst: v6,
            chunks: Chunks::Narrow,
        },
        Message::Open {
            kind: StreamKind::Tcp,
            src: v6,
            dst: v6,
            chunks: Chunks::Wide,
        },
        Message::Open {
            kind: StreamKind::Udp,
            src: v6,
            dst: v4,
            chunks: Chunks::Off,
        },
    ]
}

#[test]
fn every_message_round_trips_and_waits_for_whole_frames() {
    for m in all_messages() {
        roundtrip(m);
    }
}

#[test]
fn hello_layout_is_exact() {
    let mut buf = BytesMut::new();
    encode(
        &Message::Hello {
            version: 1,
            kind: ConnKind::Pool,
            nonce: [0x11; NONCE_LEN],
            session: [0x22; 16],
            pake: None,
        },
        &mut buf,
    );
    let mut expect = vec![0x01, 0x00, 8 + 1 + 1 + 32 + 16];
    expect.extend_from_slice(b"NODEPASS");
    expect.extend_from_slice(&[1, 2]);
    expect.extend_from_slice(&[0x11; 32]);
    expect.extend_from_slice(&[0x22; 16]);
    assert_eq!(&buf[..], &expect[..]);

    // A control hello carries the SPAKE2 message last.
    let mut buf = BytesMut::new();
    encode(
        &Message::Hello {
            version: 2,
            kind: ConnKind::Control,
            nonce: [0x11; NONCE_LEN],
            session: [0; 16],
            pake: Some([0x41; PAKE_MSG_LEN]),
        },
        &mut buf,
    );
    let mut expect = vec![0x01, 0x00, 8 + 1 + 1 + 32 + 16 + 33];
    expect.extend_from_slice(b"NODEPASS");
    expect.extend_from_slice(&[2, 1]);
    expect.extend_from_slice(&[0x11; 32]);
    expect.extend_from_slice(&[0; 16]);
    expect.extend_from_slice(&[0x41; 33]);
    assert_eq!(&buf[..], &expect[..]);
}

#[test]
fn challenge_layout_is_exact_with_and_without_pake() {
    let mut buf = BytesMut::new();
    encode(
        &Message::Challenge {
            version: 2,
            nonce: [0x33; NONCE_LEN],
            pake: Some([0x42; PAKE_MSG_LEN]),
            proof: [0x44; PROOF_LEN],
        },
        &mut buf,
    );
    let mut expect = vec![0x02, 0x00, 1 + 32 + 33 + 32, 2];
    expect.extend_from_slice(&[0x33; 32]);
    expect.extend_from_slice(&[0x42; 33]);
    expect.extend_from_slice(&[0x44; 32]);
    assert_eq!(&buf[..], &expect[..]);
    // A pake field of the wrong length is malformed, not misread.
    let mut bad = vec![0x02, 0x00, 1 + 32 + 10 + 32, 2];
    bad.extend_from_slice(&[0; 74]);
    assert!(decode(&mut BytesMut::from(&bad[..])).is_err());
}

#[test]
fn open_layout_is_exact() {
    let mut buf = BytesMut::new();
    encode(
        &Message::Open {
            kind: StreamKind::Tcp,
            src: "10.0.0.1:80".parse().unwrap(),
            dst: "127.0.0.1:8080".parse().unwrap(),
            chunks: Chunks::Off,
        },
        &mut buf,
    );
    assert_eq!(
        &buf[..],
        &[
            0x09, 0, 15, 1, 4, 10, 0, 0, 1, 0, 80, 4, 127, 0, 0, 1, 0x1f, 0x90
        ]
    );
}

#[test]
fn frames_decode_back_to_back() {
    let mut buf = BytesMut::new();
    for m in all_messages() {
        encode(&m, &mut buf);
    }
    buf.extend_from_slice(b"raw user bytes");
    let mut got = Vec::new();
    for _ in 0..all_messages().len() {
        got.push(decode(&mut buf).unwrap().unwrap());
    }
    assert_eq!(got, all_messages());
    // What follows the last frame is left untouched for the relay.
    assert_eq!(&buf[..], b"raw user bytes");
}

#[test]
fn oversize_frame_is_refused_from_the_header_alone() {
    let mut buf = BytesMut::from(&[0x07, 0xff, 0xff][..]);
    assert_eq!(
        decode(&mut buf),
        Err(ProtocolError::FrameTooLong {
            len: 0xffff,
            max: MAX_FRAME_LEN
        })
    );
}

#[test]
fn malformed_frames_are_errors_not_panics() {
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (vec![0x7f, 0, 0], ProtocolError::UnknownType(0x7f)),
        (
            vec![0x07, 0, 3, 1, 2, 3],
            ProtocolError::Malformed {
                kind: "ping",
                reason: "too short",
            },
        ),
        (
            vec![0x05, 0, 1, 0],
            ProtocolError::Malformed {
                kind: "pool-ready",
                reason: "trailing bytes",
            },
        ),
        (
            {
                let mut v = vec![0x01, 0, 58];
                v.extend_from_slice(b"NOTPASS!");
                v.extend_from_slice(&[0; 50]);
                v
            },
            ProtocolError::BadMagic,
        ),
        (
            vec![0x09, 0, 8, 1, 5, 1, 2, 3, 4, 0, 1],
            ProtocolError::Malformed {
                kind: "open",
                reason: "unknown address family",
            },
        ),
        (
            vec![0x09, 0, 1, 5],
            ProtocolError::Malformed {
                kind: "open",
                reason: "unknown stream kind",
            },
        ),
    ];
    for (bytes, want) in cases {
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decode(&mut buf), Err(want), "{bytes:?}");
    }
}

#[test]
fn refuse_message_is_capped_to_the_frame_limit() {
    let long = "é".repeat(2000);
    let mut buf = BytesMut::new();
    encode(
        &Message::Refuse {
            code: RefuseCode::BadKey,
            arg: 0,
            message: long,
        },
        &mut buf,
    );
    assert!(buf.len() <= FRAME_HEADER_LEN + MAX_FRAME_LEN);
    match decode(&mut buf).unwrap().unwrap() {
        Message::Refuse { message, .. } => assert!(message.chars().all(|c| c == 'é')),
        other => panic!("got {other:?}"),
    }
}

#[test]
fn unknown_refuse_codes_survive() {
    roundtrip(Message::Refuse {
        code: RefuseCode::Other(200),
        arg: 0,
        message: String::new(),
    });
}
