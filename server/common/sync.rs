//! The one policy for poisoned locks: recover them.
//!
//! A std lock is poisoned when a thread panics while holding it. agentd's
//! critical sections are short and leave what they guard consistent at
//! each step (a map insert, a counter, a log append, a SQLite transaction
//! that rolls back on drop), so the data behind a poisoned lock is still
//! good, and refusing every later call would turn one bug into an outage.
//! So every engine takes its locks through these functions, which ignore
//! poisoning, as `parking_lot`'s locks do; the panic itself is still
//! reported where it happened.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, recovering it if a panic poisoned it.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Read-locks `lock`, recovering it if a panic poisoned it.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Read-locks `lock` if that needs no waiting (recovering it if a panic
/// poisoned it); None while a writer holds or awaits it.
pub fn try_read<T: ?Sized>(lock: &RwLock<T>) -> Option<RwLockReadGuard<'_, T>> {
    match lock.try_read() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Write-locks `lock`, recovering it if a panic poisoned it.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_panic_under_the_lock_does_not_lock_everyone_out() {
        let shared = Arc::new(Mutex::new(1));
        let poisoner = Arc::clone(&shared);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock().unwrap();
            panic!("a bug while holding the lock");
        })
        .join();
        assert!(shared.is_poisoned());
        *lock(&shared) += 1;
        assert_eq!(*lock(&shared), 2);
    }

    #[test]
    fn a_poisoned_read_write_lock_still_reads() {
        let shared = Arc::new(RwLock::new(1));
        let poisoner = Arc::clone(&shared);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.write().unwrap();
            panic!("a bug while holding the lock");
        })
        .join();
        assert!(shared.is_poisoned());
        *write(&shared) += 1;
        let reading = read(&shared);
        assert_eq!(try_read(&shared).map(|g| *g), Some(2), "readers share");
        drop(reading);
        let writing = write(&shared);
        assert!(try_read(&shared).is_none(), "a writer holds it");
        drop(writing);
    }
}
