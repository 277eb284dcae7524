//! An adapter reads as θ₀ + s·B·A, checked against a dense product for every kind of module, every
//! scaling rule and every read range; malformed adapters are refused with the file and module named.

use super::*;
use crate::test_files::put;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::collections::BTreeMap;

/// A float32 safetensors file of shaped tensors.
pub(super) fn shaped(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.to_string(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: BTreeMap<String, TensorView<'_>> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap_or_else(|e| panic!("{e}")),
            )
        })
        .collect();
    put(
        path,
        &safetensors::serialize(views, None).unwrap_or_else(|e| panic!("{e}")),
    );
}

pub(super) fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37 + seed).sin() * 0.5).collect()
}

pub(super) fn adapter(dir: &Path, config: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> PathBuf {
    let path = dir.join("adapter");
    std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{e}"));
    put(&path.join(ADAPTER_CONFIG), config.as_bytes());
    shaped(&path.join(ADAPTER_FILE), tensors);
    path
}

/// `layer.q`'s factors as PEFT saves them: lora_A of `a_shape` holding `a`, lora_B of `b_shape` holding `b`.
pub(super) fn q_factors(
    a_shape: Vec<usize>,
    a: Vec<f32>,
    b_shape: Vec<usize>,
    b: Vec<f32>,
) -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    vec![
        ("base_model.model.layer.q.lora_A.weight", a_shape, a),
        ("base_model.model.layer.q.lora_B.weight", b_shape, b),
    ]
}

pub(super) fn read_all(ckpt: &Checkpoint, name: &str, start: usize, len: usize) -> Vec<f32> {
    let t = ckpt.get(name).unwrap_or_else(|| panic!("{name}"));
    let mut out = vec![0.0; len];
    ckpt.read_f32(t, FloatType::F32, start, &mut out, &mut Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    out
}

/// ΔW[i, j] = s·Σₖ P[i, k]·Q[k, j] for row-major P (rows × r) and Q (r × cols).
pub(super) fn product(p: &[f32], q: &[f32], rows: usize, r: usize, cols: usize, s: f32) -> Vec<f32> {
    (0..rows * cols)
        .map(|e| {
            (0..r)
                .map(|k| p[e / cols * r + k] * q[k * cols + e % cols])
                .sum::<f32>()
                * s
        })
        .collect()
}

pub(super) const LORA: &str = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4}"#;

pub(super) struct Case {
    pub(super) dir: tempfile::TempDir,
    pub(super) base: PathBuf,
    w: Vec<f32>,
}

