//! Method parameters, declared once: name, kind, default and help. The declarations are the single source
//! of the defaults; [`Params::resolve`] checks what a caller gave against them (unknown names, types,
//! ranges, required values) before anything is read, and the Python registry and CLI are generated from them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{MergeError, Result};

/// What values a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamKind {
    /// A float32 number in `[min, max]` (reported as the decimal the user typed).
    F32 {
        /// Smallest value accepted.
        min: f64,
        /// Largest value accepted.
        max: f64,
    },
    /// A float64 number in `[min, max]`.
    F64 {
        /// Smallest value accepted.
        min: f64,
        /// Largest value accepted.
        max: f64,
    },
    /// A non-negative integer.
    U64,
    /// true or false.
    Bool,
    /// One of a fixed set of names.
    Choice {
        /// The accepted names (`_` and `-` are interchangeable on input).
        choices: &'static [&'static str],
    },
    /// One finite number per fine-tuned model.
    FloatList,
    /// One finite number, or one per fine-tuned model.
    FloatOrList,
    /// A list of tensor names.
    NameList,
    /// A file path.
    Path,
    /// One file path per fine-tuned model.
    PathList,
}

/// A parameter's default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamDefault {
    /// The caller must give it.
    Required,
    /// Optional, with no default value.
    Absent,
    /// A number.
    Number(f64),
    /// An integer.
    Integer(u64),
    /// A flag.
    Flag(bool),
    /// A name.
    Name(&'static str),
}

/// One parameter of a method.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    /// Name as the API and the CLI (with `-`) spell it.
    pub name: &'static str,
    /// Accepted values.
    pub kind: ParamKind,
    /// Default.
    pub default: ParamDefault,
    /// One line of help.
    pub help: &'static str,
}

impl Serialize for ParamDef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            name: &'a str,
            kind: &'a ParamKind,
            default: &'a ParamDefault,
            required: bool,
            help: &'a str,
        }
        View {
            name: self.name,
            kind: &self.kind,
            default: &self.default,
            required: self.default == ParamDefault::Required,
            help: self.help,
        }
        .serialize(serializer)
    }
}

/// Any finite float32 value.
pub(crate) const ANY_F32: ParamKind = ParamKind::F32 {
    min: -(f32::MAX as f64),
    max: f32::MAX as f64,
};

/// The parameters of one request, checked against a method's declarations, with defaults filled in.
#[derive(Debug, Clone)]
pub struct Params {
    method: &'static str,
    values: Map<String, Value>,
    given: BTreeSet<String>,
}

impl Params {
    /// Check `given` against `defs` for `method` and fill in the defaults.
    pub fn resolve(method: &'static str, defs: &[ParamDef], given: &Map<String, Value>) -> Result<Params> {
        if let Some(unknown) = given.keys().find(|k| !defs.iter().any(|d| d.name == k.as_str())) {
            let accepted: Vec<&str> = defs.iter().map(|d| d.name).collect();
            let accepted = if accepted.is_empty() {
                "no parameters".to_string()
            } else {
                accepted.join(", ")
            };
            return Err(MergeError::arg(format!(
                "{method} does not take '{unknown}' (it takes {accepted})"
            )));
        }
        let mut values = Map::new();
        let mut present = BTreeSet::new();
        for def in defs {
            let value = match given.get(def.name).filter(|v| !v.is_null()) {
                Some(v) => {
                    present.insert(def.name.to_string());
                    Some(check(method, def, v)?)
                }
                None => default_value(method, def)?,
            };
            if let Some(v) = value {
                values.insert(def.name.to_string(), v);
            }
        }
        Ok(Params {
            method,
            values,
            given: present,
        })
    }

    /// Whether the caller gave `name` (rather than its default applying).
    pub fn given(&self, name: &str) -> bool {
        self.given.contains(name)
    }

