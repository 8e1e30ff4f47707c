//! Waiting, bounded, for a condition that no event announces (counters, files, logs, store
//! contents). Prefer waiting for an observable event where there is one.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Check `f` every [`POLL_INTERVAL`] until it returns `Some`, for at most `within`; panics
/// naming `what` otherwise. The number of checks is bounded by `within / POLL_INTERVAL + 1`.
///
/// Cancel safety: safe; it holds nothing between checks.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let max_polls = within.as_millis() / POLL_INTERVAL.as_millis() + 1;
    for _ in 0..max_polls {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() >= within {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    panic!("{what}: not true within {within:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_and_gives_up_after_the_bound() {
        let mut calls = 0;
        let v = eventually(Duration::from_secs(1), "third call", || {
            calls += 1;
            std::future::ready((calls == 3).then_some(calls))
        })
        .await;
        assert_eq!(v, 3);

        let never = tokio::spawn(eventually(Duration::from_millis(50), "never", || {
            std::future::ready(None::<()>)
        }));
        let err = never.await.unwrap_err();
        assert!(err.is_panic());
    }
}
