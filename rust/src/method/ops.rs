//! Vector steps that several methods' kernels share.

use crate::simd::dispatched;

dispatched! {
    /// Σᵢ models[i] into `out`, in model order.
    pub(crate) fn sum_into(out: &mut [f32], models: &[&mut [f32]]) {
        out.fill(0.0);
        for m in models {
            for (o, x) in out.iter_mut().zip(m.iter()) {
                *o += *x;
            }
        }
    }
}

dispatched! {
    /// out = θ₀ + λ·out (the final step of every task-vector method, in FusionBench's order).
    pub(crate) fn add_scaled_to_base(out: &mut [f32], base: Option<&[f32]>, lambda: f32) {
        if let Some(base) = base {
            for (o, b) in out.iter_mut().zip(base) {
                *o = *b + lambda * *o;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_then_scales_onto_the_base() {
        let (mut a, mut b) = (vec![1.0f32, 2.0], vec![3.0f32, -4.0]);
        let models = [a.as_mut_slice(), b.as_mut_slice()];
        let mut out = vec![9.0f32; 2];
        sum_into(&mut out, &models);
        assert_eq!(out, vec![4.0, -2.0]);
        add_scaled_to_base(&mut out, Some(&[1.0, 1.0]), 0.5);
        assert_eq!(out, vec![3.0, 0.0]);
    }
}
