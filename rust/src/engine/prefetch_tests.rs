//! The read-ahead against plain reads: the same values for every job whatever the dtype, shards, chunk and
//! threads, and a pass that fails (a kernel's error, a truncated input) ends with its error, never hangs.

use std::path::{Path, PathBuf};

use super::*;
use crate::checkpoint::Checkpoint;
use crate::dtype::FloatType;
use crate::engine::{Chunk, Engine, PassSpec};
use crate::monitor::Monitor;
use crate::plan::{Inputs, MergePlan};
use crate::test_files::synthetic_models_stored;

/// θ₀ and three models with tensors of awkward sizes (none a multiple of the alignment), in `dtype`, sharded
/// every `shard` bytes.
fn model_set(dir: &Path, dtype: FloatType, shard: u64) -> Vec<PathBuf> {
    let tensors = [
        ("a", vec![301, 17]),
        ("b", vec![7]),
        ("c", vec![1025, 5]),
        ("d", vec![3]),
    ];
    synthetic_models_stored(dir, &tensors, 3, 7, dtype, shard)
}

fn open(paths: &[PathBuf]) -> Inputs {
    let open = |p: &PathBuf| Checkpoint::open(p).unwrap_or_else(|e| panic!("{e}"));
    Inputs {
        base: Some(open(&paths[0])),
        models: paths[1..].iter().map(open).collect(),
        extra: Vec::new(),
    }
}

const READ_ALL: PassSpec<'static> = PassSpec {
    phase: "test",
    prefetch: 0,
    read_base: true,
    writer: None,
};

/// Every job's values (θ₀ then each model), as bits, read ahead or not.
fn values(
    inputs: &Inputs,
    plan: &MergePlan,
    threads: usize,
    chunk: usize,
    ahead: Option<Option<u64>>,
) -> Vec<Vec<u32>> {
    let monitor = Monitor::default();
    let engine = Engine::new(inputs, plan, &monitor, threads, false)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_chunk(chunk)
        .with_reading_past_cache(ahead.is_some(), ahead.flatten());
    let collect = |_: &mut (), seen: &mut Vec<u32>, c: Chunk<'_>| {
        seen.extend(c.base.unwrap_or_default().iter().map(|x| x.to_bits()));
        c.models.iter().for_each(|m| seen.extend(m.iter().map(|x| x.to_bits())));
        Ok(())
    };
    let (jobs, _) = engine
        .pass(READ_ALL, &engine.all_jobs(), || (), collect)
        .unwrap_or_else(|e| panic!("{e}"));
    jobs
}

/// Whether this file system takes `O_DIRECT` (where it does not, the read-ahead is never used).
fn takes_direct(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .is_ok()
}

#[test]
fn reading_ahead_gives_every_job_the_values_a_plain_read_gives() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (dtype, shard) in [
        (FloatType::F32, u64::MAX),
        (FloatType::BF16, 9000),
        (FloatType::F16, 20_000),
    ] {
        let paths = model_set(&dir.path().join(dtype.name()), dtype, shard);
        let inputs = open(&paths);
        let plan = MergePlan::build(&inputs, true, None).unwrap_or_else(|e| panic!("{e}"));
        let monitor = Monitor::default();
        let engine = Engine::new(&inputs, &plan, &monitor, 1, false).unwrap_or_else(|e| panic!("{e}"));
        let direct = Prefetch::open(&engine).is_some();
        assert_eq!(
            direct,
            takes_direct(&inputs.models[0].shards[0].path),
            "{}",
            dtype.name()
        );
        for (threads, chunk) in [(1, 1000), (2, 7), (3, 4096), (2, 100_000)] {
            let plain = values(&inputs, &plan, threads, chunk, None);
            // a ring of eight jobs, and of two (the memory would hold less)
            for memory in [None, Some(1)] {
                let ahead = values(&inputs, &plan, threads, chunk, Some(memory));
                assert_eq!(plain.len(), ahead.len());
                assert!(
                    plain == ahead,
                    "{} threads {threads} chunk {chunk} {memory:?}",
                    dtype.name()
                );
            }
        }
    }
}

/// An engine on two threads reading ahead, in chunks of 50.
fn reading_ahead<'a>(inputs: &'a Inputs, plan: &'a MergePlan, monitor: &'a Monitor) -> Engine<'a> {
    Engine::new(inputs, plan, monitor, 2, false)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_chunk(50)
        .with_reading_past_cache(true, None)
}

#[test]
fn a_failing_pass_ends_with_its_error_while_reading_ahead() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let paths = model_set(dir.path(), FloatType::F32, u64::MAX);
    let inputs = open(&paths);
    let plan = MergePlan::build(&inputs, true, None).unwrap_or_else(|e| panic!("{e}"));
    let monitor = Monitor::default();
    let engine = reading_ahead(&inputs, &plan, &monitor);
    let jobs = engine.all_jobs();
    let failing = |_: &mut (), _: &mut (), c: Chunk<'_>| match c.job.start {
        500 => Err(MergeError::Internal("the kernel failed".into())),
        _ => Ok(()),
    };
    let error = engine
        .pass(READ_ALL, &jobs, || (), failing)
        .err()
        .map(|e| e.to_string());
    assert!(error.is_some_and(|e| e.contains("the kernel failed")));

    let model = paths[2].join("model.safetensors");
    let length = std::fs::metadata(&model)
        .map(|m| m.len())
        .unwrap_or_else(|e| panic!("{e}"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap_or_else(|e| panic!("{e}"));
    file.set_len(length - 9000).unwrap_or_else(|e| panic!("{e}"));
    let error = engine.pass(READ_ALL, &jobs, || (), |_, _: &mut (), _| Ok(())).err();
    let message = error.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("was it truncated") && message.contains("model_02"),
        "{message}"
    );
}

#[test]
fn a_kernel_that_panics_while_reading_ahead_unwinds_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let paths = model_set(dir.path(), FloatType::F32, u64::MAX);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let inputs = open(&paths);
        let plan = MergePlan::build(&inputs, true, None).unwrap_or_else(|e| panic!("{e}"));
        let monitor = Monitor::default();
        let engine = reading_ahead(&inputs, &plan, &monitor);
        let jobs = engine.all_jobs();
        let panicking = |_: &mut (), _: &mut (), c: Chunk<'_>| match c.job.start {
            500 => panic!("a bug in a kernel"),
            _ => Ok(()),
        };
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.pass(READ_ALL, &jobs, || (), panicking)
        }));
        let _ = sender.send(unwound.is_err());
    });
    let outcome = receiver.recv_timeout(std::time::Duration::from_secs(60));
    assert_eq!(outcome, Ok(true), "the pass should unwind, not hang");
}