    /// The resolved values, in declaration order (for reports and output metadata).
    pub fn to_json(&self) -> Value {
        Value::Object(self.values.clone())
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn missing(&self, name: &str) -> MergeError {
        MergeError::Internal(format!("{}: parameter '{name}' read but not declared", self.method))
    }

    /// A number parameter as f32 (declared F32: the range check guarantees it fits).
    pub fn f32(&self, name: &str) -> Result<f32> {
        Ok(self.f64(name)? as f32)
    }

    /// A number parameter.
    pub fn f64(&self, name: &str) -> Result<f64> {
        self.get(name).and_then(Value::as_f64).ok_or_else(|| self.missing(name))
    }

    /// An integer parameter.
    pub fn u64(&self, name: &str) -> Result<u64> {
        self.get(name).and_then(Value::as_u64).ok_or_else(|| self.missing(name))
    }

    /// A flag.
    pub fn bool(&self, name: &str) -> Result<bool> {
        self.get(name)
            .and_then(Value::as_bool)
            .ok_or_else(|| self.missing(name))
    }

    /// A choice.
    pub fn choice(&self, name: &str) -> Result<&str> {
        self.get(name).and_then(Value::as_str).ok_or_else(|| self.missing(name))
    }

    /// A list of numbers, if given or defaulted.
    pub fn floats(&self, name: &str) -> Option<Vec<f64>> {
        let list = self.get(name)?.as_array()?;
        Some(list.iter().filter_map(Value::as_f64).collect())
    }

    /// A list of names, if given.
    pub fn names(&self, name: &str) -> Option<Vec<String>> {
        let list = self.get(name)?.as_array()?;
        Some(list.iter().filter_map(Value::as_str).map(String::from).collect())
    }

    /// A path, if given.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).and_then(Value::as_str).map(PathBuf::from)
    }

    /// A list of paths, if given.
    pub fn paths(&self, name: &str) -> Option<Vec<PathBuf>> {
        let list = self.get(name)?.as_array()?;
        Some(list.iter().filter_map(Value::as_str).map(PathBuf::from).collect())
    }
}

fn default_value(method: &str, def: &ParamDef) -> Result<Option<Value>> {
    Ok(match def.default {
        ParamDefault::Required => {
            return Err(MergeError::arg(format!("{method} needs '{}' ({})", def.name, def.help)));
        }
        ParamDefault::Absent => None,
        ParamDefault::Number(x) => Some(number(def.kind, x)),
        ParamDefault::Integer(x) => Some(Value::from(x)),
        ParamDefault::Flag(x) => Some(Value::from(x)),
        ParamDefault::Name(x) => Some(Value::from(x)),
    })
}

/// A number as the report shows it: float32 parameters as the shortest decimal of their f32 value.
fn number(kind: ParamKind, x: f64) -> Value {
    match kind {
        ParamKind::F32 { .. } => Value::from(tidy(x as f32)),
        _ => Value::from(x),
    }
}

/// An f32 as the decimal a user typed (0.3, not 0.30000001192092896).
pub(crate) fn tidy(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Check one given value against its declaration; returns its normalised form.
fn check(method: &str, def: &ParamDef, value: &Value) -> Result<Value> {
    let fail = |expected: String| {
        MergeError::arg(format!(
            "{method}: parameter '{}' must be {expected} (got {value})",
            def.name
        ))
    };
    match def.kind {
        ParamKind::F32 { min, max } | ParamKind::F64 { min, max } => {
            let x = value.as_f64().ok_or_else(|| fail("a number".into()))?;
            if !(min..=max).contains(&x) {
                return Err(fail(range(min, max)));
            }
            Ok(number(def.kind, x))
        }
        ParamKind::U64 => value
            .as_u64()
            .map(Value::from)
            .ok_or_else(|| fail("a non-negative integer".into())),
        ParamKind::Bool => value
            .as_bool()
            .map(Value::from)
            .ok_or_else(|| fail("true or false".into())),
        ParamKind::Choice { choices } => {
            let name = value.as_str().unwrap_or_default().replace('_', "-");
            choices
                .iter()
                .find(|c| c.replace('_', "-") == name)
                .map(|c| Value::from(*c))
                .ok_or_else(|| fail(format!("one of {}", choices.join(", "))))
        }
        ParamKind::FloatOrList if value.is_number() => value
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Value::from)
            .ok_or_else(|| fail("a finite number".into())),
        ParamKind::FloatList | ParamKind::FloatOrList => {
            let list = value.as_array().ok_or_else(|| fail("a list of numbers".into()))?;
            let numbers: Option<Vec<f64>> = list.iter().map(Value::as_f64).collect();
            let numbers = numbers
                .filter(|n| n.iter().all(|x| x.is_finite()))
                .ok_or_else(|| fail("a list of finite numbers".into()))?;
            Ok(Value::from(numbers))
        }
        ParamKind::NameList => match value.as_array() {
            Some(list) if list.iter().all(Value::is_string) => Ok(value.clone()),
            _ => Err(fail("a list of tensor names".into())),
        },
        ParamKind::Path => value.as_str().map(Value::from).ok_or_else(|| fail("a path".into())),
        ParamKind::PathList => {
            let list = value.as_array().ok_or_else(|| fail("a list of paths".into()))?;
            if list.iter().all(Value::is_string) {
                Ok(value.clone())
            } else {
                Err(fail("a list of paths".into()))
            }
        }
    }
}

