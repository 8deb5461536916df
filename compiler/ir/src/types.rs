//! Value types and the kinds of named inputs a pattern may declare.

use std::fmt;

/// The type of a value inside a pattern predicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ScalarType {
    Bool,
    I32,
    F32,
}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScalarType::Bool => "bool",
            ScalarType::I32 => "i32",
            ScalarType::F32 => "f32",
        })
    }
}

/// Where an input lives and how it is indexed.
///
/// Tensors are always i32 (positions, bucket ids); scalars may be i32 or f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum InputKind {
    /// One i32 per query token, shaped `(B, H, Nq)`, read as `name[q]`.
    QueryTensor,
    /// One i32 per key token, shaped `(B, H, Nk)`, read as `name[k]`.
    KeyTensor,
    /// One value per head, shaped `(H,)`, read as `name[h]`.
    HeadScalar(ScalarType),
    /// One value per launch (a length, a window), read as `name`.
    LaunchScalar(ScalarType),
    /// Selected key blocks per query block, shaped `(B, H, ceil(Nq/block), max_selected)`
    /// of i32 key-block indices, `-1` marking unused slots. Read as `name[q, k]`:
    /// true when the block holding `k` is listed for the block holding `q`.
    BlockList { block: u32 },
}

impl InputKind {
    /// The type of one element read from this input.
    pub fn value_type(self) -> ScalarType {
        match self {
            InputKind::QueryTensor | InputKind::KeyTensor => ScalarType::I32,
            InputKind::HeadScalar(t) | InputKind::LaunchScalar(t) => t,
            InputKind::BlockList { .. } => ScalarType::Bool,
        }
    }

    /// How the input is written in a pattern (`name[q]`, `name[h]`, ...).
    pub fn access_form(self, name: &str) -> String {
        match self {
            InputKind::QueryTensor => format!("{name}[q]"),
            InputKind::KeyTensor => format!("{name}[k]"),
            InputKind::HeadScalar(_) => format!("{name}[h]"),
            InputKind::LaunchScalar(_) => name.to_string(),
            InputKind::BlockList { .. } => format!("{name}[q, k]"),
        }
    }
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputKind::QueryTensor => f.write_str("Q<i32>"),
            InputKind::KeyTensor => f.write_str("K<i32>"),
            InputKind::HeadScalar(t) => write!(f, "H<{t}>"),
            InputKind::LaunchScalar(t) => write!(f, "{t}"),
            InputKind::BlockList { block } => write!(f, "Blocks<{block}>"),
        }
    }
}

/// A named input of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InputDecl {
    pub name: String,
    pub kind: InputKind,
}

impl InputDecl {
    /// The shape the caller must bind, in words, for error messages and `lacuna patterns`.
    pub fn expected_shape(&self) -> &'static str {
        match self.kind {
            InputKind::QueryTensor => "(B, H, Nq) i32",
            InputKind::KeyTensor => "(B, H, Nk) i32",
            InputKind::HeadScalar(ScalarType::F32) => "(H,) f32",
            InputKind::HeadScalar(_) => "(H,) i32",
            InputKind::LaunchScalar(ScalarType::F32) => "scalar f32",
            InputKind::LaunchScalar(_) => "scalar i32",
            InputKind::BlockList { .. } => "(B, H, ceil(Nq/block), max_selected) i32, -1 = unused",
        }
    }
}
