//! Progress and cancellation shared between the engine's workers and whoever drives them: workers add the
//! bytes they have read; the driver (the Python bindings' polling loop) reads them and may cancel.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Progress counters and a cancel flag. Cheap to update from many threads.
#[derive(Debug, Default)]
pub struct Monitor {
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
    phase: Mutex<String>,
}

/// A snapshot of the progress of the current phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What is being done (`merge`, `trim: histogram 1/2`, ...).
    pub phase: String,
    /// Input bytes processed in this phase.
    pub done: u64,
    /// Input bytes this phase will process.
    pub total: u64,
}

impl Monitor {
    /// Start a new phase of `total` input bytes.
    pub fn start_phase(&self, phase: &str, total: u64) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase.to_string();
        }
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// Record `bytes` more input bytes processed.
    pub fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Ask the work to stop at the next chunk boundary.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`Monitor::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The current phase and counters.
    pub fn progress(&self) -> Progress {
        let phase = self.phase.lock().map(|p| p.clone()).unwrap_or_default();
        Progress {
            phase,
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_reset_counters() {
        let m = Monitor::default();
        m.start_phase("a", 10);
        m.advance(4);
        assert_eq!(
            m.progress(),
            Progress {
                phase: "a".into(),
                done: 4,
                total: 10
            }
        );
        m.start_phase("b", 3);
        assert_eq!(m.progress().done, 0);
        assert!(!m.is_cancelled());
        m.cancel();
        assert!(m.is_cancelled());
    }
}