fn range(min: f64, max: f64) -> String {
    match (min.abs() >= f32::MAX as f64, max >= f32::MAX as f64) {
        (true, true) => "a finite number".into(),
        (false, true) => format!("a number ≥ {min}"),
        _ => format!("a number in [{min}, {max}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFS: &[ParamDef] = &[
        ParamDef {
            name: "scaling_factor",
            kind: ANY_F32,
            default: ParamDefault::Number(0.3),
            help: "λ",
        },
        ParamDef {
            name: "threshold",
            kind: ParamKind::F64 { min: 0.0, max: 100.0 },
            default: ParamDefault::Number(20.0),
            help: "percent kept",
        },
        ParamDef {
            name: "trim",
            kind: ParamKind::Choice {
                choices: &["global", "per-tensor"],
            },
            default: ParamDefault::Name("global"),
            help: "scope",
        },
        ParamDef {
            name: "weights",
            kind: ParamKind::FloatList,
            default: ParamDefault::Absent,
            help: "weights",
        },
    ];

    fn resolve(json: &str) -> Result<Params> {
        let given: Map<String, Value> = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        Params::resolve("m", DEFS, &given)
    }

    fn message(json: &str) -> String {
        resolve(json).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn fills_defaults_in_declaration_order() {
        let p = resolve(r#"{"threshold": 10}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.to_json().to_string(),
            r#"{"scaling_factor":0.3,"threshold":10.0,"trim":"global"}"#
        );
        assert!(p.given("threshold") && !p.given("scaling_factor"));
        assert_eq!(p.f32("scaling_factor").ok(), Some(0.3));
        assert_eq!(p.floats("weights"), None);
    }

    #[test]
    fn normalises_choices_and_f32_values() {
        let p = resolve(r#"{"trim": "per_tensor", "scaling_factor": 0.1}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.choice("trim").ok(), Some("per-tensor"));
        assert_eq!(p.to_json()["scaling_factor"], Value::from(0.1));
    }

    #[test]
    fn rejects_unknown_wrong_and_out_of_range_values() {
        assert!(message(r#"{"lambda": 1}"#).contains("does not take 'lambda'"));
        assert!(message(r#"{"threshold": "x"}"#).contains("must be a number"));
        assert!(message(r#"{"threshold": 101}"#).contains("in [0, 100]"));
        assert!(message(r#"{"scaling_factor": 1e39}"#).contains("finite number"));
        assert!(message(r#"{"trim": "median"}"#).contains("one of global, per-tensor"));
        assert!(message(r#"{"weights": [1, "a"]}"#).contains("list of finite numbers"));
    }

    #[test]
    fn required_parameters_must_be_given() {
        let defs = [ParamDef {
            name: "weights",
            kind: ParamKind::FloatList,
            default: ParamDefault::Required,
            help: "one weight per model",
        }];
        let err = Params::resolve("w", &defs, &Map::new()).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("w needs 'weights' (one weight per model)"));
    }
}
