//! The download slots: the server's per-user cap on simultaneous downloads, shared by every
//! handle of the mount, and who gets a slot when one frees.
//!
//! - Never more than `n` slots are held.
//! - Demand (bytes a read is waiting for) goes before read-ahead whenever a slot frees.
//! - Read-ahead may hold every slot while no read waits, so a lone sequential reader uses all
//!   the connections the server allows.
//! - A read that finds every slot taken and some held by read-ahead preempts the most recently
//!   started read-ahead download (the least progress lost): its holder is told to stop
//!   (`Slot::preempted`), drops its download (closing the connection), and the slot passes
//!   straight to the waiting read. Only as many are preempted as there are waiting reads beyond
//!   the preemptions already under way.
//!
//! Waiters are served in arrival order within a priority. Dropping a waiting `acquire` or a
//! held `Slot` (a cancelled task) gives the slot back: nothing leaks.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::sync::{Level, Mutex, MutexGuard};

use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// Bytes a read is waiting for.
    Demand,
    /// Read-ahead.
    Prefetch,
}

/// What a waiter is handed: a slot, and for read-ahead, its preemption signal.
struct Grant {
    /// The slot was given up by a preempted download (the server may count that connection
    /// for a few more milliseconds).
    from_preemption: bool,
    running: Option<(u64, oneshot::Receiver<()>)>,
}

#[derive(Default)]
struct Inner {
    free: usize,
    next_id: u64,
    demand: BTreeMap<u64, oneshot::Sender<Grant>>,
    prefetch: BTreeMap<u64, oneshot::Sender<Grant>>,
    /// Read-ahead downloads holding a slot, by start order; the sender is taken once preempted.
    running: BTreeMap<u64, Option<oneshot::Sender<()>>>,
    /// Preempted read-ahead downloads that have not given their slot back yet.
    preempting: usize,
}

impl Inner {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A slot for a read-ahead download: registered as preemptible.
    fn run_prefetch(&mut self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let id = self.id();
        self.running.insert(id, Some(tx));
        (id, rx)
    }

    /// A slot is free: to the first waiting read, else to the first read-ahead, else kept.
    fn hand_over(&mut self, from_preemption: bool) {
        while let Some((_, tx)) = self.demand.pop_first() {
            let grant = Grant {
                from_preemption,
                running: None,
            };
            if tx.send(grant).is_ok() {
                return;
            }
        }
        while let Some((_, tx)) = self.prefetch.pop_first() {
            let (id, rx) = self.run_prefetch();
            let grant = Grant {
                from_preemption: false,
                running: Some((id, rx)),
            };
            if tx.send(grant).is_ok() {
                return;
            }
            self.running.remove(&id);
        }
        self.free += 1;
    }

    /// Asks the most recently started read-ahead downloads to give their slots to the reads
    /// that wait, one per waiting read not already covered by a preemption under way.
    fn preempt_for_demand(&mut self) {
        while self.demand.len() > self.preempting {
            let Some(signal) = self.running.values_mut().rev().find_map(Option::take) else {
                return;
            };
            // A holder that has already finished still gives its slot back (to the read) when
            // it drops it; the signal is only a request to hurry.
            let _ = signal.send(());
            self.preempting += 1;
        }
    }
}

pub(crate) struct Slots {
    inner: Mutex<Inner>,
}

/// A held download slot; dropping it frees the slot.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    running: Option<u64>,
    preempt: Option<oneshot::Receiver<()>>,
    from_preemption: bool,
}

