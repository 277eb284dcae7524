//! DELLA (Deep et al., 2024), mergekit's `della`: MagPrune drops each task-vector entry at random, small
//! ones more often (keep probability density ± epsilon by rank), rescales, then TIES' sign consensus.

use crate::error::Result;
use crate::method::gta::{Consensus, DENSITY, EPSILON, Gta, LAMBDA, SEED, Thinning, WEIGHTS, normalize, rescale};
use crate::method::precision::COMPUTE;
use crate::method::{MergeMethod, MethodDef, Params};

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "della",
    summary: "drop entries at random, more of the small ones, then sign consensus",
    paper: "https://arxiv.org/abs/2406.11617",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[
        WEIGHTS,
        DENSITY,
        EPSILON,
        LAMBDA,
        normalize(true),
        rescale(true),
        SEED,
        COMPUTE,
    ],
    build,
};

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Gta::from_params(
        "della",
        p,
        Thinning::DellaMagprune,
        Some(Consensus::Sum),
    )?))
}
