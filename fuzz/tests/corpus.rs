//! Replays the committed fuzz corpus (`corpus/TARGET/*`) and every reproducer of a past finding
//! (`regressions/TARGET/*`) through the same checks the fuzz targets run, on the stable
//! toolchain without libFuzzer. Run with `cargo test --manifest-path fuzz/Cargo.toml`.

use std::path::Path;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 5] = [
    ("frame", nodepass_fuzz::frame),
    ("datagram", nodepass_fuzz::datagram),
    ("url", nodepass_fuzz::url),
    ("sniff", nodepass_fuzz::sniff),
    ("proxy", nodepass_fuzz::proxy),
];

/// The files of one directory, sorted, or none if it does not exist.
fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.expect("read corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_without_failures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, check) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        // A missing or empty corpus would make this test pass vacuously.
        assert!(
            corpus.len() >= 10,
            "corpus/{name} holds {} inputs; run fuzz/run.sh {name} and commit a minimized corpus",
            corpus.len()
        );
        for file in corpus
            .iter()
            .chain(inputs(&root.join("regressions").join(name)).iter())
        {
            let data = std::fs::read(file).expect("read corpus file");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{name}: {} fails", file.display());
        }
    }
}
