//! `NAME=VALUE` arguments (`--param`, `--input`) and turning a `--param`
//! value into an input value of the declared type. Reads no files.

use std::collections::BTreeMap;

use lacuna_ir::{InputDecl, InputKind, InputValue, ScalarType};

use crate::error::CliError;

/// clap value parser for `NAME=VALUE`.
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_string(), value.trim().to_string())),
        _ => Err(format!("expected NAME=VALUE (e.g. `window=256`), got `{s}`")),
    }
}

/// clap value parser for sizes and lengths: a positive integer.
pub fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a positive integer, got `{s}`")),
    }
}

/// Collects `NAME=VALUE` pairs, refusing a name given twice.
pub fn collect(pairs: &[(String, String)], flag: &'static str) -> Result<BTreeMap<String, String>, CliError> {
    let mut map = BTreeMap::new();
    for (name, value) in pairs {
        if map.insert(name.clone(), value.clone()).is_some() {
            return Err(CliError::Duplicate { flag, name: name.clone() });
        }
    }
    Ok(map)
}

/// Every name `--param` accepts for a pattern: scalar and per-head inputs, then knobs.
pub fn accepted_names(inputs: &[InputDecl], knobs: &[(&str, &str)]) -> String {
    let mut names: Vec<String> = inputs
        .iter()
        .filter(|d| is_param_kind(d.kind))
        .map(|d| format!("{} ({})", d.name, d.expected_shape()))
        .collect();
    names.extend(knobs.iter().map(|(k, _)| format!("{k} (knob)")));
    if names.is_empty() {
        "(nothing)".into()
    } else {
        names.join(", ")
    }
}

/// Inputs that can be written on the command line rather than read from a file.
pub fn is_param_kind(kind: InputKind) -> bool {
    matches!(kind, InputKind::LaunchScalar(_) | InputKind::HeadScalar(_))
}

/// The value of `--param NAME=VALUE` for a declared input; `heads` sizes per-head arrays
/// (None: any count is accepted, for commands without a problem shape).
pub fn to_input_value(decl: &InputDecl, value: &str, heads: Option<usize>) -> Result<InputValue, CliError> {
    let bad = |problem: String| CliError::BadParamValue {
        name: decl.name.clone(),
        value: value.to_string(),
        problem,
        shape: decl.expected_shape(),
    };
    match decl.kind {
        InputKind::LaunchScalar(ty) => scalar(ty, value).map_err(bad),
        InputKind::HeadScalar(ty) => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            let values = items.iter().map(|s| scalar(ty, s)).collect::<Result<Vec<_>, _>>().map_err(bad)?;
            let n = match heads {
                Some(h) if values.len() == 1 => h,
                Some(h) if values.len() == h => h,
                Some(h) => return Err(CliError::HeadCount { name: decl.name.clone(), got: values.len(), heads: h }),
                None => values.len(),
            };
            Ok(match ty {
                ScalarType::F32 => {
                    let data: Vec<f32> = values.iter().map(as_f32).cycle().take(n).collect();
                    InputValue::F32Array { shape: vec![n], data }
                }
                _ => {
                    let data: Vec<i32> = values.iter().map(as_i32).cycle().take(n).collect();
                    InputValue::I32Array { shape: vec![n], data }
                }
            })
        }
        InputKind::QueryTensor | InputKind::KeyTensor | InputKind::BlockList { .. } => {
            Err(CliError::ParamNotScalar { name: decl.name.clone(), shape: decl.expected_shape() })
        }
    }
}

fn scalar(ty: ScalarType, s: &str) -> Result<InputValue, String> {
    match ty {
        ScalarType::F32 => match s.parse::<f32>() {
            Ok(v) if v.is_nan() => Err("NaN is not a usable value".into()),
            Ok(v) => Ok(InputValue::F32(v)),
            Err(_) => Err(format!("`{s}` is not a number")),
        },
        _ => s.parse::<i32>().map(InputValue::I32).map_err(|_| {
            if s.parse::<f64>().is_ok() {
                format!("`{s}` is not an integer in i32 range")
            } else {
                format!("`{s}` is not an integer")
            }
        }),
    }
}

fn as_f32(v: &InputValue) -> f32 {
    match v {
        InputValue::F32(x) => *x,
        InputValue::I32(x) => *x as f32,
        _ => 0.0,
    }
}

fn as_i32(v: &InputValue) -> i32 {
    match v {
        InputValue::I32(x) => *x,
        _ => 0,
    }
}

/// A short description of a bound value for the `inputs:` lines.
pub fn describe(v: &InputValue) -> String {
    fn list<T: std::fmt::Display>(data: &[T]) -> String {
        let shown: Vec<String> = data.iter().take(8).map(|x| x.to_string()).collect();
        let more = if data.len() > 8 { ", ..." } else { "" };
        format!("[{}{more}]", shown.join(", "))
    }
    match v {
        InputValue::I32(x) => format!("= {x}"),
        InputValue::F32(x) => format!("= {x}"),
        InputValue::I32Array { shape, data } if shape.len() == 1 => format!("= {}", list(data)),
        InputValue::F32Array { shape, data } if shape.len() == 1 => format!("= {}", list(data)),
        InputValue::I32Array { shape, .. } => format!("i32 array {shape:?}"),
        InputValue::F32Array { shape, .. } => format!("f32 array {shape:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, kind: InputKind) -> InputDecl {
        InputDecl { name: name.into(), kind }
    }

    #[test]
    fn head_values_broadcast_or_one_per_head() {
        let d = decl("alpha", InputKind::HeadScalar(ScalarType::I32));
        assert_eq!(
            to_input_value(&d, "7", Some(3)).ok(),
            Some(InputValue::I32Array { shape: vec![3], data: vec![7, 7, 7] })
        );
        assert_eq!(
            to_input_value(&d, "1, 2,3", Some(3)).ok(),
            Some(InputValue::I32Array { shape: vec![3], data: vec![1, 2, 3] })
        );
        assert!(matches!(to_input_value(&d, "1,2", Some(3)), Err(CliError::HeadCount { got: 2, heads: 3, .. })));
    }

    #[test]
    fn scalar_types_are_checked() {
        let i = decl("window", InputKind::LaunchScalar(ScalarType::I32));
        let f = decl("scale", InputKind::LaunchScalar(ScalarType::F32));
        assert_eq!(to_input_value(&i, "-3", None).ok(), Some(InputValue::I32(-3)));
        assert!(matches!(to_input_value(&i, "2.5", None), Err(CliError::BadParamValue { .. })));
        assert_eq!(to_input_value(&f, "2", None).ok(), Some(InputValue::F32(2.0)));
        assert!(matches!(to_input_value(&f, "nan", None), Err(CliError::BadParamValue { .. })));
        let t = decl("pos", InputKind::QueryTensor);
        assert!(matches!(to_input_value(&t, "1", None), Err(CliError::ParamNotScalar { .. })));
    }

    #[test]
    fn assignments_need_a_name() {
        assert_eq!(parse_assignment("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_assignment("=3").is_err());
        assert!(parse_assignment("window").is_err());
        assert!(parse_positive("0").is_err());
    }
}
