//! The dtype a method computes in. merge-rs computes in float32; mergekit computes in its config's `dtype:`,
//! where torch rounds every elementwise step to that dtype (and sums in float32 before rounding once). A
//! method that offers `compute` replays those roundings, so that a mergekit config in bfloat16 gives
//! mergekit's bits rather than float32's.

use half::{bf16, f16};

use crate::error::Result;
use crate::method::{ParamDef, ParamDefault, ParamKind, Params};

/// The parameter, declared once for every method that offers it.
pub(crate) const COMPUTE: ParamDef = ParamDef {
    name: "compute",
    kind: ParamKind::Choice {
        choices: &["float32", "bfloat16", "float16"],
    },
    default: ParamDefault::Name("float32"),
    help: "dtype every step is rounded to, as torch computes in mergekit's dtype (float32: no rounding)",
};

/// Where each intermediate value is rounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Precision {
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// The `compute` parameter's value.
    pub(crate) fn from_params(p: &Params) -> Result<Precision> {
        Ok(match p.choice(COMPUTE.name)? {
            "bfloat16" => Precision::Bf16,
            "float16" => Precision::F16,
            _ => Precision::F32,
        })
    }

    /// `x` rounded to the nearest value of the dtype (ties to even), as torch stores a result.
    #[inline]
    pub(crate) fn round(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::Bf16 => bf16::from_f32(x).to_f32(),
            Precision::F16 => f16::from_f32(x).to_f32(),
        }
    }

    /// A model's values as mergekit holds them in the dtype: θ rounded, or with `base` its task vector, the
    /// difference of the rounded values, rounded (float32: θ, or θ − θ₀).
    pub(crate) fn input(self, theta: &[f32], base: Option<&[f32]>) -> Vec<f32> {
        match base {
            Some(base) => theta
                .iter()
                .zip(base)
                .map(|(x, b)| self.round(self.round(*x) - self.round(*b)))
                .collect(),
            None => theta.iter().map(|x| self.round(*x)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even_and_float32_is_untouched() {
        // 1 + 2⁻⁸ lies halfway between two bfloat16 values: it rounds to the even one, 1.
        assert_eq!(Precision::Bf16.round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(Precision::Bf16.round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(Precision::Bf16.round(0.1), 0.100_097_656);
        assert_eq!(Precision::F16.round(0.1), 0.099_975_586);
        assert_eq!(Precision::F16.round(1e-9), 0.0);
        assert_eq!(Precision::F32.round(0.1), 0.1);
        assert_eq!(Precision::Bf16.round(0.7), 0.699_218_75);
    }
}
