//! 200 instances created, started, stopped and deleted leave no task and no file descriptor
//! behind. Alone in its binary so that no other test's sockets disturb the counts.

#[allow(dead_code)]
#[path = "supervisor/support.rs"]
mod support;

use std::time::{Duration, Instant};

use nodepass_core::Supervisor;
use nodepass_core::supervisor::{CreateInstance, InstanceStatus};

const INSTANCES: usize = 200;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Create `n` instances (servers and single-end clients, alternately) started at once; check
/// they run; stop half of them explicitly; delete all.
async fn cycle(sup: &Supervisor, n: usize) -> (usize, usize) {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let url = if i % 2 == 0 {
            support::SERVER_URL
        } else {
            support::SINGLE_URL
        };
        let info = sup
            .create(CreateInstance {
                url: url.into(),
                restart: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(info.status, InstanceStatus::Running, "{info:?}");
        ids.push(info.id);
    }
    let peak = (open_fds(), alive_tasks());
    for (i, id) in ids.iter().enumerate() {
        if i % 2 == 1 {
            sup.stop(id).await.unwrap();
        }
        sup.delete(id).await.unwrap();
    }
    assert!(sup.list().is_empty());
    peak
}

/// Wait (at most 10 s) until both counts are back to their baseline; the counts then.
async fn settle(fds: usize, tasks: usize) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = (open_fds(), alive_tasks());
        if (now.0 <= fds && now.1 <= tasks) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The counts once they held still for 100 ms (at most 10 s).
async fn steady() -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (open_fds(), alive_tasks());
    let mut same = 0;
    while same < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = (open_fds(), alive_tasks());
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

#[tokio::test]
async fn supervisor_with_200_instances_leaves_no_tasks_or_fds_behind() {
    let (sup, _token) = support::open_memory().await;
    // One warm-up cycle, so that what is created once per process is there before counting.
    cycle(&sup, 2).await;
    let (fds, tasks) = steady().await;

    let (peak_fds, peak_tasks) = cycle(&sup, INSTANCES).await;
    assert!(
        peak_fds >= fds + INSTANCES,
        "{peak_fds} fds at the peak, {fds} before"
    );
    assert!(
        peak_tasks >= tasks + INSTANCES,
        "{peak_tasks} tasks at the peak, {tasks} before"
    );

    let (fds_after, tasks_after) = settle(fds, tasks).await;
    eprintln!(
        "fds: {fds} before, {peak_fds} with {INSTANCES} instances, {fds_after} after; \
         tasks: {tasks} before, {peak_tasks} at the peak, {tasks_after} after"
    );
    assert_eq!(fds_after, fds, "file descriptors leaked");
    assert_eq!(tasks_after, tasks, "tasks leaked");
    sup.shutdown().await;
}
