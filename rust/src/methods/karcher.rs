//! The Karcher mean, mergekit's `karcher`: every model's tensor is split into its norm and its direction on
//! the unit sphere; the directions' Riemannian (Karcher) mean is found by gradient steps along the sphere
//! (at most `max_iter`, until the step is shorter than `tol`), and scaled by the models' mean norm. Models
//! weigh alike; a tensor whose norm is at most `tol` gives no direction. float64 inside; with `compute`
//! bfloat16 or float16, every step rounded as torch rounds it in mergekit's dtype ([`mean_rounded`]).

use crate::engine::{Engine, TensorFold};
use crate::error::Result;
use crate::method::precision::{COMPUTE, Precision};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::plan::PlanTensor;
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "karcher",
    summary: "the models' Riemannian mean direction on the sphere, scaled by their mean norm",
    paper: "https://arxiv.org/abs/2603.04972",
    needs_base: false,
    min_models: 2,
    max_models: None,
    extra_inputs: None,
    params: &[
        ParamDef {
            name: "max_iter",
            kind: ParamKind::U64,
            default: ParamDefault::Integer(10),
            help: "most gradient steps on the sphere",
        },
        ParamDef {
            name: "tol",
            kind: ParamKind::F64 { min: 0.0, max: 1.0 },
            default: ParamDefault::Number(1e-5),
            help: "stop when a step is shorter; norms and angles below it count as zero",
        },
        COMPUTE,
    ],
    build,
};

#[derive(Debug)]
struct Karcher {
    max_iter: u64,
    tol: f64,
    precision: Precision,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Karcher {
        max_iter: p.u64("max_iter")?,
        tol: p.f64("tol")?,
        precision: Precision::from_params(p)?,
    }))
}

impl MergeMethod for Karcher {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, false, writer)
    }
}

impl TensorFold for Karcher {
    /// Every model's copy of the tensor.
    type Acc = Vec<Vec<f32>>;

    fn footprint(&self, tensor: &PlanTensor, models: usize) -> usize {
        // The copies, then the mean and the step in float64.
        (4 * models + 16) * tensor.numel
    }

    fn start(&self, _: &PlanTensor, models: usize) -> Result<Self::Acc> {
        Ok(Vec::with_capacity(models))
    }

    fn add(&self, acc: &mut Self::Acc, _: &PlanTensor, _: usize, theta: &[f32], _: Option<&[f32]>) -> Result<()> {
        acc.push(theta.iter().map(|x| self.precision.round(*x)).collect());
        Ok(())
    }

    fn finish(&self, points: Self::Acc, _: &PlanTensor, _: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        match self.precision {
            Precision::F32 => mean(&points, self.max_iter, self.tol, out),
            p => mean_rounded(&points, self.max_iter, self.tol, p, out),
        }
        Ok(())
    }
}

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

/// A model's direction: its values over its norm.
struct Direction<'a> {
    values: &'a [f32],
    norm: f64,
}

impl Direction<'_> {
    fn at(&self, e: usize) -> f64 {
        f64::from(self.values[e]) / self.norm
    }

    fn dot(&self, v: &[f64]) -> f64 {
        (0..v.len()).map(|e| self.at(e) * v[e]).sum()
    }
}

/// The Karcher mean of `points` (equal weights) into `out`.
fn mean(points: &[Vec<f32>], max_iter: u64, tol: f64, out: &mut [f32]) {
    let alpha = 1.0 / points.len() as f64;
    let norms: Vec<f64> = points.iter().map(|p| norm(p.iter().map(|&x| f64::from(x)))).collect();
    let valid: Vec<usize> = (0..points.len()).filter(|&i| norms[i] > tol).collect();
    if valid.is_empty() {
        out.fill(0.0);
        return;
    }
    let directions: Vec<Direction<'_>> = valid
        .iter()
        .map(|&i| Direction {
            values: &points[i],
            norm: norms[i],
        })
        .collect();
    let weight = 1.0 / valid.len() as f64; // each direction's share of the mean
    let len = out.len();
    let mut mean: Vec<f64> = (0..len)
        .map(|e| directions.iter().map(|d| weight * d.at(e)).sum())
        .collect();
    let length = norm(mean.iter().copied());
    if length < tol {
        mean.iter_mut().enumerate().for_each(|(e, m)| *m = directions[0].at(e));
    } else {
        mean.iter_mut().for_each(|m| *m /= length);
    }
    let mut step = vec![0.0f64; len];
    for _ in 0..max_iter {
        step.fill(0.0);
        for d in &directions {
            let dot = d.dot(&mean).clamp(-1.0, 1.0);
            let angle = dot.acos();
            if angle < tol {
                continue;
            }
            let c = weight * angle / angle.sin();
            step.iter_mut()
                .zip(&mean)
                .enumerate()
                .for_each(|(e, (s, m))| *s += c * (d.at(e) - dot * m));
        }
        let length = norm(step.iter().copied());
        if length < tol {
            break;
        }
        let (cos, sin) = (length.cos(), length.sin() / length);
        mean.iter_mut().zip(&step).for_each(|(m, s)| *m = cos * *m + sin * s);
        let unit = norm(mean.iter().copied());
        if unit > tol {
            mean.iter_mut().for_each(|m| *m /= unit);
        }
    }
    let scale: f64 = norms.iter().map(|n| alpha * n).sum();
    out.iter_mut().zip(&mean).for_each(|(o, m)| *o = (scale * m) as f32);
}

/// A half-precision vector's length as torch takes it (`vector_norm` of its float32 copy), in float32.
fn norm32(v: &[f32]) -> f32 {
    norm(v.iter().map(|&x| f64::from(x))) as f32
}

