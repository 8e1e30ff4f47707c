//! The master's Swagger UI (`/v1/docs`) renders the endpoint list in headless Chromium with
//! every host name resolving to nothing, so the page can only use what the master serves.
//!
//! Needs `/usr/bin/chromium` (`.ci/run` installs it). Without it the test fails when `CI` is set
//! and is skipped, with a note, otherwise.

mod master_support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use master_support::{MasterProcess, temp_dir};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Run Chromium on `url` and return the DOM after up to 10 s of virtual time (the process is
/// killed after 90 s of real time).
fn dump_dom(url: &str, profile: &Path) -> String {
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            // The network is otherwise closed: no name resolves, only the loopback literal works.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_every_endpoint_offline() {
    if !Path::new(CHROMIUM).exists() {
        let why = format!("{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)");
        if std::env::var_os("CI").is_some() {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let dir = temp_dir("master-docs");
    let master = MasterProcess::start(
        &dir.path().join("state.db"),
        &[("NODEPASS_API_KEY", "docs-test-key")],
    );
    let doc = master.req(Method::GET, "/v1/openapi.json").send().await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();

    let profile = dir.path().join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let url = format!("{}/v1/docs", master.base);
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url, &profile))
        .await
        .unwrap();

    assert!(dom.contains("NodePass master API"), "title missing:\n{dom}");
    for path in &paths {
        let rendered = format!(r#"class="opblock-summary-path" data-path="{path}""#);
        assert!(dom.contains(&rendered), "{path} is not rendered:\n{dom}");
    }
    let rendered = dom.matches(r#"class="opblock-summary-path""#).count();
    assert_eq!(rendered, operations, "one block per operation");
    assert!(operations >= 15, "{paths:?}");
    master.stop();
}
