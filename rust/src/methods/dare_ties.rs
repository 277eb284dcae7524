//! DARE-TIES (Yu et al., 2023): DARE's random drop and rescale of each task vector, then TIES.

use crate::error::Result;
use crate::method::{MergeMethod, MethodDef, Params};
use crate::methods::dare::{DROP_PARAMS, DareOptions};
use crate::methods::ties::{TIES_PARAMS, TiesOptions};

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "dare_ties",
    summary: "DARE on the task vectors, then TIES",
    paper: "https://arxiv.org/abs/2311.03099",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[
        TIES_PARAMS[0],
        TIES_PARAMS[1],
        TIES_PARAMS[2],
        TIES_PARAMS[3],
        DROP_PARAMS[0],
        DROP_PARAMS[1],
        DROP_PARAMS[2],
    ],
    build,
};

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    let dare = DareOptions::from_params(p)?;
    Ok(Box::new(TiesOptions::from_params(p, Some(dare))?))
}
