//! Running core work with the GIL released. The work runs on a scoped thread; the calling (driver) thread
//! waits without the GIL and wakes every 100 ms to report progress to Python and check for signals
//! (Ctrl-C cancels the work, which then removes its partial output). Python is only ever called here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pyo3::prelude::*;

use super::errors::to_py;
use crate::error::MergeError;
use crate::monitor::Monitor;

const POLL: Duration = Duration::from_millis(100);

/// Run `work` with the GIL released, reporting `monitor` to `progress(phase, done, total)`.
pub(crate) fn run_detached<T: Send>(
    py: Python<'_>,
    monitor: &Monitor,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce() -> Result<T, MergeError> + Send,
) -> PyResult<T> {
    let finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            let result = work();
            finished.store(true, Ordering::Release);
            result
        });
        let mut interrupted: Option<PyErr> = None;
        loop {
            let done = py.detach(|| wait_for(&finished, POLL));
            if done {
                break;
            }
            if interrupted.is_none()
                && let Err(e) = py.check_signals().and_then(|()| report(progress, monitor))
            {
                monitor.cancel();
                interrupted = Some(e);
            }
        }
        let joined = handle.join();
        // An interruption that came after the work completed changes nothing: the output is in place.
        if let (Some(e), false) = (interrupted, matches!(joined, Ok(Ok(_)))) {
            return Err(e);
        }
        match joined {
            Ok(Ok(value)) => {
                // The work is done and its output in place: a failing last progress report changes nothing.
                let _ = report(progress, monitor);
                Ok(value)
            }
            Ok(Err(e)) => Err(to_py(py, e)),
            Err(_) => Err(to_py(py, MergeError::Internal("a worker thread panicked".into()))),
        }
    })
}

fn wait_for(flag: &AtomicBool, limit: Duration) -> bool {
    let step = Duration::from_millis(5);
    let mut waited = Duration::ZERO;
    while !flag.load(Ordering::Acquire) {
        if waited >= limit {
            return false;
        }
        std::thread::sleep(step);
        waited += step;
    }
    true
}

fn report(progress: Option<&Bound<'_, PyAny>>, monitor: &Monitor) -> PyResult<()> {
    if let Some(callback) = progress {
        let p = monitor.progress();
        callback.call1((p.phase, p.done, p.total))?;
    }
    Ok(())
}
