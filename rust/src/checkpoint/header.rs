//! One safetensors file's header: parsed and validated (offsets in range, contiguous, file length exact)
//! by the `safetensors` crate over a short-lived memory map that only touches the header pages.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use safetensors::{SafeTensorError, SafeTensors};

use crate::error::{MergeError, Result};

/// One tensor as a file stores it.
#[derive(Debug, Clone)]
pub(crate) struct StoredTensor {
    /// Name in the file.
    pub(crate) name: String,
    /// Stored dtype.
    pub(crate) dtype: safetensors::Dtype,
    /// Shape.
    pub(crate) shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub(crate) offset: u64,
    /// Data length in bytes.
    pub(crate) nbytes: u64,
}

impl StoredTensor {
    /// Number of elements.
    pub(crate) fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The parsed header of one file.
#[derive(Debug)]
pub(crate) struct FileHeader {
    /// Tensors sorted by name.
    pub(crate) tensors: Vec<StoredTensor>,
    /// The `__metadata__` map, if any.
    pub(crate) metadata: Vec<(String, String)>,
}

/// Read and validate the header of the safetensors file at `path`.
pub(crate) fn read_header(path: &Path) -> Result<FileHeader> {
    super::regular_file(path)?;
    let file = File::open(path).map_err(|e| MergeError::io(path, e))?;
    let len = file.metadata().map_err(|e| MergeError::io(path, e))?.len();
    if len < 8 {
        return Err(MergeError::invalid(
            path,
            format!("the file is {len} bytes long, too short for a header"),
        ));
    }
    // SAFETY: the map is read-only and dropped before this function returns. A concurrent truncation of the
    // file by another process could fault; safetensors readers share that assumption.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| MergeError::io(path, e))?;
    check_tensor_count(path, &map)?;
    let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| describe(path, e, len))?;
    let data_start = 8 + header_len as u64;
    let mut tensors: Vec<StoredTensor> = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| StoredTensor {
            name,
            dtype: info.dtype,
            shape: info.shape.clone(),
            offset: data_start + info.data_offsets.0 as u64,
            nbytes: (info.data_offsets.1 - info.data_offsets.0) as u64,
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut meta: Vec<(String, String)> = metadata.metadata().clone().unwrap_or_default().into_iter().collect();
    meta.sort();
    Ok(FileHeader {
        tensors,
        metadata: meta,
    })
}

/// Most tensors one file may declare: far beyond real checkpoints (thousands). At the cap (a 22 MB header),
/// `merge-rs info` takes about 2 s and 200 MB, measured; a 1.5 M-tensor header is refused unparsed.
const MAX_TENSORS: usize = 200_000;

/// Count the header's tensor entries before parsing it (each has one `"data_offsets"` key).
fn check_tensor_count(path: &Path, file: &[u8]) -> Result<()> {
    let header_len = file
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b: [u8; 8]| u64::from_le_bytes(b)) as usize;
    let header = file.get(8..8usize.saturating_add(header_len)).unwrap_or_default();
    let key = b"\"data_offsets\"";
    let entries = header.windows(key.len()).filter(|w| *w == key).count();
    if entries > MAX_TENSORS {
        return Err(MergeError::invalid(
            path,
            format!("the header declares {entries} tensors; merge-rs reads at most {MAX_TENSORS} per file"),
        ));
    }
    Ok(())
}

fn describe(path: &Path, err: SafeTensorError, len: u64) -> MergeError {
    let reason = match err {
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            format!(
                "the header length field points past the end of the file ({len} bytes): truncated or not safetensors"
            )
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            format!("the data section does not match the header's offsets ({len} bytes on disk): truncated or padded")
        }
        SafeTensorError::InvalidHeaderDeserialization(e) if e.to_string().contains("unknown variant") => {
            format!("unknown dtype in header: {e}")
        }
        SafeTensorError::InvalidHeaderDeserialization(e) => format!("corrupt header JSON: {e}"),
        SafeTensorError::InvalidHeader(_) => "the header is not UTF-8 JSON".to_string(),
        SafeTensorError::InvalidOffset(name) => format!("tensor '{name}' has data offsets out of range"),
        SafeTensorError::TensorInvalidInfo => "a tensor's shape does not match its byte range".to_string(),
        other => other.to_string(),
    };
    MergeError::invalid(path, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        File::create(&p)
            .and_then(|mut f| f.write_all(bytes))
            .unwrap_or_else(|e| panic!("{e}"));
        p
    }

    fn file_with(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_a_valid_header() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let h = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}"#;
        let p = write(dir.path(), "m.safetensors", &file_with(h, &[0; 16]));
        let header = read_header(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(header.tensors[0].name, "a");
        assert_eq!(header.tensors[1].offset, 8 + h.len() as u64);
        assert_eq!(header.metadata, vec![("format".to_string(), "pt".to_string())]);
    }

    #[test]
    fn rejects_bad_files_with_reasons() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let good = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("short", vec![1, 2, 3], "too short"),
            ("truncated", file_with(good, &[0; 4]), "truncated"),
            ("json", file_with("{not json", &[]), "corrupt header JSON"),
            (
                "dtype",
                file_with(r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]),
                "unknown dtype",
            ),
            (
                "offsets",
                file_with(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#, &[0; 8]),
                "offset",
            ),
            ("huge", u64::MAX.to_le_bytes().to_vec(), "header length"),
        ];
        for (name, bytes, want) in cases {
            let p = write(dir.path(), name, &bytes);
            let err = read_header(&p).expect_err(name).to_string();
            assert!(err.contains(want) && err.contains(name), "{name}: {err}");
        }
        assert!(matches!(
            read_header(&dir.path().join("missing")),
            Err(MergeError::NotFound { .. })
        ));
    }
}
