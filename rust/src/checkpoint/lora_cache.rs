//! The factor that every chunk of a module reads whole (Q, r × cols: `lora_A`), kept per thread for the next
//! chunks of the same tensor. Read again for each 64 Ki-element chunk, the `lora_A` of a 1024 × 4096 projection
//! at rank 16 is as many bytes as the chunk of the base itself.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;

/// Bytes of factors kept per thread (two per adapter of eight rank-16 adapters over ViT-L's 4096-wide MLPs).
const KEPT_BYTES: usize = 4 << 20;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// (id, factor), the most recently used first.
    static RECENT: RefCell<Vec<(u64, Rc<Vec<f32>>)>> = const { RefCell::new(Vec::new()) };
}

/// An id for one module's factor, never given twice in a process (an address may be reused by a later merge).
pub(super) fn new_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The factor `id`: this thread's kept copy, or else what `read` gives, then kept (the least recently used
/// dropped past [`KEPT_BYTES`]; one larger than that is not kept).
pub(super) fn factor(id: u64, read: impl FnOnce() -> Result<Vec<f32>>) -> Result<Rc<Vec<f32>>> {
    let kept = RECENT.with_borrow_mut(|recent| {
        let at = recent.iter().position(|(k, _)| *k == id)?;
        let entry = recent.remove(at);
        let factor = Rc::clone(&entry.1);
        recent.insert(0, entry);
        Some(factor)
    });
    if let Some(factor) = kept {
        return Ok(factor);
    }
    let factor = Rc::new(read()?);
    RECENT.with_borrow_mut(|recent| {
        recent.insert(0, (id, Rc::clone(&factor)));
        let mut bytes = 0;
        recent.retain(|(_, f)| {
            bytes += f.len() * size_of::<f32>();
            bytes <= KEPT_BYTES
        });
    });
    Ok(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_factor_is_not_read_again_and_the_least_recent_goes_first() {
        let (a, b) = (new_id(), new_id());
        let reads = std::cell::Cell::new(0);
        let read = |v: f32, n: usize| {
            reads.set(reads.get() + 1);
            Ok(vec![v; n])
        };
        assert_eq!(factor(a, || read(1.0, 4)).unwrap()[0], 1.0);
        assert_eq!(factor(a, || read(9.0, 4)).unwrap()[0], 1.0, "kept");
        assert_eq!(reads.get(), 1);
        let half = KEPT_BYTES / size_of::<f32>() / 2;
        factor(b, || read(2.0, half)).unwrap();
        factor(new_id(), || read(3.0, half)).unwrap(); // a is now the least recent and is dropped
        assert_eq!(factor(a, || read(4.0, 4)).unwrap()[0], 4.0, "read again");
        assert_eq!(reads.get(), 4);
    }
}
