//! Run-time choice of vector units for the hot loops, so that a portable build (the wheel, for any x86-64 CPU)
//! runs them within a few percent of a build for the machine (docs/performance.md): `dispatched!` compiles a
//! function for x86-64-v4 (AVX-512) and x86-64-v3 (AVX2) besides the baseline (and for NEON on aarch64, which
//! has never been built here), and the first call picks the best the CPU has.
//!
//! Only the instruction set changes, never the arithmetic: Rust does not fuse a multiply and an add into an FMA
//! unless told to, so every version gives the same bits.

/// Wrap `fn` items in `multiversion` with this crate's targets.
macro_rules! dispatched {
    ($($(#[$meta:meta])* $vis:vis fn $name:ident $args:tt $(-> $ret:ty)? $body:block)+) => {$(
        $(#[$meta])*
        #[multiversion::multiversion(targets(
            "x86_64+avx+avx2+bmi1+bmi2+f16c+fma+lzcnt+popcnt+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
            "x86_64+avx+avx2+bmi1+bmi2+f16c+fma+lzcnt+popcnt",
            "aarch64+neon",
        ))]
        $vis fn $name $args $(-> $ret)? $body
    )+};
}

pub(crate) use dispatched;

#[cfg(test)]
mod tests {
    dispatched! {
        /// A loop whose versions must agree bit for bit with the scalar definition.
        fn scale_add(out: &mut [f32], base: &[f32], lambda: f32) {
            for (o, b) in out.iter_mut().zip(base) {
                *o = *b + lambda * *o;
            }
        }
    }

    #[test]
    fn the_version_this_cpu_runs_gives_the_scalar_bits() {
        let base: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let tau: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.11).cos() * 1e-3).collect();
        let mut out = tau.clone();
        scale_add(&mut out, &base, 0.3);
        for ((o, b), t) in out.iter().zip(&base).zip(&tau) {
            assert_eq!(o.to_bits(), (b + 0.3 * t).to_bits());
        }
    }
}
