//! A memory budget handed out in job order: job `j` starts once jobs before it have started and its
//! working set fits beside those running. A job larger than the whole budget waits until it can run alone.
//! Taking turns in order means a large tensor is never starved by a stream of small ones. A worker waiting
//! for its turn helps with the running jobs' own parallel work (the rayon jobs they split off, such as the
//! halves of a large sort) instead of sleeping; the workers themselves must not be stealable rayon jobs (the
//! engine broadcasts them), or a waiting worker could start another worker's loop inside its wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{MergeError, Result};

/// How long a waiting worker sleeps when there is nothing to help with before it looks again.
const WAIT: Duration = Duration::from_millis(2);

/// Bytes in use, and whose turn it is.
#[derive(Default)]
struct Turns {
    in_use: usize,
    next: usize,
    abandoned: bool,
}

/// Bytes that running jobs may hold together.
pub(crate) struct Budget {
    limit: usize,
    turns: Mutex<Turns>,
    changed: Condvar,
}

impl Budget {
    /// A budget of `limit` bytes (at least one).
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            limit: limit.max(1),
            turns: Mutex::new(Turns::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run job `ticket` (tickets are taken 0, 1, 2, … by the callers) with `need` bytes once its turn has
    /// come and the bytes are free; `Cancelled` if another job failed (`stop`) meanwhile.
    pub(crate) fn run<T>(
        &self,
        ticket: usize,
        need: usize,
        stop: &AtomicBool,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let need = need.min(self.limit);
        loop {
            let turns = self.lock();
            if turns.abandoned || stop.load(Ordering::Relaxed) {
                return Err(MergeError::Cancelled);
            }
            if turns.next == ticket && turns.in_use + need <= self.limit {
                let mut turns = turns;
                turns.in_use += need;
                turns.next += 1;
                break;
            }
            drop(turns);
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                let turns = self.lock();
                drop(
                    self.changed
                        .wait_timeout(turns, WAIT)
                        .unwrap_or_else(|e| e.into_inner()),
                );
            }
        }
        self.changed.notify_all();
        let result = work();
        self.lock().in_use -= need;
        self.changed.notify_all();
        result
    }

    /// Wake every waiting job to give up (a job failed).
    pub(crate) fn abandon(&self) {
        self.lock().abandoned = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn jobs_never_exceed_the_budget_and_large_ones_run_alone() {
        let budget = Budget::new(100);
        let stop = AtomicBool::new(false);
        let (running, peak, ticket) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        let needs = [60, 30, 500, 10, 90, 40, 40, 20];
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    loop {
                        let j = ticket.fetch_add(1, Ordering::SeqCst);
                        let Some(&need) = needs.get(j) else { break };
                        let charged = need.min(100);
                        budget
                            .run(j, need, &stop, || {
                                let now = running.fetch_add(charged, Ordering::SeqCst) + charged;
                                peak.fetch_max(now, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(5));
                                running.fetch_sub(charged, Ordering::SeqCst);
                                Ok(())
                            })
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                });
            }
        });
        assert!(
            peak.load(Ordering::SeqCst) <= 100,
            "peak {}",
            peak.load(Ordering::SeqCst)
        );
        assert_eq!(budget.lock().in_use, 0);
        assert_eq!(budget.lock().next, needs.len());
    }

    #[test]
    fn waiting_jobs_give_up_when_another_fails() {
        let budget = Budget::new(10);
        let stop = AtomicBool::new(false);
        budget.abandon();
        let result = budget.run(1, 5, &stop, || Ok(()));
        assert!(matches!(result, Err(MergeError::Cancelled)));
    }
}
