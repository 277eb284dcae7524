//! Element types: float32 / float16 / bfloat16 decode to f32 working buffers and encode back with
//! round-to-nearest-even (via `half`); integer and bool tensors are carried through as raw bytes.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use safetensors::Dtype;

use crate::simd::dispatched;

#[cfg(not(target_endian = "little"))]
compile_error!("merge-rs reads safetensors (little-endian) data in place and needs a little-endian target");

/// A floating-point storage type that can be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
}

/// How a stored tensor takes part in a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    /// A float tensor: decoded, merged, encoded.
    Float(FloatType),
    /// An integer or bool buffer: copied byte for byte (e.g. `position_ids`).
    Raw {
        /// Bytes per element.
        width: usize,
    },
}

impl FloatType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            FloatType::F32 => 4,
            FloatType::F16 | FloatType::BF16 => 2,
        }
    }

    /// The safetensors dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            FloatType::F32 => Dtype::F32,
            FloatType::F16 => Dtype::F16,
            FloatType::BF16 => Dtype::BF16,
        }
    }

    /// The name users type (`float32`, `float16`, `bfloat16`).
    pub fn name(self) -> &'static str {
        match self {
            FloatType::F32 => "float32",
            FloatType::F16 => "float16",
            FloatType::BF16 => "bfloat16",
        }
    }

    /// Parse a user-facing name (`float32`/`fp32`/`f32`, `float16`/`fp16`/`half`, `bfloat16`/`bf16`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "float32" | "fp32" | "f32" | "float" => Some(FloatType::F32),
            "float16" | "fp16" | "f16" | "half" => Some(FloatType::F16),
            "bfloat16" | "bf16" => Some(FloatType::BF16),
            _ => None,
        }
    }

    /// Decode little-endian `raw` bytes (`out.len() * size()` of them) into `out`.
    pub fn decode(self, raw: &[u8], out: &mut [f32]) {
        debug_assert_eq!(raw.len(), out.len() * self.size());
        match self {
            FloatType::F32 => {
                for (o, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            FloatType::F16 => decode_halves::<f16>(raw, out),
            FloatType::BF16 => decode_halves::<bf16>(raw, out),
        }
    }

    /// Encode `values` into little-endian bytes, rounding to nearest even; `raw` is resized to fit.
    pub fn encode(self, values: &[f32], raw: &mut Vec<u8>) {
        raw.resize(values.len() * self.size(), 0);
        self.encode_into(values, raw);
    }

    /// Encode `values` into `raw`, exactly `values.len() × size` bytes long.
    pub(crate) fn encode_into(self, values: &[f32], raw: &mut [u8]) {
        match self {
            FloatType::F32 => raw.copy_from_slice(bytemuck::cast_slice(values)),
            FloatType::F16 => encode_halves::<f16>(values, raw),
            FloatType::BF16 => encode_halves::<bf16>(values, raw),
        }
    }
}

/// Half-precision types that `half` converts in bulk.
trait Half: bytemuck::Pod {
    fn to_f32s(src: &[Self], dst: &mut [f32]);
    fn from_f32s(src: &[f32], dst: &mut [Self]);
}

impl Half for f16 {
    fn to_f32s(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst)
    }
    fn from_f32s(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src)
    }
}

impl Half for bf16 {
    fn to_f32s(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst)
    }
    fn from_f32s(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src)
    }
}

fn decode_halves<H: Half>(raw: &[u8], out: &mut [f32]) {
    match bytemuck::try_cast_slice::<u8, H>(raw) {
        Ok(halves) => H::to_f32s(halves, out),
        Err(_) => {
            // Unaligned buffer: copy through an aligned scratch slice.
            let halves: Vec<H> = bytemuck::pod_collect_to_vec(raw);
            H::to_f32s(&halves, out)
        }
    }
}

fn encode_halves<H: Half>(values: &[f32], raw: &mut [u8]) {
    match bytemuck::try_cast_slice_mut::<u8, H>(raw) {
        Ok(halves) => H::from_f32s(values, halves),
        Err(_) => {
            let mut halves = vec![H::zeroed(); values.len()];
            H::from_f32s(values, &mut halves);
            raw.copy_from_slice(bytemuck::cast_slice(&halves));
        }
    }
}

/// Classify a safetensors dtype; `None` for dtypes that can be neither merged nor carried through.
pub(crate) fn storage_of(dtype: Dtype) -> Option<Storage> {
    Some(match dtype {
        Dtype::F32 => Storage::Float(FloatType::F32),
        Dtype::F16 => Storage::Float(FloatType::F16),
        Dtype::BF16 => Storage::Float(FloatType::BF16),
        Dtype::BOOL | Dtype::U8 | Dtype::I8 => Storage::Raw { width: 1 },
        Dtype::I16 | Dtype::U16 => Storage::Raw { width: 2 },
        Dtype::I32 | Dtype::U32 => Storage::Raw { width: 4 },
        Dtype::I64 | Dtype::U64 => Storage::Raw { width: 8 },
        _ => return None,
    })
}

