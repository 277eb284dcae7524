//! How many worker threads a request may ask for.

use crate::error::{MergeError, Result};

/// Worker threads allowed per core: more only thrash (10⁷ threads would hang the machine).
const THREADS_PER_CORE: usize = 8;

/// The most worker threads a request may ask for.
fn max_threads() -> usize {
    THREADS_PER_CORE * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `threads` must be at most [`max_threads`].
pub(crate) fn check_threads(threads: usize) -> Result<()> {
    let max = max_threads();
    if threads > max {
        return Err(MergeError::arg(format!(
            "--threads {threads} is more than {THREADS_PER_CORE} per core ({max} here); 0 uses one per core"
        )));
    }
    Ok(())
}
