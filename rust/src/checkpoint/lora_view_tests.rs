//! Adapters laid over other things than their base as it is stored: a view whose re-indexed tensors hold the
//! adapter's change already, and a targeted layer whose own weight the adapter saves (PEFT's embeddings).

use super::tests::{LORA, adapter, base_with, product, q_factors, read_all, shaped, values};
use super::*;
use crate::checkpoint::{View, ViewAdapter, ViewTensor};

#[test]
fn a_view_with_an_adapter_leaves_the_tensors_it_skips_as_the_view_has_them() {
    let case = base_with(&[
        ("layer.q.weight", vec![3, 4], values(12, 0.0)),
        ("head.weight", vec![2, 3], values(6, 1.0)),
    ]);
    let (a, b) = (values(8, 2.0), values(6, 3.0));
    let mut tensors = q_factors(vec![2, 4], a.clone(), vec![3, 2], b.clone());
    tensors.push(("base_model.model.head.weight", vec![2, 3], vec![9.0; 6]));
    let dir = adapter(case.dir.path(), LORA, &tensors);
    // The view's head has three rows (re-indexed, the adapter's saved copy already in them).
    let rows = case.dir.path().join("rows.safetensors");
    shaped(&rows, &[("head.weight", vec![3, 3], values(9, 4.0))]);
    let entry = |out: &str, path: &PathBuf| ViewTensor {
        out: out.into(),
        path: path.clone(),
        source: out.into(),
    };
    let mut view = View {
        tensors: vec![entry("layer.q.weight", &case.base), entry("head.weight", &rows)],
        adapter: Some(ViewAdapter {
            path: dir.clone(),
            skip: vec!["head.weight".into()],
        }),
    };
    let ckpt = view.open("view").unwrap_or_else(|e| panic!("{e}"));
    let delta = product(&b, &a, 3, 2, 4, 2.0);
    let want: Vec<f32> = values(12, 0.0).iter().zip(&delta).map(|(w, d)| w + d).collect();
    assert_eq!(read_all(&ckpt, "layer.q.weight", 0, 12), want);
    assert_eq!(read_all(&ckpt, "head.weight", 0, 9), values(9, 4.0));
    assert_eq!(ckpt.path, dir);
    view.adapter = view.adapter.map(|a| ViewAdapter { skip: vec![], ..a });
    let err = view.open("view").expect_err("shapes").to_string();
    assert!(err.contains("saved module"), "{err}");
}

#[test]
fn a_saved_base_layer_replaces_the_base_and_gets_the_modules_change() {
    let case = base_with(&[("layer.q.weight", vec![3, 4], values(12, 0.0))]);
    let (a, b) = (values(8, 2.0), values(6, 3.0));
    let mut tensors = q_factors(vec![2, 4], a.clone(), vec![3, 2], b.clone());
    tensors.push((
        "base_model.model.layer.q.base_layer.weight",
        vec![3, 4],
        values(12, 5.0),
    ));
    let dir = adapter(case.dir.path(), LORA, &tensors);
    let ckpt = Checkpoint::open_input(&dir, Some(&case.base)).unwrap_or_else(|e| panic!("{e}"));
    let delta = product(&b, &a, 3, 2, 4, 2.0);
    let want: Vec<f32> = values(12, 5.0).iter().zip(&delta).map(|(w, d)| w + d).collect();
    assert_eq!(read_all(&ckpt, "layer.q.weight", 0, 12), want);
}
