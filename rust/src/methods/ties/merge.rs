//! The TIES merge passes. The fallback sign is a whole-model quantity known only after the merge pass, so
//! elements that need it (elected sign 0 but some non-zero entry) are recorded with their values for either
//! sign, encoded as the output stores them (12 bytes each in float32, 8 in 16-bit types), and patched at the
//! end. Coarse types make them common (exact cancellations: 2.0 million in 8 × ViT-L/14 bfloat16). If there
//! are too many to keep, or the majority is itself 0, the merge pass runs again with the sign known.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::aggregate::{aggregate, aggregate_into, sign};
use super::select::{kth_smallest_abs, threshold_rank};
use super::{TiesOptions, Trim, fused};
use crate::dtype::FloatType;
use crate::engine::{Chunk, Engine, PassSpec, return_large_frees};
use crate::error::{MergeError, Result};
use crate::method::{MethodStats, add_scaled_to_base, sum_into};
use crate::plan::{PlanTensor, TensorKind};
use crate::simd::dispatched;
use crate::writer::Writer;

/// Patches kept in memory before falling back to a second merge pass (8–12 bytes each: at most 36 MiB).
const PATCH_BUDGET: usize = 3 << 20;

/// The elements of one job whose values depend on the whole-model majority sign.
#[derive(Default)]
pub(super) struct Patches {
    tensor: usize,
    elements: Vec<u32>,
    /// Per element, its merged value for majority sign +1 then −1, as the output stores them.
    values: Vec<u8>,
}

impl Patches {
    /// Whether there is nothing to patch.
    pub(super) fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Order the patches by element (apply_patches rewrites the span from the first to the last).
    pub(super) fn sort(&mut self) {
        let width = self.values.len() / self.elements.len().max(1);
        let mut order: Vec<usize> = (0..self.elements.len()).collect();
        order.sort_unstable_by_key(|&i| self.elements[i]);
        self.elements = order.iter().map(|&i| self.elements[i]).collect();
        self.values = order
            .iter()
            .flat_map(|&i| &self.values[i * width..(i + 1) * width])
            .copied()
            .collect();
    }
}

/// One merge pass's settings and its patch budget.
pub(super) struct Pass<'a> {
    pub(super) options: &'a TiesOptions,
    majority: Option<f32>,
    budget: AtomicUsize,
    overflow: AtomicBool,
}

impl Pass<'_> {
    /// Start over: the full budget, no overflow (the patches recorded so far are dropped).
    pub(super) fn reset(&self) {
        self.budget.store(PATCH_BUDGET, Ordering::Relaxed);
        self.overflow.store(false, Ordering::Relaxed);
    }
}

/// Run TIES over every merged tensor of the engine's plan.
pub(super) fn run(options: &TiesOptions, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
    // The selection's counters (MiBs each) go back to the system when freed, before patches accumulate.
    return_large_frees();
    let merged: Vec<usize> = (0..engine.plan.tensors.len())
        .filter(|&t| engine.plan.tensors[t].is_merged())
        .collect();
    let groups: Vec<Vec<usize>> = match options.trim {
        Trim::Global => vec![merged],
        Trim::PerTensor => merged.into_iter().map(|t| vec![t]).collect(),
    };
    let tasks = engine.inputs.models.len();
    let ranks: Vec<Vec<u64>> = groups
        .iter()
        .map(|group| {
            let d: u64 = group.iter().map(|&t| engine.plan.tensors[t].numel as u64).sum();
            vec![threshold_rank(d, options.threshold); tasks]
        })
        .collect();
    let first = Pass {
        options,
        majority: None,
        budget: AtomicUsize::new(PATCH_BUDGET),
        overflow: AtomicBool::new(false),
    };
    let fused = match options.trim {
        Trim::Global if fused::pays(engine) => fused::merge(&first, engine, writer, &groups[0], &ranks[0])?,
        _ => None,
    };
    let (mut thresholds, sign_sum, patches) = match fused {
        Some((kth, sign_sum, patches)) => (vec![kth], sign_sum, patches),
        None => {
            let mut thresholds = Vec::with_capacity(groups.len());
            for (group, k) in groups.iter().zip(&ranks) {
                let jobs = engine.jobs(group.iter().copied());
                thresholds.push(kth_smallest_abs(engine, &jobs, k, |c| options.prepare(c))?);
            }
            let (sign_sum, patches) = merge_groups(&first, engine, writer, &groups, &thresholds)?;
            (thresholds, sign_sum, patches)
        }
    };
    let majority = sign_sum.signum() as f32;
    if first.overflow.load(Ordering::Relaxed) || (majority == 0.0 && !patches.is_empty()) {
        let again = Pass {
            majority: Some(majority),
            ..first
        };
        engine.restart_counts();
        merge_groups(&again, engine, writer, &groups, &thresholds)?;
    } else {
        apply_patches(engine, writer, &patches, majority)?;
    }
    Ok(MethodStats {
        ties_thresholds: (options.trim == Trim::Global)
            .then(|| thresholds.swap_remove(0).into_iter().map(f64::from).collect()),
        ties_majority_sign: Some(majority as i8),
    })
}

