//! Model Breadcrumbs with TIES' sign consensus, mergekit's `breadcrumbs_ties`: breadcrumbs' sparsification,
//! then only entries agreeing with the sign of the weighted sum are added.

use crate::error::Result;
use crate::method::gta::{Consensus, DENSITY, GAMMA, Gta, LAMBDA, Thinning, WEIGHTS, normalize, rescale};
use crate::method::precision::COMPUTE;
use crate::method::{MergeMethod, MethodDef, Params};

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
        "breadcrumbs_ties",
        p,
        Thinning::MagnitudeOutliers,
        Some(Consensus::Sum),
    )?))
}
