//! DELLA without sign consensus, mergekit's `della_linear`: MagPrune's rank-weighted random drop, then a
//! weighted sum.

use crate::error::Result;
use crate::method::gta::{DENSITY, EPSILON, Gta, LAMBDA, SEED, Thinning, WEIGHTS, normalize, rescale};
use crate::method::precision::COMPUTE;
use crate::method::{MergeMethod, MethodDef, Params};

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "della_linear",
    summary: "DELLA's rank-weighted random drop, then a weighted sum",
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
        normalize(false),
        rescale(true),
        SEED,
        COMPUTE,
    ],
    build,
};

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Gta::from_params(
        "della_linear",
        p,
        Thinning::DellaMagprune,
        None,
    )?))
}