/// Merge every group with its thresholds; returns Σ sign(elected) and the patches.
pub(super) fn merge_groups(
    pass: &Pass<'_>,
    engine: &Engine<'_>,
    writer: &Writer,
    groups: &[Vec<usize>],
    kth: &[Vec<f32>],
) -> Result<(i64, Vec<Patches>)> {
    let mut sign_sum = 0i64;
    let mut patches = Vec::new();
    for (group, kth) in groups.iter().zip(kth) {
        let jobs = engine.jobs(group.iter().copied());
        let spec = PassSpec {
            phase: "merge",
            prefetch: 0,
            read_base: true,
            writer: Some(writer),
        };
        let (results, _) = engine.pass(
            spec,
            &jobs,
            || (),
            |_, result: &mut (i64, Patches), mut chunk| {
                result.0 += merge_chunk(pass, &mut chunk, kth, &mut result.1)?;
                Ok(())
            },
        )?;
        for (s, p) in results {
            sign_sum += s;
            if !p.is_empty() {
                patches.push(p);
            }
        }
    }
    Ok((sign_sum, patches))
}

/// Merge one block; returns Σ sign(elected) and adds the patches it needs.
fn merge_chunk(pass: &Pass<'_>, chunk: &mut Chunk<'_>, kth: &[f32], patches: &mut Patches) -> Result<i64> {
    pass.options.prepare(chunk)?;
    merge_prepared(pass, chunk, kth, None, patches)
}

/// Merge one block whose task vectors are prepared; elements marked in `unsettled` get no patch (their
/// value is settled later). Loops run over each model's slice (vectorisable) and add in model order, so
/// results equal the element-by-element definition ([`element_outcome`]) exactly.
pub(super) fn merge_prepared(
    pass: &Pass<'_>,
    chunk: &mut Chunk<'_>,
    kth: &[f32],
    unsettled: Option<&[bool]>,
    patches: &mut Patches,
) -> Result<i64> {
    let options = pass.options;
    for (tau, &k) in chunk.models.iter_mut().zip(kth) {
        trim(tau, k);
    }
    let base = chunk
        .base
        .ok_or_else(|| MergeError::arg("TIES needs the pretrained model"))?;
    let mut signs = vec![0.0f32; chunk.out.len()];
    sum_into(&mut signs, chunk.models);
    let sign_sum = i64::from(elect_signs(&mut signs));
    if signs.iter().fold(false, |zero, &s| zero | (s == 0.0)) {
        resolve_zero_signs(pass, chunk, &mut signs, base, unsettled, patches);
    }
    aggregate_into(chunk.out, chunk.models, &signs, options.merge_func);
    add_scaled_to_base(chunk.out, Some(base), options.scaling_factor);
    Ok(sign_sum)
}

dispatched! {
    /// Replace each sum by its sign; returns Σ sign. Summed as i32 (a block is at most 2^24 elements), which
    /// vectorises: an f32 sum runs element by element and an i64 conversion does not vectorise.
    fn elect_signs(signs: &mut [f32]) -> i32 {
        let mut sign_sum = 0i32;
        for s in signs.iter_mut() {
            *s = sign(*s);
            sign_sum += *s as i32;
        }
        sign_sum
    }
}

dispatched! {
    /// Zero the entries with |τ| < k (to +0.0, branch-free: no masked stores).
    fn trim(tau: &mut [f32], k: f32) {
        for x in tau.iter_mut() {
            let keep = if x.abs() >= k { u32::MAX } else { 0 };
            *x = f32::from_bits(x.to_bits() & keep);
        }
    }
}

