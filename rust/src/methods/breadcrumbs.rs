//! Model Breadcrumbs (Davari & Belilovsky, 2024), mergekit's `breadcrumbs`: generalized task arithmetic
//! on task vectors that lose their largest outliers (the `gamma` share) and their smallest entries.

use crate::error::Result;
use crate::method::gta::{DENSITY, GAMMA, Gta, LAMBDA, Thinning, WEIGHTS, normalize, rescale};
use crate::method::precision::COMPUTE;
use crate::method::{MergeMethod, MethodDef, Params};

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "breadcrumbs",
    summary: "drop each task vector's largest outliers and smallest entries, then add",
    paper: "https://arxiv.org/abs/2312.06795",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[
        WEIGHTS,
        DENSITY,
        GAMMA,
        LAMBDA,
        normalize(false),
        rescale(false),
        COMPUTE,
    ],
    build,
};

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Gta::from_params(
        "breadcrumbs",
        p,
        Thinning::MagnitudeOutliers,
        None,
    )?))
}
