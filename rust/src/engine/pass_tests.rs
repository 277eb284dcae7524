//! Passes: every element once whatever the chunk and thread count, and cancellation.

use super::*;
use crate::checkpoint::Checkpoint;
use crate::test_files::write_checkpoint;

/// Two models of one 10-element tensor.
fn inputs(dir: &std::path::Path) -> Inputs {
    let a: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..10).map(|i| 100.0 + i as f32).collect();
    let open = |name: &str, values: &[f32]| {
        let path = dir.join(name);
        write_checkpoint(&path, &[("w", values)]);
        Checkpoint::open(&path).unwrap_or_else(|e| panic!("{e}"))
    };
    Inputs {
        base: None,
        models: vec![open("a.safetensors", &a), open("b.safetensors", &b)],
        extra: Vec::new(),
    }
}

/// A pass that reads the models and writes nothing.
const READ_MODELS: PassSpec<'static> = PassSpec {
    phase: "test",
    prefetch: 0,
    read_base: false,
    writer: None,
};

/// The two models in a temporary directory, and their plan.
fn setup() -> (tempfile::TempDir, Inputs, MergePlan) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let inputs = inputs(dir.path());
    let plan = MergePlan::build(&inputs, false, None).unwrap_or_else(|e| panic!("{e}"));
    (dir, inputs, plan)
}

#[test]
fn chunks_cover_every_element_once_whatever_the_chunk_and_thread_count() {
    let (_dir, inputs, plan) = setup();
    let monitor = Monitor::default();
    for (threads, chunk) in [(1, 10), (2, 3), (3, 1)] {
        let engine = Engine::new(&inputs, &plan, &monitor, threads, false)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_chunk(chunk);
        let (sums, _) = engine
            .pass(
                READ_MODELS,
                &engine.all_jobs(),
                || (),
                |_, sum: &mut f64, c: Chunk<'_>| {
                    assert_eq!(c.models[1][0] - c.models[0][0], 100.0, "models line up");
                    *sum += c.models[0].iter().map(|&x| f64::from(x)).sum::<f64>();
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sums.len(), 10usize.div_ceil(chunk));
        assert_eq!(sums.iter().sum::<f64>(), 45.0, "threads {threads} chunk {chunk}");
        assert_eq!(monitor.progress().done, monitor.progress().total);
    }
}

#[test]
fn cancelled_passes_stop_with_cancelled() {
    let (_dir, inputs, plan) = setup();
    let monitor = Monitor::default();
    monitor.cancel();
    let engine = Engine::new(&inputs, &plan, &monitor, 1, false).unwrap_or_else(|e| panic!("{e}"));
    let result = engine.pass(READ_MODELS, &engine.all_jobs(), || (), |_, _: &mut (), _| Ok(()));
    assert!(matches!(result, Err(MergeError::Cancelled)));
}
