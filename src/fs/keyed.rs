//! Async locks by key (an inode), created on demand and dropped when nobody holds or waits for
//! them, so the map stays as small as the set of inodes being worked on.

use std::collections::HashMap;
use std::sync::Arc;

use crate::sync::{Level, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

pub struct KeyedLocks {
    locks: Mutex<HashMap<u64, Arc<AsyncMutex<()>>>>,
}

impl Default for KeyedLocks {
    fn default() -> Self {
        KeyedLocks {
            locks: Mutex::new(Level::FS_KEYED, "keyed locks", HashMap::new()),
        }
    }
}

/// Held while one key's work runs; frees the key's entry when it is the last user.
pub struct KeyGuard<'a> {
    owner: &'a KeyedLocks,
    key: u64,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: u64) -> KeyGuard<'_> {
        let mutex = crate::fs::lock(&self.locks).entry(key).or_default().clone();
        KeyGuard {
            owner: self,
            key,
            guard: Some(mutex.lock_owned().await),
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut locks = crate::fs::lock(&self.owner.locks);
        drop(self.guard.take());
        // Only the map still holds it: nobody waits for this key.
        if locks
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_key_waits_for_itself_not_for_others() {
        let locks = Arc::new(KeyedLocks::default());
        let held = locks.lock(1).await;
        // Another key is free at once.
        tokio::time::timeout(Duration::from_millis(100), locks.lock(2))
            .await
            .expect("key 2 is not blocked by key 1");
        // The same key waits until released.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock(1).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap();
        assert!(
            crate::fs::lock(&locks.locks).is_empty(),
            "entries are freed"
        );
    }
}
