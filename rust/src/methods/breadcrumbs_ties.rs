//! Model Breadcrumbs with TIES' sign consensus, mergekit's `breadcrumbs_ties`: breadcrumbs' sparsification,
//! then only entries agreeing with the sign of the weighted sum are added.

use crate::error::Result;
use crate::method::gta::{DENSITY, Gta, LAMBDA, WEIGHTS, normalize, rescale};
use crate::method::sparsify::Sparsifier;
use crate::method::{MergeMethod, MethodDef, ParamDef, ParamDefault, ParamKind, Params};

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "breadcrumbs_ties",
    summary: "breadcrumbs' sparsification, then TIES sign consensus",
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
    Ok(Box::new(Gta::from_params("breadcrumbs_ties", p, sparsifier, true)?))
}
