//! Reading one pattern input from a `.npy` file (npyz). Checks dtype, order
//! and shape against the declaration before reading the data, so a bad file
//! gives a message naming the input and the file, never a huge allocation.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use lacuna_ir::{Dims, InputDecl, InputKind, InputValue, ScalarType};
use npyz::{DType, NpyFile, Order, TypeChar};

use crate::error::CliError;

/// One dimension of an expected shape; `None` means any size.
type ExpectedDim = Option<u64>;

/// The concrete shape `decl` needs under `dims`, or None for launch scalars (any of `()` or `(1,)`).
fn expected_dims(decl: &InputDecl, dims: Dims) -> Option<Vec<ExpectedDim>> {
    let (b, h) = (dims.batch as u64, dims.heads as u64);
    match decl.kind {
        InputKind::QueryTensor => Some(vec![Some(b), Some(h), Some(dims.q_len as u64)]),
        InputKind::KeyTensor => Some(vec![Some(b), Some(h), Some(dims.kv_len as u64)]),
        InputKind::HeadScalar(_) => Some(vec![Some(h)]),
        InputKind::BlockList { block } => {
            Some(vec![Some(b), Some(h), Some(dims.q_len.div_ceil(block.max(1) as usize) as u64), None])
        }
        InputKind::LaunchScalar(_) => None,
    }
}

fn show(expected: &[ExpectedDim]) -> String {
    let parts: Vec<String> = expected.iter().map(|d| d.map_or("*".into(), |n| n.to_string())).collect();
    format!("[{}]", parts.join(", "))
}

/// Reads `path` as the value of input `decl` for a problem of shape `dims`.
pub fn read_input(decl: &InputDecl, path: &Path, dims: Dims) -> Result<InputValue, CliError> {
    let name = decl.name.clone();
    let open_err = |source| CliError::NpyOpen { name: name.clone(), path: path.to_path_buf(), source };
    let format_err = |source| CliError::NpyFormat { name: name.clone(), path: path.to_path_buf(), source };
    let file = File::open(path).map_err(open_err)?;
    let file_len = file.metadata().map_err(open_err)?.len();
    let npy = NpyFile::new(BufReader::new(file)).map_err(format_err)?;

    let want = decl.kind.value_type();
    let (expected, numpy) = match want {
        ScalarType::F32 => ("f32 ('<f4')", "float32"),
        _ => ("i32 ('<i4')", "int32"),
    };
    let dtype = npy.dtype();
    let ok_dtype = match &dtype {
        DType::Plain(t) => {
            let char_ok = match want {
                ScalarType::F32 => t.type_char() == TypeChar::Float,
                _ => t.type_char() == TypeChar::Int,
            };
            char_ok && t.size_field() == 4
        }
        _ => false,
    };
    if !ok_dtype {
        return Err(CliError::NpyDtype { name, path: path.to_path_buf(), expected, numpy, found: dtype.descr() });
    }

    let shape = npy.shape().to_vec();
    let shape_ok = match expected_dims(decl, dims) {
        Some(exp) => exp.len() == shape.len() && exp.iter().zip(&shape).all(|(e, s)| e.is_none_or(|e| e == *s)),
        None => shape.is_empty() || shape == [1],
    };
    if !shape_ok {
        let concrete = expected_dims(decl, dims).map_or("[] or [1]".into(), |e| show(&e));
        return Err(CliError::NpyShape { name, path: path.to_path_buf(), expected: decl.expected_shape(), concrete, found: shape });
    }
    if shape.len() > 1 && npy.order() == Order::Fortran {
        return Err(CliError::NpyFortran { name, path: path.to_path_buf() });
    }
    // A header may promise more data than the file holds; check before allocating for it.
    let count = npy.len();
    if count.checked_mul(4).is_none_or(|bytes| bytes > file_len) {
        let source = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("the header promises {count} elements but the file is only {file_len} bytes"));
        return Err(format_err(source));
    }

    let usize_shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let scalar = matches!(decl.kind, InputKind::LaunchScalar(_));
    Ok(match want {
        ScalarType::F32 => {
            let data: Vec<f32> = npy.into_vec().map_err(format_err)?;
            match (scalar, data.first()) {
                (true, Some(v)) => InputValue::F32(*v),
                _ => InputValue::F32Array { shape: usize_shape, data },
            }
        }
        _ => {
            let data: Vec<i32> = npy.into_vec().map_err(format_err)?;
            match (scalar, data.first()) {
                (true, Some(v)) => InputValue::I32(*v),
                _ => InputValue::I32Array { shape: usize_shape, data },
            }
        }
    })
}
