//! NearSwap, mergekit's `nearswap`: per element, move from the first model a toward the second b by
//! w = clamp(t / max(|a − b|, 10⁻⁶), 0, 1), so elements that nearly agree take b and distant ones keep a:
//! w·b + (1 − w)·a, in mergekit's order of operations (each rounded to `compute`, as torch rounds them in a
//! mergekit config's `dtype:`).

use crate::engine::{Chunk, Engine};
use crate::error::Result;
use crate::method::precision::{COMPUTE, Precision};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "nearswap",
    summary: "per element, take the second model where it is near the first (|a − b| ≲ t), else keep the first",
    paper: "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
    needs_base: false,
    min_models: 2,
    max_models: Some(2),
    extra_inputs: None,
    params: &[
        ParamDef {
            name: "t",
            kind: ParamKind::F32 {
                min: 0.0,
                max: f32::MAX as f64,
            },
            default: ParamDefault::Required,
            help: "similarity threshold: an element moves to the second model in full where |a − b| ≤ t",
        },
        COMPUTE,
    ],
    build,
};

#[derive(Debug)]
struct NearSwap {
    t: f32,
    precision: Precision,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(NearSwap {
        t: p.f32("t")?,
        precision: Precision::from_params(p)?,
    }))
}

impl MergeMethod for NearSwap {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.elementwise(false, writer, &|c| {
            swap(c, self.t, self.precision);
            Ok(())
        })
    }
}

fn swap(chunk: &mut Chunk<'_>, t: f32, precision: Precision) {
    let (a, b) = (&chunk.models[0], &chunk.models[1]);
    for ((o, &a), &b) in chunk.out.iter_mut().zip(a.iter()).zip(b.iter()) {
        *o = near(a, b, t, precision);
    }
}

/// w·b + (1 − w)·a with w = clamp(t / max(|a − b|, 1e-6), 0, 1), each step rounded to `precision`; t / x is
/// t · (1 / x), the reciprocal rounded first, as torch's `__rtruediv__` computes it.
fn near(a: f32, b: f32, t: f32, precision: Precision) -> f32 {
    let r = |x: f32| precision.round(x);
    let (a, b) = (r(a), r(b));
    let gap = r(r((a - b).abs()).max(1e-6));
    let weight = r(t * r(1.0 / gap)).clamp(0.0, 1.0);
    r(r(weight * b) + r(r(1.0 - weight) * a))
}

#[cfg(test)]
mod tests {
    use crate::method::precision::Precision;

    fn near(a: f32, b: f32, t: f32) -> f32 {
        super::near(a, b, t, Precision::F32)
    }

    #[test]
    fn near_elements_take_the_second_model_and_far_ones_keep_the_first() {
        assert_eq!(near(0.0, 0.05, 0.1), 0.05, "|a − b| ≤ t: all the way to b");
        assert!((near(0.0, 0.2, 0.1) - 0.1).abs() < 1e-7, "weight 0.5 of 0.2");
        assert!((near(0.0, 1.0, 0.1) - 0.1).abs() < 1e-7, "weight 0.1 of 1.0");
        assert_eq!(near(1.0, 1.0, 0.1), 1.0, "equal elements stay");
        assert_eq!(near(3.0, 5.0, 0.0), 3.0, "t = 0 keeps the first model");
    }
}
