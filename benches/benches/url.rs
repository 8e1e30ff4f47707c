//! Criterion micro-benchmarks of URL parsing (`Config::parse`) and printing (`Display`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use nodepass_core::Config;

const URLS: &[(&str, &str)] = &[
    ("server-short", "server://:10101/127.0.0.1:8080"),
    (
        "server-full",
        "server://s3cr3t@0.0.0.0:10101/10.0.0.1:80,10.0.0.2:80?log=warn&tls=1&max=2048&mode=1\
         &read=1m30s&rate=100&slot=4096&proxy=2&block=13",
    ),
    (
        "client",
        "client://p%40ss@tunnel.example.com:10101/127.0.0.1:8080?mode=2&min=64&dns=30s",
    ),
    ("master", "master://[::1]:9090/api/v1?log=info&tls=0"),
];

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("url");
    for (name, url) in URLS {
        Config::parse(url).expect("a valid benchmark URL");
        group.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| Config::parse(black_box(url)))
        });
    }
    let canonical = Config::parse(URLS[1].1).expect("valid");
    group.bench_function("display/server-full", |b| {
        b.iter(|| black_box(&canonical).to_string())
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
