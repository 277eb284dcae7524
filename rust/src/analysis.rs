//! Task-vector analysis: norms, pairwise dot products and cosine similarity over all float parameters,
//! accumulated in float64 per chunk and summed in chunk order (thread-count independent), as FusionBench's
//! `task_vector_cos_similarity`.

use std::path::PathBuf;

use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::engine::{Engine, PassSpec};
use crate::error::{MergeError, Result};
use crate::monitor::Monitor;
use crate::plan::{Inputs, MergePlan};

/// The cosine-similarity matrix of the task vectors.
#[derive(Debug, Clone, Serialize)]
pub struct CosineReport {
    /// Model display names, in order.
    pub names: Vec<String>,
    /// Model paths, in order.
    pub paths: Vec<PathBuf>,
    /// cos(τᵢ, τⱼ).
    pub matrix: Vec<Vec<Option<f64>>>,
    /// ‖τᵢ‖₂.
    pub norms: Vec<f64>,
    /// Parameters compared.
    pub parameters: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Cosine similarity between the task vectors of `models` relative to `base`.
pub fn cosine_similarity(
    base: &std::path::Path,
    models: &[PathBuf],
    threads: usize,
    monitor: &Monitor,
) -> Result<CosineReport> {
    let started = std::time::Instant::now();
    if models.len() < 2 {
        return Err(MergeError::arg(format!(
            "cosine similarity needs at least 2 fine-tuned models, got {}",
            models.len()
        )));
    }
    let inputs = Inputs {
        base: Some(Checkpoint::open(base)?),
        models: models
            .iter()
            .map(|p| Checkpoint::open_input(p, Some(base)))
            .collect::<Result<_>>()?,
        extra: Vec::new(),
    };
    let plan = MergePlan::build(&inputs, true, None)?;
    let engine = Engine::new(&inputs, &plan, monitor, threads, false)?;
    let undefined = |e: MergeError| match e {
        MergeError::NonFinite {
            model, tensor, count, ..
        } => MergeError::NonFinite {
            model,
            tensor,
            count,
            remedy: ", so the cosine similarity is undefined",
        },
        e => e,
    };
    let n = models.len();
    let pairs: Vec<(usize, usize)> = (0..n).flat_map(|a| (a..n).map(move |b| (a, b))).collect();
    let jobs = engine.all_jobs();
    let spec = PassSpec {
        phase: "cosine similarity",
        prefetch: 0,
        read_base: true,
        writer: None,
    };
    let (partials, _) = engine
        .pass(
            spec,
            &jobs,
            || (),
            |_, sums: &mut Vec<f64>, mut chunk| {
                chunk.make_task_vectors()?;
                sums.resize(pairs.len(), 0.0);
                for (sum, &(a, b)) in sums.iter_mut().zip(&pairs) {
                    *sum += dot(chunk.models[a], chunk.models[b]);
                }
                Ok(())
            },
        )
        .map_err(undefined)?;
    let mut gram = vec![vec![0.0f64; n]; n];
    for partial in &partials {
        for (&(a, b), v) in pairs.iter().zip(partial) {
            gram[a][b] += v;
        }
    }
    let norms: Vec<f64> = (0..n).map(|i| gram[i][i].sqrt()).collect();
    // A zero task vector has no direction: its similarities are undefined (null), not 0.
    let matrix = (0..n)
        .map(|a| {
            (0..n)
                .map(|b| {
                    let defined = norms[a] > 0.0 && norms[b] > 0.0;
                    defined.then(|| gram[a.min(b)][a.max(b)] / (norms[a] * norms[b]).max(1e-8))
                })
                .collect()
        })
        .collect();
    Ok(CosineReport {
        names: inputs.models.iter().map(|m| m.name.clone()).collect(),
        paths: models.to_vec(),
        matrix,
        norms,
        parameters: plan.merged_params(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}