/// mergekit's `karcher` in a half-precision dtype: norms and the step's length in float32 (mergekit widens the
/// tensors for them), everything else stored in the dtype after each operation, as torch stores it. A float32
/// scalar divides a half-precision tensor as it is, but multiplies it rounded to the dtype first (torch's `mul`
/// casts a zero-dimensional operand to the common dtype; its `div` keeps the scalar's own value).
fn mean_rounded(points: &[Vec<f32>], max_iter: u64, tol: f64, p: Precision, out: &mut [f32]) {
    let tol32 = tol as f32;
    let norms: Vec<f32> = points.iter().map(|v| norm32(v)).collect();
    let valid: Vec<usize> = (0..points.len()).filter(|&i| f64::from(norms[i]) > tol).collect();
    if valid.is_empty() {
        out.fill(0.0);
        return;
    }
    let units: Vec<Vec<f32>> = valid
        .iter()
        .map(|&i| points[i].iter().map(|x| p.round(x / norms[i])).collect())
        .collect();
    let alpha = 1.0 / points.len() as f64;
    let weight = (alpha / (alpha * valid.len() as f64)) as f32; // each valid direction's normalised alpha
    let mut mean = vec![0.0f32; out.len()];
    for unit in &units {
        mean.iter_mut()
            .zip(unit)
            .for_each(|(m, u)| *m = p.round(*m + p.round(weight * u)));
    }
    let length = norm32(&mean);
    if length < tol32 {
        mean.copy_from_slice(&units[0]);
    } else {
        mean.iter_mut().for_each(|m| *m = p.round(*m / length));
    }
    let mut step = vec![0.0f32; out.len()];
    for _ in 0..max_iter {
        step.fill(0.0);
        for unit in &units {
            let dot = mean.iter().zip(unit).map(|(m, u)| m * u).sum::<f32>();
            let dot = p.round(dot).clamp(-1.0, 1.0);
            let angle = p.round(dot.acos());
            if angle < tol32 {
                continue;
            }
            let c = p.round(weight * p.round(angle / p.round(angle.sin())));
            for ((s, m), u) in step.iter_mut().zip(&mean).zip(unit) {
                *s = p.round(*s + p.round(c * p.round(u - p.round(dot * m))));
            }
        }
        let length = norm32(&step);
        if length < tol32 {
            break;
        }
        let (cos, sin) = (p.round(length.cos()), p.round(length.sin()));
        for (m, s) in mean.iter_mut().zip(&step) {
            *m = p.round(p.round(cos * *m) + p.round(sin * p.round(s / length)));
        }
        let unit = norm32(&mean);
        if unit > tol32 {
            mean.iter_mut().for_each(|m| *m = p.round(*m / unit));
        }
    }
    let scale = p.round(norms.iter().map(|n| alpha as f32 * n).sum::<f32>());
    out.iter_mut().zip(&mean).for_each(|(o, m)| *o = p.round(scale * m));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::working_set::assert_declared_working_set_is_honest;

    #[test]
    fn the_mean_of_two_directions_is_their_bisector_at_the_mean_norm() {
        let points = vec![vec![2.0f32, 0.0], vec![0.0, 4.0]];
        let mut out = [0.0f32; 2];
        mean(&points, 10, 1e-5, &mut out);
        let half = std::f32::consts::FRAC_1_SQRT_2;
        assert!(
            (out[0] - 3.0 * half).abs() < 1e-5 && (out[1] - 3.0 * half).abs() < 1e-5,
            "{out:?}"
        );
    }

    #[test]
    fn three_directions_meet_where_the_tangents_cancel() {
        let points = vec![vec![1.0f32, 0.0, 0.0], vec![0.0, 1.0, 0.0], vec![0.6, 0.8, 0.0]];
        let mut out = [0.0f32; 3];
        mean(&points, 50, 1e-9, &mut out);
        let m: Vec<f64> = out.iter().map(|&x| f64::from(x)).collect();
        let n = norm(m.iter().copied());
        let tangent: Vec<f64> = (0..3)
            .map(|e| {
                points
                    .iter()
                    .map(|p| {
                        let u: Vec<f64> = p.iter().map(|&x| f64::from(x)).collect();
                        let dot: f64 = (0..3).map(|k| u[k] * m[k] / n).sum();
                        let angle = dot.clamp(-1.0, 1.0).acos();
                        angle / angle.sin() * (u[e] - dot * m[e] / n)
                    })
                    .sum()
            })
            .collect();
        assert!(norm(tangent.into_iter()) < 1e-5);
        assert!((n - 1.0).abs() < 1e-6);
    }

    #[test]
    fn in_bfloat16_the_mean_is_a_bfloat16_value_near_the_float64_one() {
        let points = vec![vec![2.0f32, 0.5, -1.0], vec![0.25, 4.0, 1.0], vec![1.0, 1.0, 1.0]];
        let (mut exact, mut rounded) = ([0.0f32; 3], [0.0f32; 3]);
        mean(&points, 10, 1e-5, &mut exact);
        mean_rounded(&points, 10, 1e-5, Precision::Bf16, &mut rounded);
        for (r, x) in rounded.iter().zip(&exact) {
            assert_eq!(half::bf16::from_f32(*r).to_f32(), *r);
            assert!((r - x).abs() <= 0.05, "{r} near {x}");
        }
    }

    #[test]
    fn zero_tensors_give_zero() {
        let mut out = [1.0f32; 2];
        mean(&[vec![0.0, 0.0], vec![0.0, 0.0]], 10, 1e-5, &mut out);
        assert_eq!(out, [0.0, 0.0]);
    }

    #[test]
    fn the_declared_working_set_covers_what_is_held() {
        assert_declared_working_set_is_honest(
            &Karcher {
                max_iter: 10,
                tol: 1e-5,
                precision: Precision::F32,
            },
            3,
        );
    }
}
