//! Model Breadcrumbs (Davari & Belilovsky, 2024), mergekit's `breadcrumbs`: generalized task arithmetic
//! on task vectors that lose their largest outliers (the `gamma` share) and their smallest entries.

use crate::error::Result;
use crate::method::gta::{DENSITY, Gta, LAMBDA, WEIGHTS, normalize, rescale};
use crate::method::sparsify::Sparsifier;
use crate::method::{MergeMethod, MethodDef, ParamDef, ParamDefault, ParamKind, Params};

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "breadcrumbs",
    summary: "drop each task vector's largest outliers and smallest entries, then add",
    paper: "https://arxiv.org/abs/2312.06795",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[WEIGHTS, DENSITY, GAMMA, LAMBDA, normalize(false), rescale(false)],
    build,
};

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Gta::from_params(
        "breadcrumbs",
        p,
        breadcrumbs_sparsifier(p)?,
        false,
    )?))
}

/// γ: the share of largest-magnitude entries dropped (shared with breadcrumbs_ties).
pub(crate) const GAMMA: ParamDef = ParamDef {
    name: "gamma",
    kind: ParamKind::F64 { min: 0.0, max: 1.0 },
    default: ParamDefault::Number(0.01),
    help: "share of the largest-magnitude entries dropped as outliers",
};

/// Magnitude-with-outliers sparsification from `density` and `gamma`.
pub(crate) fn breadcrumbs_sparsifier(p: &Params) -> Result<Sparsifier> {
    Ok(Sparsifier::MagnitudeOutliers {
        density: p.f64("density")?,
        gamma: p.f64("gamma")?,
    })
}
