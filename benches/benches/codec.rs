//! Criterion micro-benchmarks of the wire codec: control frames and UDP datagram frames.

use std::hint::black_box;
use std::net::SocketAddr;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nodepass_core::protocol::{self, Chunks, ConnKind, Message, StreamKind, datagram};

/// The messages of the hot paths: a pool connection's hello, the open of a user session and
/// a heartbeat.
fn messages() -> Vec<(&'static str, Message)> {
    let src: SocketAddr = "192.0.2.7:40000".parse().expect("address");
    let dst: SocketAddr = "[2001:db8::1]:443".parse().expect("address");
    vec![
        (
            "hello",
            Message::Hello {
                version: protocol::PROTOCOL_VERSION,
                kind: ConnKind::Pool,
                nonce: [7; protocol::NONCE_LEN],
                session: [3; 16],
                pake: None,
            },
        ),
        (
            "open",
            Message::Open {
                kind: StreamKind::Tcp,
                src,
                dst,
                chunks: Chunks::Off,
            },
        ),
        ("ping", Message::Ping { seq: 42 }),
    ]
}

fn control_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for (name, msg) in messages() {
        let mut wire = BytesMut::new();
        protocol::encode(&msg, &mut wire);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            let mut buf = BytesMut::with_capacity(2048);
            b.iter(|| {
                buf.clear();
                protocol::encode(black_box(&msg), &mut buf);
                black_box(buf.len())
            })
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| protocol::decode(black_box(buf)).expect("valid frame"),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn datagram_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("datagram");
    for size in [64usize, 1400, 8192] {
        let payload = vec![0x5a; size];
        let mut wire = BytesMut::new();
        datagram::encode(&payload, &mut wire);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("encode/{size}"), |b| {
            let mut buf = BytesMut::with_capacity(size + 16);
            b.iter(|| {
                buf.clear();
                datagram::encode(black_box(&payload), &mut buf);
                black_box(buf.len())
            })
        });
        group.bench_function(format!("decode/{size}"), |b| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| datagram::decode(black_box(buf), datagram::MAX_DATAGRAM_LEN).expect("valid"),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, control_frames, datagram_frames);
criterion_main!(benches);
