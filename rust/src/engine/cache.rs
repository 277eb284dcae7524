//! Page-cache hints for inputs larger than the memory available. When the inputs cannot stay cached (they
//! exceed half of the smaller of the memory cgroup's limit, which also counts the page cache, and the memory
//! available), each writing pass (a method's last over its data) drops what it has read (`DONTNEED`), so
//! that used input pages do not crowd out the kernel's readahead under the limit. With room to spare, the
//! cache is left alone: a warm cache stays warm for the next run.
//!
//! Measured on 8 × ViT-L/14 in a 256 MB cgroup (benches/small_machine.py): announcing reads ahead
//! (`WILLNEED` from the workers or from a prefetching thread), `SEQUENTIAL` or `RANDOM` hints, and writing the
//! output through with `sync_file_range` all made the cold merge slower; what made it twice as fast was
//! reading every file as one sequential stream (the engine's ordered job queue).
//!
//! What is left at 256 MB is readahead evicted before use: task arithmetic reads 1.20–1.30× its inputs from
//! the disk there (`/proc/diskstats`), against 1.00–1.07× at 1 GB and 1.00× for `cat`. This disk reads
//! ahead up to 8 MiB per stream (`read_ahead_kb`), so nine streams may hold over 100 MiB read but not yet
//! used (an estimate, not measured). Turning readahead off (`RANDOM`) and
//! announcing 4 MiB windows per file (`WILLNEED`) removes the re-reads (1.01×) but took 21–26 s against
//! 11.5–14 s; dropping the output's pages behind the writer changed nothing.
//! Reading past the cache altogether (`O_DIRECT` through an aligned bounce buffer, 256 KiB per input per chunk,
//! 2026-12-07) left task arithmetic where it was (9.32–9.72 s against 9.14–9.95 s buffered, cold floor
//! 6.2–6.4 s) and slowed TIES (14.9–15.2 s against 12.6–13.3 s), so it was not kept.
//! Neither was a reader thread per input reading the coming jobs' ranges ahead of the workers into the cache
//! (with or without `RANDOM`, 2–8 MiB ahead in reads of 1–4 MiB): 13.1–15.4 s against 10.7–12.0 s
//! (benches/RESULTS.md, 2026-12-07 evening).
//!
//! What worked (2026-12-08): `O_DIRECT` reads issued by reader threads of their own, several in flight, ahead
//! of the workers (`prefetch.rs`). It is used only where the readahead would crowd the memory
//! ([`MemoryFit::past_cache`]): with room for it, the kernel's readahead was faster still.

use std::os::fd::AsRawFd;
use std::path::Path;

use crate::plan::Inputs;

/// Read past the cache when the memory is under this many times what the kernel's readahead of every input
/// may hold: measured with 8 MiB windows on nine inputs (144 MiB), 256 MB re-read 1.2–1.3× the inputs and
/// 1 GB did not; with 1 MiB windows (18 MiB) 256 MB did not either (benches/RESULTS.md, 2026-12-07 and 08).
const READAHEAD_ROOM: u64 = 4;
/// The kernel's readahead window where the device's cannot be read (`read_ahead_kb`'s default).
const DEFAULT_READAHEAD: u64 = 128 << 10;

/// How the inputs fit the memory this process can fill (read once, when an engine starts).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MemoryFit {
    /// The inputs exceed half of it: stream them through the page cache rather than keep them.
    pub(crate) streaming: bool,
    /// It is under 1/32 of the inputs (a sample's worth of them): every extra read comes from the disk.
    pub(crate) scarce: bool,
    /// Streaming, and it is too small for the kernel's readahead of every input: read past the cache
    /// (`O_DIRECT`, see `prefetch.rs`), ahead of the workers.
    pub(crate) past_cache: bool,
    /// The memory this process can fill, when known.
    pub(crate) available: Option<u64>,
}

/// How `inputs` fit this process's memory (no flag when it cannot be read).
pub(crate) fn memory_fit(inputs: &Inputs) -> MemoryFit {
    let bytes: u64 = inputs.all().map(|c| c.file_bytes()).sum();
    let Some(available) = memory_available() else {
        return MemoryFit::default();
    };
    // The devices' windows matter only to inputs that cannot stay cached; others skip reading them.
    let readahead = if bytes > available / 2 {
        let window = inputs
            .all()
            .filter_map(|c| c.shards.first())
            .map(|s| read_ahead_bytes(&s.path))
            .max()
            .unwrap_or(DEFAULT_READAHEAD);
        2 * window * inputs.all().count() as u64
    } else {
        0
    };
    fit(bytes, readahead, available)
}

