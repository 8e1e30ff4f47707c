//! The master's one lock-poisoning policy, as in nodepass-core: a poisoned lock is recovered.
//!
//! Every holder of a master lock (the fleet view, the session map, the per-source connection
//! counts, the alias, the CPU sample) only inserts, removes or swaps plain values while it holds
//! it, so a panic in another holder cannot leave the data half-written; refusing every later
//! request instead (what `.lock().expect(..)` did) would turn one bug into an outage.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, recovering it if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
