//! Simple averaging: the mean of the fine-tuned models (the pretrained model takes no part).

use crate::engine::{Chunk, Engine};
use crate::error::Result;
use crate::method::{MergeMethod, MethodDef, MethodStats, Params, sum_into};
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "simple_average",
    summary: "mean of the fine-tuned models",
    paper: "https://arxiv.org/abs/2203.05482",
    needs_base: false,
    min_models: 2,
    max_models: None,
    extra_inputs: None,
    params: &[],
    build,
};

#[derive(Debug)]
struct SimpleAverage;

fn build(_: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(SimpleAverage))
}

impl MergeMethod for SimpleAverage {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.elementwise(false, writer, &|c| {
            average(c);
            Ok(())
        })
    }
}

/// out = Σᵢ θᵢ / n.
fn average(chunk: &mut Chunk<'_>) {
    sum_into(chunk.out, chunk.models);
    let n = chunk.models.len() as f32;
    for o in chunk.out.iter_mut() {
        *o /= n;
    }
}
