//! Reading ahead of the workers where the kernel's readahead of every input would crowd the memory
//! ([`super::cache::MemoryFit::past_cache`]): reader threads read the coming jobs' ranges of every input with
//! `O_DIRECT` (past the page cache) into a ring of buffers, several reads in flight, while the workers merge
//! the jobs already read. The page cache then holds nothing of the inputs, so under a memory limit that counts
//! it (a cgroup) nothing read ahead is evicted before use, and the disk always has reads queued.
//!
//! Measured on 8 × ViT-L/14 (benches/RESULTS.md, 2026-12-08): in a 256 MB cgroup the kernel's own readahead
//! (8 MiB windows on nine inputs) re-read 1.2–1.3× the inputs, and task arithmetic took 1.53× `cat`; read
//! ahead this way, 1.22× (TIES 1.95× → 1.52×). In a 1 GB cgroup the kernel's readahead was faster (0.91×
//! against 1.11×), so it is left to it there. `O_DIRECT` reads issued by the two workers themselves (one in
//! flight each, between merging and writing) had been no faster than buffered ones.
//!
//! The ring has up to [`WINDOW`] slots, fewer where they would fill over an eighth of the memory (many
//! inputs); job `j` uses slot `j % window` once job `j − window` is merged. A range the
//! direct read refuses (a file system without `O_DIRECT` for it) is read through the cache instead.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::{Engine, Job};
use crate::checkpoint::Checkpoint;
use crate::error::{MergeError, Result};
use crate::plan::FloatSource;

/// Reader threads, so reads in flight.
const READERS: usize = 4;
/// Jobs read at most ahead of the oldest job not yet merged.
const WINDOW: usize = 8;
/// The share of the memory the ring may fill (1/8).
const RING_SHARE: u64 = 8;
/// Alignment of `O_DIRECT` offsets, lengths and buffers (the largest logical block size in common use).
const ALIGN: usize = 4096;

/// One input's range of a job, read into an aligned buffer.
#[derive(Default)]
pub(super) struct DirectRead {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl DirectRead {
    /// The stored bytes of the range.
    pub(super) fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

/// The reads of one job, by input as [`Engine::job_sources`] numbers them (models, extra inputs, θ₀).
pub(super) type Fetched = Vec<DirectRead>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    Reading,
    Filled,
    Merging,
}

struct Slot {
    /// The job this slot is for now.
    job: usize,
    phase: Phase,
    reads: Fetched,
    error: Option<MergeError>,
}

struct Ring {
    slots: Vec<Slot>,
    stopped: bool,
}

/// The reader side and the ring of one pass.
pub(super) struct Prefetch {
    /// Per input (models, extra inputs, θ₀, as [`Engine::job_sources`] numbers them), its shards opened with
    /// `O_DIRECT`.
    files: Vec<Vec<File>>,
    /// Slots in the ring: jobs read at most ahead of the oldest job not yet merged.
    window: usize,
    next: AtomicUsize,
    ring: Mutex<Ring>,
    changed: Condvar,
}

/// Run `work` (the workers) with `ahead`'s readers reading `jobs` beside it; the readers stop when it returns
/// or unwinds.
pub(super) fn alongside<R>(
    ahead: Option<&Prefetch>,
    engine: &Engine<'_>,
    jobs: &[Job],
    read_base: bool,
    work: impl FnOnce() -> R,
) -> R {
    let Some(ahead) = ahead else { return work() };
    std::thread::scope(|scope| {
        for _ in 0..READERS {
            scope.spawn(|| ahead.read_ahead(engine, jobs, read_base));
        }
        let _stop = StopOnDrop(ahead);
        work()
    })
}

/// Stops the readers when dropped, so that a pass whose workers unwind does not wait for them forever.
struct StopOnDrop<'a>(&'a Prefetch);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Held by a worker while it merges a job read ahead: if the worker unwinds (a kernel panicked), the pass
/// stops, so that nobody waits for the slot it held.
pub(super) struct StopOnUnwind<'a>(pub(super) &'a Prefetch);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

impl Prefetch {
    /// A ring for a pass over `engine`'s inputs, or `None` when an input is not a plain file or its files
    /// cannot be opened with `O_DIRECT`.
    pub(super) fn open(engine: &Engine<'_>) -> Option<Prefetch> {
        let inputs = engine.inputs;
        let all = inputs.models.iter().chain(&inputs.extra).chain(&inputs.base);
        let files = all
            .map(|c| c.is_plain().then(|| c.reopen(libc::O_DIRECT).ok()).flatten())
            .collect::<Option<Vec<_>>>()?;
        let job_bytes = (files.len() * (engine.chunk * 4 + 2 * ALIGN)) as u64;
        let room = engine.available.map_or(WINDOW as u64, |a| a / RING_SHARE / job_bytes);
        let window = (room as usize).clamp(2, WINDOW);
        let slots = (0..window)
            .map(|job| Slot {
                job,
                phase: Phase::Free,
                reads: Vec::new(),
                error: None,
            })
            .collect();
        Some(Prefetch {
            files,
            window,
            next: AtomicUsize::new(0),
            ring: Mutex::new(Ring { slots, stopped: false }),
            changed: Condvar::new(),
        })
    }

