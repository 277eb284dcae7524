//! DELLA (Deep et al., 2024), mergekit's `della`: MagPrune drops each task-vector entry at random, small
//! ones more often (keep probability density ± epsilon by rank), rescales, then TIES' sign consensus.

use crate::error::{MergeError, Result};
use crate::method::gta::{DENSITY, Gta, LAMBDA, WEIGHTS, normalize, rescale};
use crate::method::sparsify::Sparsifier;
use crate::method::{MergeMethod, MethodDef, ParamDef, ParamDefault, ParamKind, Params};

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "della",
    summary: "drop entries at random, more of the small ones, then sign consensus",
    paper: "https://arxiv.org/abs/2406.11617",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[WEIGHTS, DENSITY, EPSILON, LAMBDA, normalize(true), rescale(true), SEED],
    build,
};

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    let sparsifier = della_sparsifier("della", p)?;
    Ok(Box::new(Gta::from_params("della", p, sparsifier, true)?))
}

/// ε: the spread of keep probabilities around the density.
pub(crate) const EPSILON: ParamDef = ParamDef {
    name: "epsilon",
    kind: ParamKind::F32 { min: 0.0, max: 1.0 },
    default: ParamDefault::Number(0.15),
    help: "spread of DELLA's keep probability around the density (density ± epsilon)",
};

/// The seed of the random drop.
pub(crate) const SEED: ParamDef = ParamDef {
    name: "seed",
    kind: ParamKind::U64,
    default: ParamDefault::Integer(0),
    help: "seed of the random drop (mergekit draws from torch's generator; masks differ)",
};

/// MagPrune from the parameters; density ± epsilon must lie in (0, 1) unless nothing is dropped.
pub(crate) fn della_sparsifier(method: &str, p: &Params) -> Result<Sparsifier> {
    let (density, epsilon) = (p.f64("density")?, p.f64("epsilon")?);
    if density < 1.0 && density > 0.0 && (density + epsilon >= 1.0 || density - epsilon <= 0.0) {
        return Err(MergeError::arg(format!(
            "{method}: density ± epsilon must lie in (0, 1) (got density {density}, epsilon {epsilon})"
        )));
    }
    Ok(Sparsifier::DellaMagprune {
        density,
        epsilon,
        seed: p.u64("seed")?,
    })
}
