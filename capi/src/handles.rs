//! The handles this library has handed out and not yet destroyed, by type and address: a handle used
//! after its destroy, or destroyed twice, is an error instead of a read of freed memory or a double
//! free.
//!
//! What this cannot catch: a destroyed handle whose address a later create of the same type got
//! again (it then names the new object), and a destroy racing a use on another thread (the contract
//! forbids both).

use std::any::TypeId;
use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::error::{CapiError, Result};

static LIVE: Mutex<BTreeSet<(TypeId, usize)>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<(TypeId, usize)>> {
    // The set stays consistent whatever panicked while holding it (an insert or a remove is whole).
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn key<T: 'static>(p: *const T) -> (TypeId, usize) {
    (TypeId::of::<T>(), p as usize)
}

/// Boxes `value` and records the pointer as a live handle.
pub fn register<T: 'static>(value: T) -> *mut T {
    let p = Box::into_raw(Box::new(value));
    live().insert(key(p));
    p
}

/// Fails unless `p` (non-null and aligned: checked before) is a live handle of type `T`, named `what`.
pub fn check<T: 'static>(
    func: &'static str,
    arg: &'static str,
    what: &str,
    p: *const T,
) -> Result<()> {
    if live().contains(&key(p)) {
        Ok(())
    } else {
        Err(not_live(func, arg, what))
    }
}

/// Forgets the live handle `p` and returns its box, or fails as [`check`] does.
///
/// # Safety
/// A live `p` came from [`register`] with this `T` (the set holds only those) and is not in use.
pub unsafe fn take<T: 'static>(
    func: &'static str,
    arg: &'static str,
    what: &str,
    p: *mut T,
) -> Result<Box<T>> {
    if !live().remove(&key(p)) {
        return Err(not_live(func, arg, what));
    }
    // SAFETY: from Box::into_raw in `register` (it was in the set, which only `register` fills) and
    // removed from the set just now, so this is its only release.
    Ok(unsafe { Box::from_raw(p) })
}

fn not_live(func: &'static str, arg: &'static str, what: &str) -> CapiError {
    CapiError::Invalid {
        func,
        reason: format!(
            "`{arg}` is not a live {what} (destroyed already, or not made by this library)"
        ),
    }
}