/// Give elements whose elected sign is 0 the majority sign; while it is unknown, use +1 and record the
/// results under either sign of elements where the choice matters (some non-zero entry).
fn resolve_zero_signs(
    pass: &Pass<'_>,
    chunk: &Chunk<'_>,
    signs: &mut [f32],
    base: &[f32],
    unsettled: Option<&[bool]>,
    patches: &mut Patches,
) {
    // With the majority known, every zero sign simply takes it.
    let open = match pass.majority {
        None => open_elements(chunk.models, signs),
        Some(_) => None,
    };
    if let Some(open) = open {
        let mut column = vec![0.0f32; chunk.models.len()];
        let settled = |j: usize| unsettled.is_none_or(|u| !u[j]);
        for j in set_positions(&open).filter(|&j| settled(j)) {
            for (c, tau) in column.iter_mut().zip(chunk.models.iter()) {
                *c = tau[j];
            }
            let func = pass.options.merge_func;
            let value = |s: f32| base[j] + pass.options.scaling_factor * aggregate(&column, s, func);
            let element = (chunk.job.tensor, chunk.job.start + j);
            record(
                pass,
                patches,
                element,
                output_type(chunk.tensor),
                [value(1.0), value(-1.0)],
            );
        }
    }
    let fallback = pass.majority.unwrap_or(1.0);
    for s in signs.iter_mut() {
        *s = if *s == 0.0 { fallback } else { *s };
    }
}

dispatched! {
    /// Per element, 1 where the elected sign is 0 but some entry is not, so that the value depends on the
    /// majority sign; `None` when no element is (most blocks). Found vectorised, not element by element.
    fn open_elements(models: &[&mut [f32]], signs: &[f32]) -> Option<Vec<u32>> {
        let mut open = vec![0u32; signs.len()];
        for tau in models {
            for (o, t) in open.iter_mut().zip(tau.iter()) {
                *o |= u32::from(*t != 0.0);
            }
        }
        for (o, s) in open.iter_mut().zip(signs) {
            *o &= u32::from(*s == 0.0);
        }
        (open.iter().fold(0, |any, &o| any | o) != 0).then_some(open)
    }
}

/// The positions of the non-zero entries of `flags`, found 32 at a time through a bit mask (vectorised): in
/// 16-bit types most blocks have a few.
fn set_positions(flags: &[u32]) -> impl Iterator<Item = usize> + '_ {
    flags.chunks(32).enumerate().flat_map(|(g, group)| {
        let mut bits = group
            .iter()
            .enumerate()
            .fold(0u32, |m, (i, &f)| m | (u32::from(f != 0) << i));
        std::iter::from_fn(move || {
            let i = (bits != 0).then(|| bits.trailing_zeros() as usize)?;
            bits &= bits - 1;
            Some(g * 32 + i)
        })
    })
}

/// The type a merged tensor is stored in.
pub(super) fn output_type(tensor: &PlanTensor) -> FloatType {
    match &tensor.kind {
        TensorKind::Merge { out, .. } => *out,
        TensorKind::Copy { .. } | TensorKind::Elsewhere { .. } => FloatType::F32,
    }
}

/// Keep a patch of element `(tensor, element)`, stored as `ty`, if the budget allows (and its index fits 32
/// bits); otherwise flag the overflow.
pub(super) fn record(
    pass: &Pass<'_>,
    patches: &mut Patches,
    (tensor, element): (usize, usize),
    ty: FloatType,
    values: [f32; 2],
) {
    let granted = pass
        .budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
        .is_ok();
    match u32::try_from(element) {
        Ok(element) if granted => {
            patches.tensor = tensor;
            patches.elements.push(element);
            let at = patches.values.len();
            patches.values.resize(at + 2 * ty.size(), 0);
            ty.encode_into(&values, &mut patches.values[at..]);
        }
        _ => pass.overflow.store(true, Ordering::Relaxed),
    }
}

/// Write the value each patched element takes under the (non-zero) majority sign: each job's patched span is
/// read back, patched and written once. (Runs of nearby patches instead of whole spans read less, but in 4 KiB
/// pieces at random: in a 256 MB cgroup, one-pass TIES on 8 × ViT-L/14 took 20.7 s against 18.9 s.)
fn apply_patches(engine: &Engine<'_>, writer: &Writer, patches: &[Patches], majority: f32) -> Result<()> {
    let pick = usize::from(majority < 0.0);
    let mut span = Vec::new();
    for p in patches {
        let (Some(&first), Some(&last)) = (p.elements.first(), p.elements.last()) else {
            continue;
        };
        let size = output_type(&engine.plan.tensors[p.tensor]).size();
        span.resize((last - first) as usize * size + size, 0);
        writer.read_at(p.tensor, u64::from(first) * size as u64, &mut span)?;
        for (&element, values) in p.elements.iter().zip(p.values.chunks_exact(2 * size)) {
            let at = (element - first) as usize * size;
            span[at..at + size].copy_from_slice(&values[pick * size..(pick + 1) * size]);
        }
        writer.write_at(p.tensor, u64::from(first) * size as u64, &span)?;
    }
    Ok(())
}
