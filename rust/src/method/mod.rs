//! What a merge method is. Each method module under `methods/` declares a [`MethodDef`] (name, paper, what
//! it needs, its typed parameters with defaults and help) and a build function that turns checked
//! [`Params`] into a runnable [`MergeMethod`]. The table of every declaration ([`method_table`]) is the one
//! place the Python registry, the CLI options, the demo and the README's method table are generated from.

pub(crate) mod gta;
mod ops;
mod pair;
mod params;
pub(crate) mod precision;
pub(crate) mod sparsify;
pub(crate) mod subspace;
pub(crate) mod torch_sort;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::Engine;
use crate::error::{MergeError, Result};
use crate::plan::MergePlan;
use crate::writer::Writer;

pub(crate) use ops::{add_scaled_to_base, sum_into};
pub(crate) use pair::PairFold;
pub(crate) use params::{ANY_F32, tidy};
pub use params::{ParamDef, ParamDefault, ParamKind, Params};

/// The declaration of a merge method.
#[derive(Serialize)]
pub struct MethodDef {
    /// Name as the API and the CLI spell it.
    pub name: &'static str,
    /// One line saying what it computes.
    pub summary: &'static str,
    /// The paper (or reference implementation) it follows.
    pub paper: &'static str,
    /// Whether it reads the pretrained model θ₀.
    pub needs_base: bool,
    /// Fewest fine-tuned models it accepts.
    pub min_models: usize,
    /// Most fine-tuned models it accepts, if limited.
    pub max_models: Option<usize>,
    /// The parameter (a [`ParamKind::PathList`]) naming one extra checkpoint per fine-tuned model that is
    /// streamed alongside the models (e.g. Fisher merging's Fisher checkpoints).
    pub extra_inputs: Option<&'static str>,
    /// Parameters, in the order reports list them.
    pub params: &'static [ParamDef],
    /// Turn checked parameters into the runnable method.
    #[serde(skip)]
    pub(crate) build: fn(&Params) -> Result<Box<dyn MergeMethod>>,
}

impl fmt::Debug for MethodDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodDef")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A method with its parameters, ready to run on a plan.
pub(crate) trait MergeMethod: Send + Sync + fmt::Debug {
    /// Check the parameters against the number of fine-tuned models, before anything is read.
    fn validate(&self, _models: usize) -> Result<()> {
        Ok(())
    }

    /// Check per-tensor parameters against the plan, before anything is read.
    fn validate_plan(&self, _plan: &MergePlan) -> Result<()> {
        Ok(())
    }

    /// The parameters for reports, when they differ from the resolved declaration values.
    fn parameters(&self) -> Option<Value> {
        None
    }

    /// Merge every float tensor of the plan into `writer`.
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats>;
}

/// What a method found out while merging, for the report.
#[derive(Debug, Default, Clone, Serialize)]
pub struct MethodStats {
    /// TIES: the magnitude threshold of each task (global trim only), exact (f32 widened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ties_thresholds: Option<Vec<f64>>,
    /// TIES: the majority sign used where the elected sign was 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ties_majority_sign: Option<i8>,
}

/// A merge method with checked parameters.
#[derive(Debug)]
pub struct Method {
    def: &'static MethodDef,
    params: Params,
    kernel: Box<dyn MergeMethod>,
}

impl Method {
    /// The method called `name` (`-` and `_` are interchangeable) with `parameters` (missing ones take
    /// their declared defaults; unknown names, wrong types and out-of-range values are errors).
    pub fn new(name: &str, parameters: &Map<String, Value>) -> Result<Method> {
        let def = find(name)?;
        let params = Params::resolve(def.name, def.params, parameters)?;
        let kernel = (def.build)(&params)?;
        Ok(Method { def, params, kernel })
    }

