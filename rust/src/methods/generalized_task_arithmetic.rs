//! mergekit's generalized task arithmetic with every choice open (Goddard et al., 2024): each task vector
//! δₜ = θₜ − θ₀ is thinned by a sparsifier with its own density, weighted by wₜ, optionally reduced to the
//! entries agreeing with an elected sign, normalised by the summed weights, scaled by λ and added to θ₀.
//! mergekit's `task_arithmetic`, `ties`, `dare_linear`, `dare_ties`, `breadcrumbs*` and `della*` are its
//! settings; recipes written for mergekit run through it with mergekit's semantics.

use crate::error::Result;
use crate::method::gta::{
    Consensus, DENSITY, EPSILON, GAMMA, Gta, LAMBDA, SEED, Thinning, WEIGH, WEIGHTS, Weigh, normalize, rescale,
};
use crate::method::precision::COMPUTE;
use crate::method::{MergeMethod, MethodDef, ParamDef, ParamDefault, ParamKind, Params};

/// The sparsifiers, by mergekit's names.
const SPARSIFICATIONS: &[&str] = &["none", "magnitude", "random", "magnitude_outliers", "della_magprune"];
/// The sign elections, by mergekit's names.
const CONSENSUSES: &[&str] = &["none", "sum", "count"];

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "generalized_task_arithmetic",
    summary: "mergekit's task-arithmetic engine: any sparsifier, any sign consensus, per-model density",
    paper: "https://arxiv.org/abs/2403.13257",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[
        WEIGHTS,
        ParamDef {
            name: "sparsification",
            kind: ParamKind::Choice {
                choices: SPARSIFICATIONS,
            },
            default: ParamDefault::Name("none"),
            help: "how task vectors are thinned: top-k magnitude (TIES), random (DARE), magnitude_outliers, della_magprune",
        },
        ParamDef {
            name: "consensus",
            kind: ParamKind::Choice { choices: CONSENSUSES },
            default: ParamDefault::Name("none"),
            help: "sign election: by the weighted sum (TIES), by count, or none",
        },
        DENSITY,
        GAMMA,
        EPSILON,
        LAMBDA,
        normalize(false),
        rescale(false),
        WEIGH,
        SEED,
        COMPUTE,
    ],
    build,
};

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    let how = match p.choice("sparsification")? {
        "magnitude" => Thinning::Magnitude,
        "random" => Thinning::Random,
        "magnitude_outliers" => Thinning::MagnitudeOutliers,
        "della_magprune" => Thinning::DellaMagprune,
        _ => Thinning::Keep,
    };
    let consensus = match p.choice("consensus")? {
        "sum" => Some(Consensus::Sum),
        "count" => Some(Consensus::Count),
        _ => None,
    };
    let weigh = match p.choice("weigh")? {
        "after" => Weigh::After,
        _ => Weigh::Before,
    };
    Ok(Box::new(
        Gta::from_params(METHOD.name, p, how, consensus)?.weighing(weigh)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::working_set::assert_declared_working_set_is_honest;
    use crate::method::gta::sparsifiers;
    use crate::method::sparsify::Sparsifier;
    use serde_json::json;

    fn params(given: serde_json::Value) -> Result<Params> {
        let map = given.as_object().cloned().unwrap_or_default();
        Params::resolve(METHOD.name, METHOD.params, &map)
    }

    #[test]
    fn per_model_densities_give_one_sparsifier_per_model() -> Result<()> {
        let p = params(json!({"weights": [1, 1], "density": [0.2, 0.7]}))?;
        let s = sparsifiers(METHOD.name, &p, Thinning::Magnitude)?;
        assert!(
            matches!(s[..], [Sparsifier::Magnitude { density: a }, Sparsifier::Magnitude { density: b }] if a == 0.2 && b == 0.7)
        );
        Ok(())
    }

    #[test]
    fn densities_outside_the_unit_interval_and_mismatched_lists_are_errors() -> Result<()> {
        let out_of_range = params(json!({"weights": [1], "density": 1.5}))?;
        assert!(sparsifiers(METHOD.name, &out_of_range, Thinning::Magnitude).is_err());
        let mismatched = params(json!({"weights": [1, 1, 1], "density": [0.5, 0.5], "gamma": [0.1, 0.1, 0.1]}))?;
        assert!(sparsifiers(METHOD.name, &mismatched, Thinning::MagnitudeOutliers).is_err());
        let della = params(json!({"weights": [1], "density": 0.1, "epsilon": 0.2}))?;
        assert!(sparsifiers(METHOD.name, &della, Thinning::DellaMagprune).is_err());
        Ok(())
    }

    #[test]
    fn weighing_after_the_election_needs_an_election() -> Result<()> {
        let lone = params(json!({"weights": [1, 2], "weigh": "after"}))?;
        let refused = build(&lone).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("weigh=after needs a sign consensus"), "{refused}");
        assert!(
            build(&params(
                json!({"weights": [1, 2], "weigh": "after", "consensus": "count"})
            )?)
            .is_ok()
        );
        Ok(())
    }

    #[test]
    fn the_declared_working_set_is_honest() -> Result<()> {
        let p = params(json!({"weights": [1, 1, 1], "density": 0.5}))?;
        for (how, consensus) in [(Thinning::Magnitude, Some(Consensus::Sum)), (Thinning::Random, None)] {
            assert_declared_working_set_is_honest(&Gta::from_params(METHOD.name, &p, how, consensus)?, 3);
        }
        Ok(())
    }
}
