//! Header and index parsing: the input is a model directory laid out from the fuzzer's bytes (a single file,
//! or an index plus one shard), opened with `inspect`. Any input may fail, but never crash or hang.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("merge-rs-fuzz-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    match data.split_first() {
        // Sharded: the bytes up to the first NUL are the index, the rest is the shard it may name.
        Some((0, rest)) => {
            let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let _ = std::fs::write(dir.join("model.safetensors.index.json"), &rest[..cut]);
            let _ = std::fs::write(dir.join("a.safetensors"), rest.get(cut + 1..).unwrap_or_default());
        }
        _ => {
            let _ = std::fs::write(dir.join("model.safetensors"), data);
        }
    }
    let _ = merge_rs::inspect(&dir);
});