impl FloatType {
    /// Count the non-finite values in `raw`, encoded in this dtype (exponent bits all ones).
    pub(crate) fn count_nonfinite_encoded(self, raw: &[u8]) -> u64 {
        count_nonfinite_encoded(self, raw)
    }
}

dispatched! {
    /// What `FloatType::count_nonfinite_encoded` counts, compiled for the vector units the CPU has.
    fn count_nonfinite_encoded(dtype: FloatType, raw: &[u8]) -> u64 {
        let halves = |mask: u16| -> u64 {
            raw.chunks_exact(2)
                .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]]) & mask == mask))
                .sum()
        };
        match dtype {
            FloatType::F32 => raw
                .chunks_exact(4)
                .map(|b| u64::from(!f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()))
                .sum(),
            FloatType::F16 => halves(0x7c00),
            FloatType::BF16 => halves(0x7f80),
        }
    }
}

dispatched! {
    /// Count the non-finite values (NaN, ±Inf) in `values`, compiled for the vector units the CPU has (chosen at run
    /// time).
    pub(crate) fn count_nonfinite(values: &[f32]) -> u64 {
        // u32 counts over parts (twice the lanes of u64 ones), summed as u64.
        values
            .chunks(1 << 24)
            .map(|part| {
                let count: u32 = part
                    .iter()
                    .map(|v| u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000))
                    .sum();
                u64::from(count)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_in_the_output_dtype_counts_as_nonfinite() {
        let values = [1.0f32, 70_000.0, -1e39f64 as f32, 3.0e38];
        for (ty, want) in [(FloatType::F32, 1), (FloatType::F16, 3), (FloatType::BF16, 1)] {
            let mut raw = Vec::new();
            ty.encode(&values, &mut raw);
            assert_eq!(ty.count_nonfinite_encoded(&raw), want, "{}", ty.name());
        }
    }

    fn roundtrip(ty: FloatType, values: &[f32]) -> Vec<f32> {
        let mut raw = Vec::new();
        ty.encode(values, &mut raw);
        let mut out = vec![0.0; values.len()];
        ty.decode(&raw, &mut out);
        out
    }

    #[test]
    fn f32_roundtrip_is_exact() {
        let v = [1.5f32, -0.0, 2.718_281_7e-3, f32::MIN_POSITIVE, 1e30];
        assert_eq!(roundtrip(FloatType::F32, &v), v);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to the even one, 1.
        let halfway = f32::from_bits(0x3f80_8000);
        assert_eq!(roundtrip(FloatType::BF16, &[halfway]), [1.0]);
        // Just above the halfway point rounds up.
        let above = f32::from_bits(0x3f80_8001);
        assert_eq!(roundtrip(FloatType::BF16, &[above]), [f32::from_bits(0x3f81_0000)]);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up to even.
        let odd_halfway = f32::from_bits(0x3f81_8000);
        assert_eq!(
            roundtrip(FloatType::BF16, &[odd_halfway]),
            [f32::from_bits(0x3f82_0000)]
        );
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10 in binary16: rounds to 1.
        assert_eq!(roundtrip(FloatType::F16, &[1.0 + 2f32.powi(-11)]), [1.0]);
        assert_eq!(roundtrip(FloatType::F16, &[65504.0]), [65504.0]);
        assert_eq!(roundtrip(FloatType::F16, &[1e6]), [f32::INFINITY]);
    }

    #[test]
    fn unaligned_buffers_decode() {
        let mut raw = [0u8; 5];
        raw[1..].copy_from_slice(&[0x00, 0x3c, 0x00, 0xc0]); // f16 1.0, -2.0
        let mut out = [0.0f32; 2];
        FloatType::F16.decode(&raw[1..], &mut out);
        assert_eq!(out, [1.0, -2.0]);
    }

    #[test]
    fn names_parse() {
        assert_eq!(FloatType::parse("BF16"), Some(FloatType::BF16));
        assert_eq!(FloatType::parse("fp16"), Some(FloatType::F16));
        assert_eq!(FloatType::parse("int8"), None);
        assert_eq!(storage_of(Dtype::I64), Some(Storage::Raw { width: 8 }));
        assert_eq!(storage_of(Dtype::F8_E4M3), None);
    }

    #[test]
    fn nonfinite_values_are_counted() {
        assert_eq!(
            count_nonfinite(&[1.0, f32::NAN, f32::INFINITY, -f32::INFINITY, f32::MAX]),
            3
        );
    }
}
