//! Crash safety of `SqliteStore`: a child process writes in a loop and reports each committed
//! operation on stdout; the parent kills it with SIGKILL at a few points, reopens the file and
//! checks that every reported write is there, intact, and that the file passes `integrity_check`.
//!
//! The child is this same test binary running the ignored test `child_writer`, which does
//! nothing unless `NODEPASS_CRASH_DB` is set.
//!
//! Every operation is a deterministic function of (round, index) and is applied through the
//! `Store` trait, so the parent replays the reported operations on a `MemoryStore` and requires
//! the reopened file to equal it exactly, or to equal it plus the one operation that may have
//! committed after the last report and before the kill.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nodepass_core::store::{
    Desired, InstanceRecord, MemoryStore, Meta, Peer, SqliteStore, Store, StoreError, TrafficTotals,
};

const DB_ENV: &str = "NODEPASS_CRASH_DB";
const ROUND_ENV: &str = "NODEPASS_CRASH_ROUND";
/// The child stops by itself after this many operations or this long, if nobody kills it.
const CHILD_MAX_OPS: u32 = 200_000;
const CHILD_MAX_TIME: Duration = Duration::from_secs(30);
/// How long one round (spawn, read reports, kill, drain) may take.
const ROUND_DEADLINE: Duration = Duration::from_secs(20);
/// Committed operations to read before each kill.
const KILL_AFTER: [usize; 3] = [150, 333, 480];
const REPORT: &str = "committed ";

/// One write the child makes.
#[derive(Debug)]
enum Op {
    Put(u32),
    Update(u32),
    Traffic(Vec<u32>, TrafficTotals),
    History(Vec<u32>, i64, TrafficTotals),
    Delete(u32),
    Setting(String, String),
}

fn id(round: u32, n: u32) -> String {
    format!("{round:02x}{n:06x}")
}

/// Large enough that some counters do not fit an i64.
fn traffic(i: u32) -> TrafficTotals {
    let i = u64::from(i);
    TrafficTotals {
        tcp_in: i * 1_000 + 1,
        tcp_out: i * 7_000 + 2,
        udp_in: i,
        udp_out: u64::MAX - i,
    }
}

fn new_record(round: u32, n: u32) -> InstanceRecord {
    let mut r = InstanceRecord::new(
        id(round, n),
        format!(
            "server://key-{round}-{n}@0.0.0.0:{}/127.0.0.1:8080?log=debug",
            20_000 + n
        ),
        1_700_000_000_000 + i64::from(round) * 1_000_000 + i64::from(n),
    );
    r.alias = n
        .is_multiple_of(3)
        .then(|| format!("round {round} tunnel {n} ✓"));
    r.restart = n.is_multiple_of(2);
    r.meta = Meta {
        peer: Peer {
            sid: format!("sid-{n}"),
            kind: "client".into(),
            alias: format!("peer of {n}"),
        },
        tags: [("round".to_owned(), round.to_string())].into(),
    };
    r.traffic = traffic(n);
    r.desired = if n.is_multiple_of(5) {
        Desired::Stopped
    } else {
        Desired::Running
    };
    r
}

fn op(round: u32, i: u32) -> Op {
    let n = i / 8;
    let ids = vec![n, n.saturating_sub(1)];
    let ts = 1_700_000_000_000 + i64::from(round) * 1_000_000 + i64::from(i);
    match i % 8 {
        0 => Op::Put(n),
        1 | 4 => Op::History(ids, ts, traffic(i)),
        2 | 5 => Op::Traffic(ids, traffic(i)),
        3 => Op::Update(n),
        6 if n % 4 == 3 => Op::Delete(n - 2),
        6 => Op::Update(n.saturating_sub(1)),
        _ => Op::Setting(format!("round-{round}"), i.to_string()),
    }
}

/// Apply one operation through the trait, the same way in the child and in the parent's model.
async fn apply(store: &dyn Store, round: u32, i: u32) {
    let with_ids = |ns: &[u32], t: TrafficTotals| -> Vec<_> {
        ns.iter().map(|&n| (id(round, n), t)).collect()
    };
    match op(round, i) {
        Op::Put(n) => store.put(&new_record(round, n)).await.unwrap(),
        Op::Update(n) => {
            let current = store.load().await.unwrap();
            if let Some(mut r) = current.into_iter().find(|r| r.id == id(round, n)) {
                r.alias = Some(format!("updated at {i}"));
                r.desired = match r.desired {
                    Desired::Running => Desired::Stopped,
                    Desired::Stopped => Desired::Running,
                };
                r.meta.tags.insert("updated".into(), i.to_string());
                r.updated_at += i64::from(i);
                store.put(&r).await.unwrap();
            }
        }
        Op::Traffic(ns, t) => store.set_traffic(&with_ids(&ns, t)).await.unwrap(),
        Op::History(ns, ts, t) => store.append_history(ts, &with_ids(&ns, t)).await.unwrap(),
        Op::Delete(n) => store.delete(&id(round, n)).await.unwrap(),
        Op::Setting(name, value) => store.set_setting(&name, &value).await.unwrap(),
    }
}

