//! Opaque handles given to C: numbers from one process-wide counter, looked up in per-kind tables.
//!
//! A handle is never a pointer to simulator memory, so a stale, forged or wrong-kind handle is a
//! failed lookup (`ACL_ERROR_RT_INVALID_HANDLE`), never a dereference. Numbers are not reused.
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::SimError;
use crate::sync::{read, write};

/// Handles look like aligned addresses well above the null page.
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(0x5eed_0000);
const HANDLE_STEP: u64 = 0x40;

/// A fresh handle number.
pub(crate) fn next_handle() -> u64 {
    NEXT_HANDLE.fetch_add(HANDLE_STEP, Ordering::Relaxed)
}

/// The C form of a handle number.
pub(crate) fn to_ptr(id: u64) -> *mut c_void {
    id as usize as *mut c_void
}

/// The handle number of a C handle.
pub(crate) fn from_ptr(p: *const c_void) -> u64 {
    p as usize as u64
}

/// The live objects of one kind, by handle.
pub(crate) struct Registry<T> {
    kind: &'static str,
    map: RwLock<HashMap<u64, Arc<T>>>,
}

impl<T> Registry<T> {
    pub(crate) fn new(kind: &'static str) -> Self {
        Registry {
            kind,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn insert(&self, id: u64, value: Arc<T>) {
        write(&self.map).insert(id, value);
    }

    fn invalid(&self, id: u64) -> SimError {
        SimError::InvalidHandle {
            kind: self.kind,
            handle: id as usize,
        }
    }

    /// The object behind handle `p`; NULL or unknown handles are errors.
    pub(crate) fn get(&self, p: *const c_void) -> Result<Arc<T>, SimError> {
        let id = from_ptr(p);
        if id == 0 {
            return Err(SimError::NullPointer(self.kind));
        }
        read(&self.map)
            .get(&id)
            .cloned()
            .ok_or_else(|| self.invalid(id))
    }

    pub(crate) fn get_id(&self, id: u64) -> Option<Arc<T>> {
        read(&self.map).get(&id).cloned()
    }

    /// Removes handle `p`, returning its object.
    pub(crate) fn remove(&self, p: *const c_void) -> Result<Arc<T>, SimError> {
        let id = from_ptr(p);
        if id == 0 {
            return Err(SimError::NullPointer(self.kind));
        }
        write(&self.map).remove(&id).ok_or_else(|| self.invalid(id))
    }

    pub(crate) fn remove_id(&self, id: u64) -> Option<Arc<T>> {
        write(&self.map).remove(&id)
    }

    /// Removes every object matching `pred`.
    pub(crate) fn remove_where(&self, pred: impl Fn(&T) -> bool) -> Vec<Arc<T>> {
        let mut map = write(&self.map);
        let ids: Vec<u64> = map
            .iter()
            .filter(|(_, v)| pred(v))
            .map(|(k, _)| *k)
            .collect();
        ids.into_iter().filter_map(|id| map.remove(&id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_fail_cleanly_for_null_stale_and_foreign_handles() {
        let a: Registry<u32> = Registry::new("stream");
        let b: Registry<u32> = Registry::new("event");
        let id = next_handle();
        a.insert(id, Arc::new(7));
        assert_eq!(*a.get(to_ptr(id)).unwrap(), 7);
        assert_eq!(
            b.get(to_ptr(id)).unwrap_err().acl_code(),
            107017,
            "wrong kind"
        );
        assert_eq!(
            a.get(std::ptr::null()).unwrap_err(),
            SimError::NullPointer("stream")
        );
        assert_eq!(*a.remove(to_ptr(id)).unwrap(), 7);
        assert!(a.get(to_ptr(id)).is_err(), "destroyed");
        assert_ne!(next_handle(), id, "numbers are not reused");
    }
}
