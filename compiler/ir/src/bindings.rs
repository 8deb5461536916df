//! Launch-time values for a pattern's inputs, checked against its declaration.

use std::collections::BTreeMap;

use crate::expr::InputId;
use crate::pattern::PatternIr;
use crate::types::{InputDecl, InputKind, ScalarType};

/// The problem shape one mask is evaluated over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
}

impl Dims {
    pub fn new(batch: usize, heads: usize, q_len: usize, kv_len: usize) -> Self {
        Self { batch, heads, q_len, kv_len }
    }
}

/// A value supplied for one input. Tensors are row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum InputValue {
    I32(i32),
    F32(f32),
    /// An i32 array with its shape.
    I32Array { shape: Vec<usize>, data: Vec<i32> },
    /// An f32 array with its shape.
    F32Array { shape: Vec<usize>, data: Vec<f32> },
}

impl InputValue {
    fn describe(&self) -> String {
        match self {
            InputValue::I32(_) => "an i32 scalar".into(),
            InputValue::F32(_) => "an f32 scalar".into(),
            InputValue::I32Array { shape, .. } => format!("an i32 array of shape {shape:?}"),
            InputValue::F32Array { shape, .. } => format!("an f32 array of shape {shape:?}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("pattern `{pattern}` needs input `{name}` ({shape}); pass it (on the CLI: `--param {name}=VALUE` for scalars, `--input {name}=FILE.npy` for arrays)")]
    Missing { pattern: String, name: String, shape: &'static str },
    #[error("pattern `{pattern}` has no input `{name}`; its inputs are: {known}")]
    Unknown { pattern: String, name: String, known: String },
    #[error("input `{name}` must be {expected}, got {got}")]
    WrongShape { name: String, expected: String, got: String },
    #[error("input `{name}` must be {expected}, got {got}")]
    WrongType { name: String, expected: String, got: String },
    #[error("block list `{name}` holds key block {value} at {at:?}, outside 0..{k_blocks} (use -1 for an unused slot)")]
    BlockOutOfRange { name: String, value: i32, at: [usize; 4], k_blocks: usize },
    #[error("dimensions must be positive, got batch={batch}, heads={heads}, q_len={q_len}, kv_len={kv_len}")]
    EmptyDims { batch: usize, heads: usize, q_len: usize, kv_len: usize },
}

/// Bound values in declaration order; every one checked against `Dims`.
#[derive(Clone, Debug)]
pub struct Bindings {
    dims: Dims,
    values: Vec<InputValue>,
}

impl Bindings {
    /// Checks `values` (by input name) against the pattern's declaration and `dims`.
    pub fn new(p: &PatternIr, dims: Dims, mut values: BTreeMap<String, InputValue>) -> Result<Self, BindError> {
        if dims.batch == 0 || dims.heads == 0 || dims.q_len == 0 || dims.kv_len == 0 {
            let Dims { batch, heads, q_len, kv_len } = dims;
            return Err(BindError::EmptyDims { batch, heads, q_len, kv_len });
        }
        let mut bound = Vec::with_capacity(p.inputs().len());
        for decl in p.inputs() {
            let v = values.remove(&decl.name).ok_or_else(|| BindError::Missing {
                pattern: p.name().into(),
                name: decl.name.clone(),
                shape: decl.expected_shape(),
            })?;
            check_value(decl, &v, dims)?;
            bound.push(v);
        }
        if let Some(name) = values.keys().next() {
            let known: Vec<&str> = p.inputs().iter().map(|d| d.name.as_str()).collect();
            return Err(BindError::Unknown {
                pattern: p.name().into(),
                name: name.clone(),
                known: if known.is_empty() { "(none)".into() } else { known.join(", ") },
            });
        }
        Ok(Self { dims, values: bound })
    }

    pub fn dims(&self) -> Dims {
        self.dims
    }

    pub fn value(&self, id: InputId) -> &InputValue {
        &self.values[id.index()]
    }

    /// An i32 scalar-like read: launch scalar, head scalar at `h`, or tensor at `[b, h, i]`.
    pub fn read_i32(&self, id: InputId, b: usize, h: usize, i: usize) -> i32 {
        match &self.values[id.index()] {
            InputValue::I32(v) => *v,
            InputValue::I32Array { shape, data } if shape.len() == 1 => data[h],
            InputValue::I32Array { data, .. } => data[(b * self.dims.heads + h) * self.len_of(data) + i],
            other => unreachable!("checked at bind time: {other:?}"),
        }
    }

    fn len_of(&self, data: &[i32]) -> usize {
        data.len() / (self.dims.batch * self.dims.heads)
    }

    pub fn read_f32(&self, id: InputId, h: usize) -> f32 {
        match &self.values[id.index()] {
            InputValue::F32(v) => *v,
            InputValue::F32Array { data, .. } => data[h],
            other => unreachable!("checked at bind time: {other:?}"),
        }
    }

    /// The slice of a `(B, H, N)` tensor for one (b, h).
    pub fn row(&self, id: InputId, b: usize, h: usize) -> &[i32] {
        match &self.values[id.index()] {
            InputValue::I32Array { shape, data } if shape.len() == 3 => {
                let n = shape[2];
                &data[(b * shape[1] + h) * n..][..n]
            }
            other => unreachable!("checked at bind time: {other:?}"),
        }
    }

    /// The selected key blocks of one query block of a block-list input.
    pub fn block_list(&self, id: InputId, b: usize, h: usize, q_block: usize) -> &[i32] {
        match &self.values[id.index()] {
            InputValue::I32Array { shape, data } if shape.len() == 4 => {
                let w = shape[3];
                &data[((b * shape[1] + h) * shape[2] + q_block) * w..][..w]
            }
            other => unreachable!("checked at bind time: {other:?}"),
        }
    }
}

fn check_value(decl: &InputDecl, v: &InputValue, dims: Dims) -> Result<(), BindError> {
    let name = &decl.name;
    let wrong_type = |expected: &str| BindError::WrongType {
        name: name.clone(),
        expected: expected.into(),
        got: v.describe(),
    };
    let wrong_shape = |expected: String| BindError::WrongShape { name: name.clone(), expected, got: v.describe() };
    match decl.kind {
        InputKind::LaunchScalar(ScalarType::F32) => match v {
            InputValue::F32(_) => Ok(()),
            _ => Err(wrong_type("an f32 scalar")),
        },
        InputKind::LaunchScalar(_) => match v {
            InputValue::I32(_) => Ok(()),
            _ => Err(wrong_type("an i32 scalar")),
        },
        InputKind::HeadScalar(ty) => {
            let shape = match (ty, v) {
                (ScalarType::F32, InputValue::F32Array { shape, .. }) => shape,
                (ScalarType::I32, InputValue::I32Array { shape, .. }) => shape,
                _ => return Err(wrong_type(&format!("a {ty} array of shape [{}] (one per head)", dims.heads))),
            };
            if shape != &[dims.heads] {
                return Err(wrong_shape(format!("an array of shape [{}] (one per head)", dims.heads)));
            }
            Ok(())
        }
        InputKind::QueryTensor | InputKind::KeyTensor => {
            let n = if decl.kind == InputKind::QueryTensor { dims.q_len } else { dims.kv_len };
            let expected = format!("an i32 array of shape [{}, {}, {}] (B, H, {})", dims.batch, dims.heads, n,
                if decl.kind == InputKind::QueryTensor { "Nq" } else { "Nk" });
            match v {
                InputValue::I32Array { shape, .. } if shape == &[dims.batch, dims.heads, n] => Ok(()),
                InputValue::I32Array { .. } => Err(wrong_shape(expected)),
                _ => Err(wrong_type(&expected)),
            }
        }
        InputKind::BlockList { block } => {
            let block = block as usize;
            let (qb, kb) = (dims.q_len.div_ceil(block), dims.kv_len.div_ceil(block));
            let expected = format!(
                "an i32 array of shape [{}, {}, {qb}, max_selected] (B, H, ceil(Nq/{block}), max_selected)",
                dims.batch, dims.heads
            );
            match v {
                InputValue::I32Array { shape, data }
                    if shape.len() == 4 && shape[..3] == [dims.batch, dims.heads, qb] =>
                {
                    for (i, &x) in data.iter().enumerate() {
                        if x < -1 || x >= kb as i32 {
                            let w = shape[3].max(1);
                            let at = [i / (w * qb * dims.heads), i / (w * qb) % dims.heads, i / w % qb, i % w];
                            return Err(BindError::BlockOutOfRange { name: name.clone(), value: x, at, k_blocks: kb });
                        }
                    }
                    Ok(())
                }
                InputValue::I32Array { .. } => Err(wrong_shape(expected)),
                _ => Err(wrong_type(&expected)),
            }
        }
    }
}