/// The child: only active when the parent set `NODEPASS_CRASH_DB`.
#[tokio::test]
#[ignore = "child process of store_keeps_every_committed_write_after_sigkill"]
async fn child_writer() {
    let Ok(db) = std::env::var(DB_ENV) else {
        return;
    };
    let round: u32 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let store = SqliteStore::open(&db).unwrap();
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    for i in 0..CHILD_MAX_OPS {
        if started.elapsed() > CHILD_MAX_TIME {
            break;
        }
        apply(&store, round, i).await;
        writeln!(out, "{REPORT}{i}").unwrap();
        out.flush().unwrap();
    }
}

/// Everything observable through the trait, for the ids of the rounds so far.
async fn snapshot(store: &dyn Store, rounds: u32, max_n: u32) -> String {
    let mut text = format!("{:#?}\n", store.load().await.unwrap());
    for round in 0..rounds {
        for n in 0..=max_n {
            let hist = store.history(&id(round, n), i64::MIN).await.unwrap();
            if !hist.is_empty() {
                text += &format!("history {}: {hist:?}\n", id(round, n));
            }
        }
        text += &format!(
            "setting {round}: {:?}\n",
            store.setting(&format!("round-{round}")).await
        );
    }
    // Debug masks URLs; compare them too.
    for r in store.load().await.unwrap() {
        text += &format!("url {}: {}\n", r.id, r.url);
    }
    text
}

/// Run the child for `round` until it reported `kill_after` commits, kill it, and return the
/// index of the last operation it reported.
fn run_and_kill(db: &Path, round: u32, kill_after: usize) -> u32 {
    let deadline = Instant::now() + ROUND_DEADLINE;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--ignored", "--nocapture"])
        .env(DB_ENV, db)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.strip_prefix(REPORT)
                && tx.send(i.parse::<u32>().unwrap()).is_err()
            {
                break;
            }
        }
    });
    let mut last = None;
    let mut seen = 0;
    while seen < kill_after {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(i) => {
                assert_eq!(Some(i), last.map_or(Some(0), |l: u32| l.checked_add(1)));
                last = Some(i);
                seen += 1;
            }
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("round {round}: {seen} reports, then {e:?}; child {status:?}");
            }
        }
    }
    // While the child lives, the file is its alone.
    let second = SqliteStore::open(db).map(drop);
    assert!(
        matches!(second, Err(StoreError::Locked { .. })),
        "round {round}: {second:?}"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "round {round}: {status:?}");
    // Reports already in the pipe were committed too.
    reader.join().unwrap();
    for i in rx.try_iter() {
        assert_eq!(Some(i), last.map(|l| l + 1));
        last = Some(i);
    }
    assert!(Instant::now() < deadline, "round {round} took too long");
    last.unwrap()
}

/// The first line where the file and the model disagree, if any.
fn first_difference(on_disk: &str, model: &str) -> Option<String> {
    let mut model_lines = model.lines();
    for (n, line) in on_disk.lines().enumerate() {
        match model_lines.next() {
            Some(expected) if expected == line => {}
            expected => return Some(format!("line {n}: file has {line:?}, model {expected:?}")),
        }
    }
    model_lines
        .next()
        .map(|extra| format!("file lacks {extra:?}"))
}

fn integrity_check(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn store_keeps_every_committed_write_after_sigkill() {
    let dir = nodepass_testkit::temp_dir("crash");
    let db = dir.path().join("state.db");
    let model = MemoryStore::new();
    let mut max_n = 0;

    for (round, kill_after) in (0u32..).zip(KILL_AFTER) {
        let started = Instant::now();
        let last = run_and_kill(&db, round, kill_after);
        let elapsed = started.elapsed();
        // Opening runs quick_check and recovers the WAL the child left behind.
        let store = SqliteStore::open(&db).expect("reopen after SIGKILL");
        max_n = max_n.max(last / 8 + 1);
        for i in 0..=last {
            apply(&model, round, i).await;
        }
        let on_disk = snapshot(&store, round + 1, max_n).await;
        let mut one_more = false;
        if on_disk != snapshot(&model, round + 1, max_n).await {
            // The operation after the last report may have committed before the kill.
            apply(&model, round, last + 1).await;
            let with_next = snapshot(&model, round + 1, max_n).await;
            if let Some(diff) = first_difference(&on_disk, &with_next) {
                panic!("round {round}, last reported op {last}: {diff}");
            }
            one_more = true;
        }
        drop(store);
        assert_eq!(integrity_check(&db), "ok", "round {round}");
        eprintln!(
            "round {round}: killed after op {last} (next op committed unreported: {one_more}), \
             {:?} per op incl. process start and reporting",
            elapsed / (last + 1)
        );
    }
}
