//! The extracted adapter against an independent SVD: full rank reproduces the fine-tune, rank r drops exactly
//! the smallest singular values, the energy rule keeps the fewest directions, and merge-rs reads it back.

use super::*;
use crate::linalg::thin_svd;
use crate::test_files::synthetic_models;

fn request(dir: &Path, paths: &[PathBuf], rank: usize, energy: Option<f64>) -> ExtractRequest {
    ExtractRequest {
        model: paths[1].clone(),
        base: paths[0].clone(),
        out: dir.join(format!("lora-{rank}-{energy:?}")),
        rank,
        energy,
        overwrite: false,
        reads: Vec::new(),
        files: vec![("README.md".into(), b"card".to_vec())],
    }
}

fn models(dir: &Path) -> Vec<PathBuf> {
    let shapes = [
        ("enc.q.weight", vec![12, 7]),
        ("enc.q.bias", vec![12]),
        ("embed.weight", vec![9, 7]),
    ];
    synthetic_models(dir, &shapes, 1, 5)
}

fn read(path: &Path, base: Option<&Path>, name: &str) -> Vec<f32> {
    let ckpt = Checkpoint::open_input(path, base).unwrap_or_else(|e| panic!("{e}"));
    let t = ckpt.get(name).unwrap_or_else(|| panic!("{name}"));
    let mut out = vec![0.0; t.stored.numel()];
    let ty = crate::dtype::FloatType::F32;
    ckpt.read_f32(t, ty, 0, &mut out, &mut Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    out
}

#[test]
fn full_rank_reproduces_the_fine_tune_and_rank_r_drops_the_smallest_directions() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let paths = models(dir.path());
    let (theta0, theta) = (
        read(&paths[0], None, "enc.q.weight"),
        read(&paths[1], None, "enc.q.weight"),
    );
    let tau: Vec<f32> = theta.iter().zip(&theta0).map(|(a, b)| a - b).collect();
    let s = thin_svd(widen(&tau, 12, 7).as_ref())
        .unwrap_or_else(|e| panic!("{e}"))
        .s;
    let total: f64 = s.iter().map(|x| x * x).sum();
    for rank in [7, 3] {
        let req = request(dir.path(), &paths, rank, None);
        let report = extract_lora(&req, &Monitor::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.modules.len(), 1, "only the linear weight: {report:?}");
        let module = &report.modules[0];
        assert_eq!((module.module.as_str(), module.rank), ("enc.q", rank));
        let dropped: f64 = s[rank..].iter().map(|x| x * x).sum();
        // ‖τ‖² − kept cancels in float64: about 1e-8 of error at full rank.
        assert!(
            (module.relative_error - (dropped / total).sqrt()).abs() < 1e-6,
            "{module:?}"
        );
        let names: Vec<&str> = report.left_out.iter().map(|l| l.tensor.as_str()).collect();
        assert_eq!(names, ["embed.weight", "enc.q.bias"]);
        // merge-rs reads the adapter back as θ₀ + B·A: the fine-tune at full rank, within the dropped norm otherwise.
        let back = read(&req.out, Some(&paths[0]), "enc.q.weight");
        let error: f64 = back
            .iter()
            .zip(&theta)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            error <= dropped.sqrt() + 1e-5,
            "rank {rank}: {error} against {}",
            dropped.sqrt()
        );
        assert!(req.out.join("README.md").is_file() && req.out.join(crate::checkpoint::ADAPTER_CONFIG).is_file());
    }
}

#[test]
fn the_energy_rule_keeps_the_fewest_directions_that_reach_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let paths = models(dir.path());
    let report =
        extract_lora(&request(dir.path(), &paths, 7, Some(0.5)), &Monitor::default()).unwrap_or_else(|e| panic!("{e}"));
    let module = &report.modules[0];
    assert!(module.energy >= 0.5 && module.rank < 7, "{module:?}");
    let fewer = extract_lora(&request(dir.path(), &paths, module.rank - 1, None), &Monitor::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        fewer.modules[0].energy < 0.5,
        "one direction less misses the share: {:?}",
        fewer.modules[0]
    );
}

#[test]
fn impossible_ranks_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let paths = models(dir.path());
    for (rank, energy, needle) in [
        (0, None, "at least 1"),
        (8, None, "larger than 'enc.q.weight'"),
        (2, Some(1.5), "(0, 1]"),
    ] {
        let req = request(dir.path(), &paths, rank, energy);
        let err = extract_lora(&req, &Monitor::default())
            .expect_err("refused")
            .to_string();
        assert!(err.contains(needle), "{err}");
        assert!(!req.out.exists());
    }
}
