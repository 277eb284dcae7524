//! Counter-based random numbers: a value is a pure function of (seed, stream, index), so DARE's masks are
//! reproducible from the seed and independent of chunking and thread count.

/// SplitMix64's finaliser: a bijective 64-bit mixer with full avalanche.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stream key from a seed, a name (e.g. the tensor) and a number (e.g. the task).
pub(crate) fn stream(seed: u64, name: &str, number: u64) -> u64 {
    // FNV-1a over the name, so the key does not depend on tensor order.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    mix64(mix64(seed ^ mix64(h)) ^ number.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// 64 random bits for element `index` of `stream`.
#[inline]
pub(crate) fn bits(stream: u64, index: u64) -> u64 {
    mix64(stream.wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// Uniform in [0, 1) with 53 bits, for element `index` of `stream`.
#[inline]
pub(crate) fn uniform(stream: u64, index: u64) -> f64 {
    (bits(stream, index) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_in_range_and_balanced() {
        let s = stream(7, "w", 0);
        let n = 200_000;
        let mean: f64 = (0..n)
            .map(|i| uniform(s, i))
            .inspect(|u| assert!((0.0..1.0).contains(u)))
            .sum::<f64>()
            / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
    }

    #[test]
    fn streams_differ_by_seed_name_and_number() {
        let a = stream(1, "w", 0);
        assert_ne!(a, stream(2, "w", 0));
        assert_ne!(a, stream(1, "v", 0));
        assert_ne!(a, stream(1, "w", 1));
        assert_eq!(uniform(a, 5), uniform(stream(1, "w", 0), 5));
    }
}