    /// A reader thread's loop: claim the next job, read it into its slot, until no job is left or the pass
    /// stopped.
    fn read_ahead(&self, engine: &Engine<'_>, jobs: &[Job], read_base: bool) {
        loop {
            let j = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(j) else { return };
            let Some(mut reads) = self.claim(j) else { return };
            let outcome = self.read_job(engine, job, read_base, &mut reads);
            let mut ring = self.lock();
            let slot = &mut ring.slots[j % self.window];
            (slot.reads, slot.phase, slot.error) = (reads, Phase::Filled, outcome.err());
            self.changed.notify_all();
        }
    }

    /// Job `j`'s reads, once a reader has filled them (an error if its read failed or the pass stopped).
    pub(super) fn take(&self, j: usize) -> Result<Fetched> {
        let ring = self.wait_for(j, Phase::Filled);
        let mut ring = ring.ok_or(MergeError::Cancelled)?;
        let slot = &mut ring.slots[j % self.window];
        if let Some(error) = slot.error.take() {
            return Err(error);
        }
        slot.phase = Phase::Merging;
        Ok(std::mem::take(&mut slot.reads))
    }

    /// Hand job `j`'s buffers back once merged: its slot is free for job `j + window`.
    pub(super) fn give_back(&self, j: usize, reads: Fetched) {
        let mut ring = self.lock();
        let slot = &mut ring.slots[j % self.window];
        (slot.job, slot.phase, slot.reads) = (j + self.window, Phase::Free, reads);
        self.changed.notify_all();
    }

    /// End the pass: readers and workers waiting on the ring return.
    fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    /// Job `j`'s slot once it is free, its buffers taken out for reading (`None` if the pass stopped).
    fn claim(&self, j: usize) -> Option<Fetched> {
        let mut ring = self.wait_for(j, Phase::Free)?;
        let slot = &mut ring.slots[j % self.window];
        slot.phase = Phase::Reading;
        Some(std::mem::take(&mut slot.reads))
    }

    /// The ring once job `j`'s slot is for job `j` in `phase` (`None` if the pass stopped first).
    fn wait_for(&self, j: usize, phase: Phase) -> Option<MutexGuard<'_, Ring>> {
        let ready =
            |r: &mut Ring| r.stopped || (r.slots[j % self.window].job == j && r.slots[j % self.window].phase == phase);
        let ring = self.changed.wait_while(self.lock(), |r| !ready(r));
        let ring = ring.unwrap_or_else(PoisonError::into_inner);
        (!ring.stopped).then_some(ring)
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Read every input range of `job` into `reads`.
    fn read_job(&self, engine: &Engine<'_>, job: &Job, read_base: bool, reads: &mut Fetched) -> Result<()> {
        reads.resize_with(self.files.len(), DirectRead::default);
        for (input, source, ckpt) in engine.job_sources(job, read_base) {
            let file = &self.files[input][ckpt.tensors[source.tensor].shard];
            if read_direct(file, ckpt, source, job, &mut reads[input]).is_err() {
                read_buffered(ckpt, source, job, &mut reads[input])?;
            }
        }
        Ok(())
    }
}

/// Read `job`'s range of `source` with `O_DIRECT`: the aligned span around it, into an aligned buffer.
fn read_direct(
    file: &File,
    ckpt: &Checkpoint,
    source: &FloatSource,
    job: &Job,
    read: &mut DirectRead,
) -> std::io::Result<()> {
    let tensor = &ckpt.tensors[source.tensor];
    let (offset, len) = ckpt.stored_range(tensor, source.ty, job.start, job.len);
    let first = offset / ALIGN as u64 * ALIGN as u64;
    let lead = (offset - first) as usize;
    let span = (lead + len).next_multiple_of(ALIGN);
    read.bytes.resize(span + ALIGN, 0);
    let aligned = read.bytes.as_ptr().align_offset(ALIGN);
    let area = &mut read.bytes[aligned..aligned + span];
    let mut filled = 0;
    while filled < lead + len {
        match file.read_at(&mut area[filled..], first + filled as u64)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    (read.start, read.len) = (aligned + lead, len);
    Ok(())
}

/// Read `job`'s range of `source` through the page cache (where `O_DIRECT` is refused), with the usual errors.
fn read_buffered(ckpt: &Checkpoint, source: &FloatSource, job: &Job, read: &mut DirectRead) -> Result<()> {
    let tensor = &ckpt.tensors[source.tensor];
    let (offset, len) = ckpt.stored_range(tensor, source.ty, job.start, job.len);
    read.bytes.resize(len, 0);
    ckpt.read_raw(tensor, offset - tensor.stored.offset, &mut read.bytes[..len])?;
    (read.start, read.len) = (0, len);
    Ok(())
}

#[cfg(test)]
#[path = "prefetch_tests.rs"]
mod tests;