    /// The declaration.
    pub fn def(&self) -> &'static MethodDef {
        self.def
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        self.def.name
    }

    /// The parameters, for reports and output metadata.
    pub fn parameters(&self) -> Value {
        self.kernel.parameters().unwrap_or_else(|| self.params.to_json())
    }

    /// Extra checkpoints streamed alongside the models (one per model), if the method has any.
    pub fn extra_inputs(&self) -> Vec<PathBuf> {
        self.def
            .extra_inputs
            .and_then(|name| self.params.paths(name))
            .unwrap_or_default()
    }

    /// Every file the parameters name (read by the method; an output must not overlap them).
    pub fn input_paths(&self) -> Vec<PathBuf> {
        let paths = self
            .def
            .params
            .iter()
            .filter(|p| matches!(p.kind, ParamKind::Path | ParamKind::PathList));
        paths
            .flat_map(|p| {
                let one = self.params.path(p.name).into_iter();
                one.chain(self.params.paths(p.name).unwrap_or_default())
            })
            .collect()
    }

    /// Check the request's shape against the declaration and the parameters, before anything is read (a dry run
    /// calls it too).
    pub fn validate(&self, models: usize) -> Result<()> {
        let def = self.def;
        if models < def.min_models {
            return Err(MergeError::arg(format!(
                "{} needs at least {} fine-tuned models, got {models}",
                def.name, def.min_models
            )));
        }
        if let Some(max) = def.max_models.filter(|&max| models > max) {
            return Err(MergeError::arg(format!(
                "{} takes at most {max} fine-tuned models, got {models}",
                def.name
            )));
        }
        if let Some(name) = def.extra_inputs {
            let given = self.extra_inputs().len();
            if given != models {
                return Err(MergeError::arg(format!(
                    "{}: {given} {name} checkpoints given for {models} models",
                    def.name
                )));
            }
        }
        self.kernel.validate(models)
    }

    pub(crate) fn validate_plan(&self, plan: &MergePlan) -> Result<()> {
        self.kernel.validate_plan(plan)
    }

    pub(crate) fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        self.kernel.run(engine, writer)
    }
}

/// Every method's declaration, in name order.
pub fn method_table() -> &'static [&'static MethodDef] {
    crate::methods::TABLE
}

/// The declaration of the method called `name`.
pub fn find(name: &str) -> Result<&'static MethodDef> {
    let key = name.replace('-', "_").to_lowercase();
    method_table().iter().copied().find(|d| d.name == key).ok_or_else(|| {
        let known: Vec<&str> = method_table().iter().map(|d| d.name).collect();
        MergeError::arg(format!("unknown method '{name}' (known: {})", known.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_consistent() {
        let names: Vec<&str> = method_table().iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "method names are unique and sorted");
        for def in method_table() {
            assert!(def.paper.starts_with("https://"), "{}: paper link", def.name);
            assert!(def.min_models >= 1, "{}", def.name);
            if let Some(extra) = def.extra_inputs {
                let p = def.params.iter().find(|p| p.name == extra);
                assert!(matches!(p.map(|p| p.kind), Some(ParamKind::PathList)), "{}", def.name);
            }
        }
    }

    #[test]
    fn shared_parameter_names_have_one_kind() {
        let all: Vec<&ParamDef> = method_table().iter().flat_map(|d| d.params.iter()).collect();
        for a in &all {
            for b in all.iter().filter(|b| b.name == a.name) {
                assert_eq!(
                    std::mem::discriminant(&a.kind),
                    std::mem::discriminant(&b.kind),
                    "{}",
                    a.name
                );
            }
        }
    }

    #[test]
    fn finds_methods_by_either_spelling() {
        assert_eq!(find("task-arithmetic").map(|d| d.name).ok(), Some("task_arithmetic"));
        let err = find("slerpy").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("unknown method 'slerpy' (known: "), "{err}");
    }

    #[test]
    fn every_method_builds_from_its_defaults_where_it_has_no_required_parameter() {
        for def in method_table() {
            let required = def.params.iter().any(|p| p.default == ParamDefault::Required);
            let built = Method::new(def.name, &Map::new());
            assert_eq!(built.is_ok(), !required, "{}: {:?}", def.name, built.err());
        }
    }
}
