//! Taking turns inside one process, so that contention waits in a queue instead of failing or
//! sleeping.
//!
//! - [`OrderTurns`]: commands on the same order run one after another. Optimistic concurrency
//!   still guards the append (another process may write the same order), but within a process
//!   forty concurrent refunds of one order no longer race, fail their version check, back off
//!   and run out of retries (503): each waits its turn, in arrival order, and runs once.
//! - The SQLite write turn ([`crate::Database::write_turn`]): SQLite has one writer. Left to
//!   itself, every connection that finds the file locked sleeps in SQLite's busy handler (up to
//!   100 ms a nap, with nothing to wake it when the lock frees); taking a turn here first queues
//!   this process's writers in memory and hands the lock on the moment it is released.

use std::hash::BuildHasher;

use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

/// Stripes of [`OrderTurns`]: two unrelated orders share a turn with probability 1/4096, a
/// bounded table however many orders pass through.
pub const ORDER_TURN_STRIPES: usize = 4_096;

/// One queue per order (striped). See the module docs.
pub struct OrderTurns {
    stripes: Box<[Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for OrderTurns {
    fn default() -> Self {
        Self {
            stripes: (0..ORDER_TURN_STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl OrderTurns {
    /// Waits for order `order_id`'s turn (tokio's mutex is fair: first come, first served) and
    /// holds it until the guard drops.
    pub async fn take(&self, order_id: Uuid) -> MutexGuard<'_, ()> {
        let stripe = (self.hasher.hash_one(order_id) % self.stripes.len() as u64) as usize;
        self.stripes[stripe].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn commands_on_one_order_take_turns_and_other_orders_do_not_wait() {
        let turns = Arc::new(OrderTurns::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let order = Uuid::from_u128(7);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (turns, inside, most) = (turns.clone(), inside.clone(), most.clone());
                tokio::spawn(async move {
                    let _turn = turns.take(order).await;
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "two commands on one order ran at once");

        let held = turns.take(order).await;
        // Other orders are free while this one is held (a collision is 1 in 4,096 per order).
        let mut free = 0;
        for id in (1..100u128).map(Uuid::from_u128).filter(|id| *id != order) {
            if tokio::time::timeout(Duration::from_millis(1), turns.take(id))
                .await
                .is_ok()
            {
                free += 1;
            }
        }
        assert!(free >= 95, "only {free} of 98 other orders could take their turn");
        drop(held);
    }
}