/// How `bytes` of inputs, whose readahead (the window being read and the next, per input) may hold
/// `readahead` bytes, fit `available` bytes of memory.
fn fit(bytes: u64, readahead: u64, available: u64) -> MemoryFit {
    let streaming = bytes > available / 2;
    MemoryFit {
        streaming,
        scarce: available < bytes / 32,
        past_cache: streaming && available < READAHEAD_ROOM * readahead,
        available: Some(available),
    }
}

/// The readahead window of the block device holding `path` (`/sys/dev/block/MAJOR:MINOR`, or its disk's for
/// a partition), or the kernel's default where there is none to read (a network or virtual file system).
fn read_ahead_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;

    let Ok(meta) = std::fs::metadata(path) else {
        return DEFAULT_READAHEAD;
    };
    let device = Path::new("/sys/dev/block").join(format!("{}:{}", libc::major(meta.dev()), libc::minor(meta.dev())));
    [
        device.join("queue/read_ahead_kb"),
        device.join("../queue/read_ahead_kb"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok())
    .map_or(DEFAULT_READAHEAD, |kb| kb << 10)
}

/// The memory this process can fill: the smaller of `MemAvailable` and its memory cgroup's limit (minus what
/// the cgroup already uses), over every level of the cgroup hierarchy.
fn memory_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024);
    [available, cgroup_headroom()].into_iter().flatten().min()
}

/// The smallest `limit − usage` over this process's memory cgroup and its ancestors (v1 or v2).
fn cgroup_headroom() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (root, path, files) = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            Some((
                "/sys/fs/cgroup/memory",
                path,
                ("memory.limit_in_bytes", "memory.usage_in_bytes"),
            ))
        } else if controllers.is_empty() {
            Some(("/sys/fs/cgroup", path, ("memory.max", "memory.current")))
        } else {
            None
        }
    })?;
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    Path::new(path)
        .ancestors()
        .filter_map(|a| {
            let dir = Path::new(root).join(a.strip_prefix("/").unwrap_or(a));
            Some(read(&dir.join(files.0))?.saturating_sub(read(&dir.join(files.1)).unwrap_or(0)))
        })
        .min()
}

/// `posix_fadvise` on the pages holding bytes `[offset, offset + len)` of `file` (best effort).
pub(crate) fn advise(file: &std::fs::File, offset: u64, len: u64, advice: libc::c_int) {
    const PAGE: u64 = 4096;
    let start = offset / PAGE * PAGE;
    let end = (offset + len).div_ceil(PAGE) * PAGE;
    // SAFETY: a valid open descriptor; the call only informs the kernel about this file's pages.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            start as libc::off_t,
            (end - start) as libc::off_t,
            advice,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inputs_stay_cached_and_memory_is_known_here() {
        assert!(memory_available().is_some_and(|m| m > 0));
        assert!(read_ahead_bytes(Path::new(env!("CARGO_MANIFEST_DIR"))) >= 4096);
        let empty = Inputs {
            base: None,
            models: Vec::new(),
            extra: Vec::new(),
        };
        assert!(!memory_fit(&empty).streaming && !memory_fit(&empty).past_cache);
    }

    #[test]
    fn reading_past_the_cache_is_for_memory_the_readahead_would_crowd() {
        const MB: u64 = 1 << 20;
        let inputs = 10_900 * MB;
        // nine inputs with 8 MiB windows (144 MiB read ahead), as measured on this project's machine
        let eight = fit(inputs, 144 * MB, 256 * MB);
        assert!(eight.streaming && eight.scarce && eight.past_cache);
        let roomy = fit(inputs, 144 * MB, 1024 * MB);
        assert!(roomy.streaming && !roomy.scarce && !roomy.past_cache);
        let one = fit(inputs, 18 * MB, 256 * MB);
        assert!(one.streaming && !one.past_cache);
        let cached = fit(inputs, 144 * MB, 22_000 * MB);
        assert!(!cached.streaming && !cached.past_cache);
    }
}
