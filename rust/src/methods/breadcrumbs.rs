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
    params: &[
        WEIGHTS,
        DENSITY,
        ParamDef {
            name: "gamma",
            kind: ParamKind::F64 { min: 0.0, max: 1.0 },
            default: ParamDefault::Number(0.01),
            help: "share of the largest-magnitude entries dropped as outliers",
        },
        LAMBDA,
        normalize(false),
        rescale(false),
    ],
    build,
};

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    let sparsifier = Sparsifier::MagnitudeOutliers {
        density: p.f64("density")?,
        gamma: p.f64("gamma")?,
    };
    Ok(Box::new(Gta::from_params("breadcrumbs", p, sparsifier, false)?))
}
