//! The disjoint merge: keep the trimmed task-vector entries that agree with the elected sign and combine
//! them (sum, mean over the non-zero kept entries, or the largest magnitude with the elected sign).

use super::{MergeFunc, TiesOptions};
use crate::simd::dispatched;

dispatched! {
    /// The disjoint merge of every element at once: out[j] = aggregate(column j, signs[j]).
    pub(super) fn aggregate_into(out: &mut [f32], models: &[&mut [f32]], signs: &[f32], func: MergeFunc) {
        let kept = |t: f32, s: f32| {
            if (s > 0.0 && t > 0.0) || (s <= 0.0 && t < 0.0) {
                t
            } else {
                0.0
            }
        };
        out.fill(0.0);
        match func {
            MergeFunc::Sum => {
                for tau in models {
                    for ((o, &t), &s) in out.iter_mut().zip(tau.iter()).zip(signs) {
                        *o += kept(t, s);
                    }
                }
            }
            MergeFunc::Mean => {
                let mut counts = vec![0.0f32; out.len()];
                for tau in models {
                    for (((o, c), &t), &s) in out.iter_mut().zip(counts.iter_mut()).zip(tau.iter()).zip(signs) {
                        let k = kept(t, s);
                        *o += k;
                        *c += if k != 0.0 { 1.0 } else { 0.0 };
                    }
                }
                for (o, c) in out.iter_mut().zip(&counts) {
                    *o /= c.max(1.0);
                }
            }
            MergeFunc::Max => {
                for tau in models {
                    for ((o, &t), &s) in out.iter_mut().zip(tau.iter()).zip(signs) {
                        *o = o.max(kept(t, s).abs());
                    }
                }
                for (o, &s) in out.iter_mut().zip(signs) {
                    *o *= s;
                }
            }
        }
    }
}

/// torch.sign: −1, 0 or +1 (−0 is 0), branch-free.
pub(super) fn sign(x: f32) -> f32 {
    (i32::from(x > 0.0) - i32::from(x < 0.0)) as f32
}

/// Disjoint merge of one element's trimmed task-vector entries under elected sign `s`. As in FusionBench,
/// an entry is kept when `s > 0 ? τ > 0 : τ < 0` (so a zero sign keeps the negative entries).
pub(super) fn aggregate(column: &[f32], s: f32, func: MergeFunc) -> f32 {
    let kept = column.iter().map(|&t| {
        if (s > 0.0 && t > 0.0) || (s <= 0.0 && t < 0.0) {
            t
        } else {
            0.0
        }
    });
    match func {
        MergeFunc::Sum => kept.sum(),
        MergeFunc::Mean => {
            let (sum, count) = kept.fold((0.0f32, 0u32), |(s, n), t| (s + t, n + u32::from(t != 0.0)));
            sum / count.max(1) as f32
        }
        MergeFunc::Max => kept.fold(0.0f32, |m, t| m.max(t.abs())) * s,
    }
}

/// One element by the definition, from its untrimmed task-vector entries `column`: trim each at its task's
/// threshold, elect the sign of the sum, aggregate, add λ times the result to θ₀. Returns the elected sign
/// and the value under majority sign +1 and −1 (the same unless the elected sign is 0). `trimmed` is scratch.
pub(super) fn element_outcome(
    column: &[f32],
    base: f32,
    kth: &[f32],
    options: &TiesOptions,
    trimmed: &mut Vec<f32>,
) -> (f32, [f32; 2]) {
    trimmed.clear();
    trimmed.extend(
        column
            .iter()
            .zip(kth)
            .map(|(&t, &k)| if t.abs() >= k { t } else { 0.0 }),
    );
    let elected = sign(trimmed.iter().fold(0.0f32, |acc, &t| acc + t));
    let value = |s: f32| base + options.scaling_factor * aggregate(trimmed, s, options.merge_func);
    if elected == 0.0 {
        (elected, [value(1.0), value(-1.0)])
    } else {
        let v = value(elected);
        (elected, [v, v])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_follow_fusionbench() {
        let col = [0.5, -0.25, 0.25, 0.0];
        assert_eq!(aggregate(&col, 1.0, MergeFunc::Sum), 0.75);
        assert_eq!(aggregate(&col, 1.0, MergeFunc::Mean), 0.375);
        assert_eq!(aggregate(&col, 1.0, MergeFunc::Max), 0.5);
        assert_eq!(aggregate(&col, -1.0, MergeFunc::Sum), -0.25);
        assert_eq!(aggregate(&col, -1.0, MergeFunc::Max), -0.25);
        // A zero sign keeps the negative entries; max multiplies by the zero sign.
        assert_eq!(aggregate(&col, 0.0, MergeFunc::Sum), -0.25);
        assert_eq!(aggregate(&col, 0.0, MergeFunc::Max), 0.0);
        assert_eq!(aggregate(&[0.0, 0.0], 1.0, MergeFunc::Mean), 0.0);
    }

    #[test]
    fn sign_treats_negative_zero_as_zero() {
        assert_eq!(sign(-0.0), 0.0);
        assert_eq!(sign(-1e-30), -1.0);
    }
}
