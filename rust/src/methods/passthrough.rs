//! Passthrough, after mergekit's `passthrough`: one model's tensors as they are, times `scale`. With a
//! layer map (mergekit's `slices`) it builds a frankenmerge: layers stacked from several models.

use crate::engine::{Chunk, Engine};
use crate::error::Result;
use crate::method::{ANY_F32, MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, Params};
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "passthrough",
    summary: "one model as it is, times a scale (mergekit's frankenmerges stack layers this way)",
    paper: "https://github.com/arcee-ai/mergekit",
    needs_base: false,
    min_models: 1,
    max_models: Some(1),
    extra_inputs: None,
    params: &[ParamDef {
        name: "scale",
        kind: ANY_F32,
        default: ParamDefault::Number(1.0),
        help: "factor applied to every tensor (mergekit's per-model scale)",
    }],
    build,
};

#[derive(Debug)]
struct Passthrough {
    scale: f32,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Passthrough { scale: p.f32("scale")? }))
}

impl MergeMethod for Passthrough {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.elementwise(false, writer, &|c| {
            self.copy(c);
            Ok(())
        })
    }
}

impl Passthrough {
    /// out = scale · θ (the exact input when scale is 1).
    fn copy(&self, chunk: &mut Chunk<'_>) {
        chunk.out.copy_from_slice(chunk.models[0]);
        if self.scale != 1.0 {
            chunk.out.iter_mut().for_each(|o| *o *= self.scale);
        }
    }
}