pub(super) fn base_with(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Case {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("base.safetensors");
    shaped(&base, tensors);
    Case {
        w: tensors[0].2.clone(),
        dir,
        base,
    }
}

#[test]
fn a_linear_module_reads_as_base_plus_scaled_product_in_any_range() {
    let case = base_with(&[
        ("layer.q.weight", vec![3, 4], values(12, 0.0)),
        ("layer.q.bias", vec![3], values(3, 1.0)),
    ]);
    let (a, b) = (values(8, 2.0), values(6, 3.0));
    let dir = adapter(
        case.dir.path(),
        LORA,
        &q_factors(vec![2, 4], a.clone(), vec![3, 2], b.clone()),
    );
    let ckpt = Checkpoint::open_input(&dir, Some(&case.base)).unwrap_or_else(|e| panic!("{e}"));
    let delta = product(&b, &a, 3, 2, 4, 2.0);
    let want: Vec<f32> = case.w.iter().zip(&delta).map(|(w, d)| w + d).collect();
    assert_eq!(read_all(&ckpt, "layer.q.weight", 0, 12), want);
    assert_eq!(read_all(&ckpt, "layer.q.weight", 5, 6), want[5..11]);
    assert_eq!(
        read_all(&ckpt, "layer.q.bias", 0, 3),
        values(3, 1.0),
        "untargeted tensors are the base's"
    );
    assert_eq!(ckpt.path, dir);
    assert!(ckpt.files().any(|f| f.ends_with(ADAPTER_FILE)));
}

#[test]
fn an_adapter_overlays_its_bare_base_and_reads_the_same_given_the_bases_values() {
    let case = base_with(&[("layer.q.weight", vec![3, 4], values(12, 0.0))]);
    let factors = q_factors(vec![2, 4], values(8, 2.0), vec![3, 2], values(6, 3.0));
    let first = adapter(&case.dir.path().join("first"), LORA, &factors);
    let second = adapter(&case.dir.path().join("second"), LORA, &factors);
    let bare = Checkpoint::open(&case.base).unwrap_or_else(|e| panic!("{e}"));
    let over = Checkpoint::open_input(&first, Some(&case.base)).unwrap_or_else(|e| panic!("{e}"));
    let adapted = Checkpoint::open_input(&second, Some(&case.base)).unwrap_or_else(|e| panic!("{e}"));
    assert!(over.overlays(&bare));
    assert!(
        !over.overlays(&adapted),
        "an adapted θ₀'s values are not the bare base's"
    );
    let t = over.get("layer.q.weight").unwrap_or_else(|| panic!("tensor"));
    let mut given = vec![0.0; 7];
    over.read_f32_over(t, FloatType::F32, 4, &case.w[4..11], &mut given, &mut Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(given, read_all(&over, "layer.q.weight", 4, 7));
}

#[test]
fn rslora_alpha_patterns_and_fan_in_fan_out_change_the_scale_and_layout() {
    let case = base_with(&[
        ("h.c_attn.weight", vec![4, 3], values(12, 0.5)),
        ("h.mlp.weight", vec![4, 3], values(12, 0.7)),
    ]);
    let (a, b) = (values(8, 2.0), values(6, 3.0));
    let config = r#"{"peft_type": "LORA", "lora_alpha": 4, "use_rslora": true, "fan_in_fan_out": true,
                     "alpha_pattern": {"c_attn": 8}}"#;
    let dir = adapter(
        case.dir.path(),
        config,
        &[
            ("base_model.model.h.c_attn.lora_A.weight", vec![2, 4], a.clone()),
            ("base_model.model.h.c_attn.lora_B.weight", vec![3, 2], b.clone()),
            ("base_model.model.h.mlp.lora_A.weight", vec![2, 4], a.clone()),
            ("base_model.model.h.mlp.lora_B.weight", vec![3, 2], b.clone()),
        ],
    );
    let ckpt = Checkpoint::open_input(&dir, Some(&case.base)).unwrap_or_else(|e| panic!("{e}"));
    // W is [in, out] = [4, 3]: ΔW = s·(B·A)ᵀ, i.e. P = Aᵀ (4 × 2), Q = Bᵀ (2 × 3).
    let (at, bt) = (super::transpose(&a, 2), super::transpose(&b, 3));
    for (name, alpha, w) in [
        ("h.c_attn.weight", 8.0f32, values(12, 0.5)),
        ("h.mlp.weight", 4.0, values(12, 0.7)),
    ] {
        let delta = product(&at, &bt, 4, 2, 3, alpha / 2f32.sqrt());
        let want: Vec<f32> = w.iter().zip(&delta).map(|(w, d)| w + d).collect();
        assert_eq!(read_all(&ckpt, name, 0, 12), want, "{name}");
    }
    let mut scales = ckpt.adapter_scales();
    scales.sort_by(|x, y| x.0.cmp(&y.0));
    let rank = 2f32.sqrt();
    assert_eq!(
        scales,
        [("h.c_attn".to_string(), 8.0 / rank), ("h.mlp".to_string(), 4.0 / rank)]
    );
}

#[test]
fn embeddings_convolutions_and_saved_modules_are_read_as_peft_forms_them() {
    let case = base_with(&[
        ("embed.weight", vec![5, 3], values(15, 0.1)),
        ("embed.bias", vec![3], values(3, 0.4)),
        ("conv.weight", vec![3, 2, 2, 2], values(24, 0.2)),
        ("head.weight", vec![2, 3], values(6, 0.3)),
    ]);
    let (ea, eb) = (values(10, 1.0), values(6, 2.0)); // A [r, num_embeddings], B [dim, r]
    let (ca, cb) = (values(16, 3.0), values(6, 4.0)); // A [r, in, kh, kw], B [out, r, 1, 1]
    let dir = adapter(
        case.dir.path(),
        LORA,
        &[
            ("base_model.model.embed.lora_embedding_A", vec![2, 5], ea.clone()),
            ("base_model.model.embed.lora_embedding_B", vec![3, 2], eb.clone()),
            ("base_model.model.conv.lora_A.weight", vec![2, 2, 2, 2], ca.clone()),
            ("base_model.model.conv.lora_B.weight", vec![3, 2, 1, 1], cb.clone()),
            ("base_model.model.head.modules_to_save.weight", vec![2, 3], vec![9.0; 6]),
            ("base_model.model.embed.bias", vec![3], vec![7.0; 3]),
        ],
    );
    let ckpt = Checkpoint::open_input(&dir, Some(&case.base)).unwrap_or_else(|e| panic!("{e}"));
    let embed = product(&super::transpose(&ea, 2), &super::transpose(&eb, 3), 5, 2, 3, 2.0);
    let want: Vec<f32> = values(15, 0.1).iter().zip(&embed).map(|(w, d)| w + d).collect();
    assert_eq!(read_all(&ckpt, "embed.weight", 0, 15), want);
    let conv = product(&cb, &ca, 3, 2, 8, 2.0);
    let want: Vec<f32> = values(24, 0.2).iter().zip(&conv).map(|(w, d)| w + d).collect();
    assert_eq!(read_all(&ckpt, "conv.weight", 7, 10), want[7..17]);
    assert_eq!(
        read_all(&ckpt, "head.weight", 0, 6),
        vec![9.0; 6],
        "saved as PEFT < 0.15 did"
    );
    assert_eq!(
        read_all(&ckpt, "embed.bias", 0, 3),
        vec![7.0; 3],
        "saved under the base's own name"
    );
}

fn refusal(config: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> String {
    let case = base_with(&[("layer.q.weight", vec![3, 4], values(12, 0.0))]);
    let dir = adapter(case.dir.path(), config, tensors);
    Checkpoint::open_input(&dir, Some(&case.base))
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn unsupported_or_mismatched_adapters_are_refused_with_the_reason() {
    let pair = |a: Vec<usize>, b: Vec<usize>| {
        let (na, nb) = (a.iter().product(), b.iter().product());
        q_factors(a, values(na, 0.0), b, values(nb, 0.0))
    };
    let good = pair(vec![2, 4], vec![3, 2]);
    for (config, tensors, needle) in [
        (r#"{"peft_type": "IA3"}"#, good.clone(), "peft_type is 'IA3'"),
        (
            r#"{"peft_type": "LORA", "lora_alpha": 8, "use_dora": true}"#,
            good.clone(),
            "DoRA",
        ),
        (
            LORA,
            pair(vec![2, 5], vec![3, 2]),
            "do not fit the base's 'layer.q.weight'",
        ),
        (LORA, pair(vec![2, 4], vec![3, 3]), "do not share a rank"),
        (LORA, pair(vec![0, 4], vec![3, 0]), "do not share a rank"),
        (LORA, vec![good[0].clone()], "only one of lora_A, lora_B"),
        (
            LORA,
            vec![
                ("base_model.model.other.lora_A.weight", vec![2, 4], values(8, 0.0)),
                ("base_model.model.other.lora_B.weight", vec![3, 2], values(6, 0.0)),
            ],
            "does not have",
        ),
        (
            LORA,
            vec![("base_model.model.layer.q.hada_w1_a", vec![2], values(2, 0.0))],
            "neither a LoRA factor",
        ),
        (
            LORA,
            vec![(
                "base_model.model.layer.q.lora_magnitude_vector",
                vec![3],
                values(3, 0.0),
            )],
            "of the base model",
        ),
        ("{not json", good.clone(), "is not valid"),
        (
            r#"{"peft_type": "LORA", "lora_alpha": 8, "lora_bias": true}"#,
            good.clone(),
            "lora_bias",
        ),
        (
            r#"{"peft_type": "LORA", "lora_alpha": 8, "layer_replication": [[0, 2]]}"#,
            good.clone(),
            "layer_replication",
        ),
        (r#"{"peft_type": "LORA"}"#, good.clone(), "lora_alpha is missing"),
    ] {
        let err = refusal(config, &tensors);
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(err.contains("adapter"), "names the adapter: {err}");
    }
}

#[test]
fn a_pickled_adapter_is_refused_by_name() {
    let case = base_with(&[("layer.q.weight", vec![3, 4], values(12, 0.0))]);
    let dir = case.dir.path().join("pickled");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    put(&dir.join(ADAPTER_CONFIG), LORA.as_bytes());
    put(&dir.join("adapter_model.bin"), b"pickle");
    let err = Checkpoint::open_input(&dir, Some(&case.base))
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("adapter_model.bin") && err.contains("safetensors adapters only"),
        "{err}"
    );
}

#[test]
fn an_adapter_without_its_base_names_the_missing_option() {
    let case = base_with(&[("layer.q.weight", vec![3, 4], values(12, 0.0))]);
    let dir = adapter(case.dir.path(), LORA, &[]);
    let err = Checkpoint::open_input(&dir, None)
        .expect_err("needs a base")
        .to_string();
    assert!(err.contains("--pretrained"), "{err}");
}

#[test]
fn a_module_named_without_the_bases_prefix_is_found_by_its_unique_suffix() {
    let w = values(12, 0.0);
    let case = base_with(&[
        ("vision_model.layer.q.weight", vec![3, 4], w.clone()),
        ("text_model.x.weight", vec![2], values(2, 1.0)),
    ]);
    let (a, b) = (values(8, 2.0), values(6, 3.0));
    let dir = adapter(
        case.dir.path(),
        LORA,
        &q_factors(vec![2, 4], a.clone(), vec![3, 2], b.clone()),
    );
    let ckpt = Checkpoint::open_input(&dir, Some(&case.base)).unwrap_or_else(|e| panic!("{e}"));
    let want: Vec<f32> = w
        .iter()
        .zip(product(&b, &a, 3, 2, 4, 2.0))
        .map(|(w, d)| w + d)
        .collect();
    assert_eq!(read_all(&ckpt, "vision_model.layer.q.weight", 0, 12), want);
    // Two tensors ending in `.layer.q.weight`: no guess.
    let twice = base_with(&[
        ("one.layer.q.weight", vec![3, 4], w.clone()),
        ("two.layer.q.weight", vec![3, 4], w),
    ]);
    let dir = adapter(
        twice.dir.path(),
        LORA,
        &[
            ("base_model.model.layer.q.lora_A.weight", vec![2, 4], a),
            ("base_model.model.layer.q.lora_B.weight", vec![3, 2], b),
        ],
    );
    let err = Checkpoint::open_input(&dir, Some(&twice.base))
        .expect_err("ambiguous")
        .to_string();
    assert!(err.contains("does not have"), "{err}");
}
