//! DARE (Yu et al., 2023): drop each task-vector entry with probability p and rescale the survivors by
//! 1/(1−p), then task arithmetic. The mask is a pure function of (seed, tensor name, task, element index), so
//! it does not depend on chunking or threads. DARE-TIES reuses the mask ([`DareOptions`]).

use crate::engine::{Chunk, Engine};
use crate::error::{MergeError, Result};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::method::{add_scaled_to_base, sum_into};
use crate::methods::task_arithmetic::SCALING_FACTOR;
use crate::rng;
use crate::writer::Writer;

/// The drop parameters, shared with DARE-TIES.
pub(crate) const DROP_PARAMS: [ParamDef; 3] = [
    ParamDef {
        name: "drop_rate",
        kind: ParamKind::F64 { min: 0.0, max: 1.0 },
        default: ParamDefault::Number(0.5),
        help: "probability of dropping each task-vector entry",
    },
    ParamDef {
        name: "seed",
        kind: ParamKind::U64,
        default: ParamDefault::Integer(0),
        help: "seed of the drop mask",
    },
    ParamDef {
        name: "rescale",
        kind: ParamKind::Bool,
        default: ParamDefault::Flag(true),
        help: "rescale kept entries by 1/(1 − drop rate)",
    },
];

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "dare",
    summary: "random drop and rescale of task vectors, then task arithmetic",
    paper: "https://arxiv.org/abs/2311.03099",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[SCALING_FACTOR, DROP_PARAMS[0], DROP_PARAMS[1], DROP_PARAMS[2]],
    build,
};

/// Drop options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DareOptions {
    /// Probability p of dropping an entry.
    drop_rate: f64,
    /// Seed of the mask.
    seed: u64,
    /// Rescale survivors by 1/(1−p).
    rescale: bool,
}

#[derive(Debug)]
struct Dare {
    scaling_factor: f32,
    dare: DareOptions,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Dare {
        scaling_factor: p.f32("scaling_factor")?,
        dare: DareOptions::from_params(p)?,
    }))
}

impl MergeMethod for Dare {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.elementwise(true, writer, &|c| {
            c.make_task_vectors()?;
            self.dare.apply(c);
            sum_into(c.out, c.models);
            add_scaled_to_base(c.out, c.base, self.scaling_factor);
            Ok(())
        })
    }
}

impl DareOptions {
    /// The drop options from checked parameters: p in [0, 1), or [0, 1] without rescaling.
    pub(crate) fn from_params(p: &Params) -> Result<Self> {
        let options = DareOptions {
            drop_rate: p.f64("drop_rate")?,
            seed: p.u64("seed")?,
            rescale: p.bool("rescale")?,
        };
        if options.drop_rate == 1.0 && options.rescale {
            return Err(MergeError::arg(
                "the drop rate must be in [0, 1) when rescaling (got 1)",
            ));
        }
        Ok(options)
    }

    /// Apply the mask to the task vectors in `chunk.models` (already τᵢ).
    pub(crate) fn apply(&self, chunk: &mut Chunk<'_>) {
        let scale = if self.rescale {
            (1.0 / (1.0 - self.drop_rate)) as f32
        } else {
            1.0
        };
        let start = chunk.job.start as u64;
        for (task, tau) in chunk.models.iter_mut().enumerate() {
            let stream = rng::stream(self.seed, &chunk.tensor.name, task as u64);
            for (j, x) in tau.iter_mut().enumerate() {
                *x = if rng::uniform(stream, start + j as u64) < self.drop_rate {
                    0.0
                } else {
                    *x * scale
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use crate::method::Method;

    fn build(params: serde_json::Value) -> crate::error::Result<Method> {
        let map: Map<String, serde_json::Value> = params.as_object().cloned().unwrap_or_default();
        Method::new("dare", &map)
    }

    #[test]
    fn drop_rate_one_only_without_rescaling() {
        assert!(build(json!({"drop_rate": 1.0})).is_err());
        assert!(build(json!({"drop_rate": 1.0, "rescale": false})).is_ok());
        assert!(build(json!({"drop_rate": 1.5})).is_err());
        let p = build(json!({"seed": 3})).map(|m| m.parameters().to_string());
        assert_eq!(
            p.ok().as_deref(),
            Some(r#"{"scaling_factor":0.3,"drop_rate":0.5,"seed":3,"rescale":true}"#)
        );
    }
}