/// A waiting `acquire`; dropping it leaves the queue, or gives back a slot granted meanwhile.
struct Waiter {
    slots: Arc<Slots>,
    id: u64,
    prio: Priority,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl Slots {
    pub fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots {
            inner: Mutex::new(
                Level::READ_SLOTS,
                "read.slots",
                Inner {
                    free: n.max(1),
                    ..Inner::default()
                },
            ),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    fn slot(self: &Arc<Self>, grant: Grant) -> Slot {
        let (running, preempt) = match grant.running {
            Some((id, rx)) => (Some(id), Some(rx)),
            None => (None, None),
        };
        Slot {
            slots: self.clone(),
            running,
            preempt,
            from_preemption: grant.from_preemption,
        }
    }

    /// Waits for a slot. Cancel-safe: dropping the future never loses a slot.
    pub async fn acquire(self: &Arc<Self>, prio: Priority) -> Slot {
        loop {
            let mut waiter = {
                let mut g = self.lock();
                // Reads waiting imply no free slot, so a free one may go to anyone.
                if g.free > 0 {
                    g.free -= 1;
                    let running = (prio == Priority::Prefetch).then(|| g.run_prefetch());
                    return self.slot(Grant {
                        from_preemption: false,
                        running,
                    });
                }
                let (tx, rx) = oneshot::channel();
                let id = g.id();
                match prio {
                    Priority::Demand => {
                        g.demand.insert(id, tx);
                        g.preempt_for_demand();
                    }
                    Priority::Prefetch => {
                        g.prefetch.insert(id, tx);
                    }
                }
                Waiter {
                    slots: self.clone(),
                    id,
                    prio,
                    rx: Some(rx),
                }
            };
            let got = match waiter.rx.as_mut() {
                Some(rx) => rx.await,
                None => continue,
            };
            waiter.rx = None;
            // A dropped sender means the grant was withdrawn: queue again.
            if let Ok(grant) = got {
                return self.slot(grant);
            }
        }
    }

    /// Slots held or free right now never exceed `n`: for tests.
    #[cfg(test)]
    pub fn free(&self) -> usize {
        self.lock().free
    }

    #[cfg(test)]
    pub fn waiting(&self) -> (usize, usize) {
        let g = self.lock();
        (g.demand.len(), g.prefetch.len())
    }
}

impl Slot {
    /// Resolves when the scheduler wants this (read-ahead) slot for a waiting read; never for
    /// a demand slot. Poll it alongside the download and stop the download when it fires.
    pub async fn preempted(&mut self) {
        let fired = match self.preempt.as_mut() {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        // A oneshot must not be polled again once it has answered.
        self.preempt = None;
        if !fired {
            std::future::pending::<()>().await;
        }
    }

    /// This slot was taken from a preempted download.
    pub fn handed_over(&self) -> bool {
        self.from_preemption
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.slots.lock();
        let preempted = match self.running.take() {
            // The signal was taken: this download was preempted and its slot is owed to a read.
            Some(id) => matches!(g.running.remove(&id), Some(None)),
            None => false,
        };
        if preempted {
            g.preempting = g.preempting.saturating_sub(1);
        }
        g.hand_over(preempted);
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let granted = {
            let mut g = self.slots.lock();
            let queued = match self.prio {
                Priority::Demand => g.demand.remove(&self.id),
                Priority::Prefetch => g.prefetch.remove(&self.id),
            };
            if queued.is_some() {
                return;
            }
            // Grants are sent under the lock: not queued any more means one is in the channel.
            rx.close();
            rx.try_recv().ok()
        };
        if let Some(grant) = granted {
            drop(self.slots.slot(grant));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn pending_for_a_moment<F: std::future::Future>(f: F) -> bool {
        tokio::time::timeout(Duration::from_millis(20), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn prefetch_may_take_every_slot() {
        let s = Slots::new(3);
        let held: Vec<Slot> = vec![
            s.acquire(Priority::Prefetch).await,
            s.acquire(Priority::Prefetch).await,
            s.acquire(Priority::Prefetch).await,
        ];
        assert_eq!(s.free(), 0);
        assert!(pending_for_a_moment(s.acquire(Priority::Prefetch)).await);
        drop(held);
        assert_eq!(s.free(), 3);
        assert_eq!(s.waiting(), (0, 0));
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_demand_before_prefetch() {
        let s = Slots::new(1);
        let held = s.acquire(Priority::Demand).await;
        let pf = tokio::spawn({
            let s = s.clone();
            async move { s.acquire(Priority::Prefetch).await }
        });
        tokio::task::yield_now().await;
        while s.waiting() != (0, 1) {
            tokio::task::yield_now().await;
        }
        let dm = tokio::spawn({
            let s = s.clone();
            async move { s.acquire(Priority::Demand).await }
        });
        while s.waiting() != (1, 1) {
            tokio::task::yield_now().await;
        }
        drop(held);
        let d = dm.await.unwrap();
        assert!(!d.handed_over());
        assert_eq!(s.waiting(), (0, 1));
        drop(d);
        let p = pf.await.unwrap();
        drop(p);
        assert_eq!(s.free(), 1);
    }

    #[tokio::test]
    async fn demand_preempts_the_most_recent_prefetch_once_per_waiting_read() {
        let s = Slots::new(3);
        let mut a = s.acquire(Priority::Prefetch).await;
        let mut b = s.acquire(Priority::Prefetch).await;
        let mut c = s.acquire(Priority::Prefetch).await;
        let d1 = tokio::spawn({
            let s = s.clone();
            async move { s.acquire(Priority::Demand).await }
        });
        // The newest read-ahead is asked to stop; the others are not.
        tokio::time::timeout(Duration::from_secs(5), c.preempted())
            .await
            .expect("newest prefetch preempted");
        assert!(pending_for_a_moment(b.preempted()).await);
        assert!(pending_for_a_moment(a.preempted()).await);
        // A second waiting read preempts the next newest, not more.
        let d2 = tokio::spawn({
            let s = s.clone();
            async move { s.acquire(Priority::Demand).await }
        });
        tokio::time::timeout(Duration::from_secs(5), b.preempted())
            .await
            .expect("second preemption");
        assert!(pending_for_a_moment(a.preempted()).await);
        // The read gets the preempted slot once its holder lets go.
        drop(c);
        let got1 = d1.await.unwrap();
        assert!(got1.handed_over());
        drop(b);
        let got2 = d2.await.unwrap();
        assert!(got2.handed_over());
        assert_eq!(s.free(), 0);
        drop((a, got1, got2));
        assert_eq!(s.free(), 3);
        assert_eq!(s.lock().preempting, 0);
        assert!(s.lock().running.is_empty());
    }

    #[tokio::test]
    async fn demand_slots_are_never_preempted() {
        let s = Slots::new(1);
        let mut held = s.acquire(Priority::Demand).await;
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.acquire(Priority::Demand).await }
        });
        assert!(pending_for_a_moment(held.preempted()).await);
        drop(held);
        drop(waiting.await.unwrap());
        assert_eq!(s.free(), 1);
    }

    #[tokio::test]
    async fn cancelled_waiters_and_holders_leak_no_slot() {
        let s = Slots::new(2);
        for round in 0..50 {
            let a = s.acquire(Priority::Prefetch).await;
            let b = s.acquire(Priority::Demand).await;
            // Waiters of both kinds, cancelled at various points, some after being granted.
            let mut tasks = Vec::new();
            for i in 0..6 {
                let s = s.clone();
                let prio = if i % 2 == 0 {
                    Priority::Demand
                } else {
                    Priority::Prefetch
                };
                tasks.push(tokio::spawn(async move {
                    let mut slot = s.acquire(prio).await;
                    tokio::select! {
                        _ = slot.preempted() => {}
                        _ = tokio::task::yield_now() => {}
                    }
                }));
            }
            tokio::task::yield_now().await;
            if round % 2 == 0 {
                drop(a);
                for t in tasks.iter().step_by(2) {
                    t.abort();
                }
                drop(b);
            } else {
                for t in &tasks {
                    t.abort();
                }
                drop(b);
                drop(a);
            }
            for t in tasks {
                let _ = t.await;
            }
            assert_eq!(s.free(), 2, "round {round}");
            assert_eq!(s.waiting(), (0, 0));
            let g = s.lock();
            assert!(g.running.is_empty());
            assert_eq!(g.preempting, 0);
        }
    }
}
