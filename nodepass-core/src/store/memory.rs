//! [`MemoryStore`]: a [`Store`] that keeps everything in memory and forgets it on drop.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    DEFAULT_HISTORY_RETENTION, InstanceRecord, Result, Store, TrafficSample, TrafficTotals,
    retention_ms,
};

/// A [`Store`] without a file, for tests and embedders that do not want persistence.
///
/// It behaves like [`SqliteStore`](super::SqliteStore) in every observable way (same ordering,
/// same validation, same handling of unknown ids) except that nothing survives the value.
#[derive(Debug)]
pub struct MemoryStore {
    retention: Duration,
    /// Locked for the duration of one synchronous call, never across an `.await`.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    instances: BTreeMap<String, InstanceRecord>,
    /// Per instance, samples keyed by time.
    history: BTreeMap<String, BTreeMap<i64, TrafficTotals>>,
    settings: BTreeMap<String, String>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store keeping history for [`DEFAULT_HISTORY_RETENTION`].
    pub fn new() -> Self {
        MemoryStore {
            retention: DEFAULT_HISTORY_RETENTION,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Keep history samples for `retention` instead of [`DEFAULT_HISTORY_RETENTION`].
    pub fn with_history_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Every method changes `Inner` only after all its checks passed, so a poisoned lock still
    /// guards consistent data.
    fn inner(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }
}

impl Inner {
    fn prune(&mut self, older_than_ms: i64) -> u64 {
        let mut removed = 0;
        for samples in self.history.values_mut() {
            let kept = samples.split_off(&older_than_ms);
            removed += samples.len() as u64;
            *samples = kept;
        }
        self.history.retain(|_, samples| !samples.is_empty());
        removed
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn load(&self) -> Result<Vec<InstanceRecord>> {
        let mut all: Vec<_> = self.inner().instances.values().cloned().collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    async fn put(&self, record: &InstanceRecord) -> Result<()> {
        record.validate()?;
        self.inner()
            .instances
            .insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let mut inner = self.inner();
        inner.instances.remove(id);
        inner.history.remove(id);
        Ok(())
    }

    async fn set_traffic(&self, totals: &[(String, TrafficTotals)]) -> Result<()> {
        let mut inner = self.inner();
        for (id, t) in totals {
            if let Some(record) = inner.instances.get_mut(id) {
                record.traffic = *t;
            }
        }
        Ok(())
    }

    async fn reset_traffic(&self, id: &str) -> Result<()> {
        if let Some(record) = self.inner().instances.get_mut(id) {
            record.traffic = TrafficTotals::ZERO;
        }
        Ok(())
    }

    async fn append_history(&self, ts_ms: i64, samples: &[(String, TrafficTotals)]) -> Result<()> {
        let mut inner = self.inner();
        for (id, t) in samples {
            if inner.instances.contains_key(id) {
                inner
                    .history
                    .entry(id.clone())
                    .or_default()
                    .insert(ts_ms, *t);
            }
        }
        inner.prune(ts_ms.saturating_sub(retention_ms(self.retention)));
        Ok(())
    }

    async fn prune_history(&self, older_than_ms: i64) -> Result<u64> {
        Ok(self.inner().prune(older_than_ms))
    }

    async fn history(&self, id: &str, since_ms: i64) -> Result<Vec<TrafficSample>> {
        let inner = self.inner();
        let Some(samples) = inner.history.get(id) else {
            return Ok(Vec::new());
        };
        Ok(samples
            .range(since_ms..)
            .map(|(&ts_ms, &traffic)| TrafficSample { ts_ms, traffic })
            .collect())
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(self.inner().settings.get(name).cloned())
    }

    async fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        self.inner()
            .settings
            .insert(name.to_owned(), value.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{exercise_store, record};

    #[tokio::test]
    async fn memory_store_passes_the_shared_behaviour() {
        exercise_store(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn retention_is_configurable() {
        let store = MemoryStore::new().with_history_retention(Duration::from_millis(10));
        store.put(&record(1)).await.unwrap();
        let id = record(1).id;
        let t = TrafficTotals::ZERO;
        store.append_history(100, &[(id.clone(), t)]).await.unwrap();
        store.append_history(105, &[(id.clone(), t)]).await.unwrap();
        store.append_history(111, &[(id.clone(), t)]).await.unwrap();
        let kept: Vec<_> = store
            .history(&id, 0)
            .await
            .unwrap()
            .iter()
            .map(|s| s.ts_ms)
            .collect();
        assert_eq!(kept, [105, 111]);
    }
}
