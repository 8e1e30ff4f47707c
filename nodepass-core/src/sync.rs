//! The crate's one lock-poisoning policy: **recover**.
//!
//! A `std::sync` lock is poisoned when a thread panicked while holding it. Every critical
//! section in nodepass-core is a short synchronous update of plain data (swap an `Option`,
//! insert into a map, push to a queue, bump a counter) that leaves the value valid after each
//! statement, and nothing inside one can panic except a bug. So the data behind a poisoned lock
//! is still consistent, and the right answer is to keep using it: propagating the poison would
//! turn one bug in one session task into a failed tunnel or a dead supervisor (the panic itself
//! is still reported where it happened, by the panic hook and the task's `JoinError`).
//!
//! Every `Mutex` and `RwLock` of the crate is therefore taken through [`lock`], [`read`] or
//! [`write`], never with `.lock().unwrap()`. The SQLite connection follows the same rule for
//! its own reason: a panic mid-transaction rolls the transaction back.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock `m`, recovering from poison (see the [module docs](self)).
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-lock `l`, recovering from poison.
pub(crate) fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-lock `l`, recovering from poison.
pub(crate) fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
