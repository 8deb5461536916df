//! The predicate as a DAG of typed nodes in an arena (`%3` in the text form).
//!
//! Nodes only refer to nodes created before them, so the arena order is a
//! topological order; hash-consing in [`ExprBuilder`] makes shared
//! sub-expressions one node.

use std::collections::HashMap;
use std::fmt;

use crate::types::ScalarType;

/// Index of a node in a pattern's arena; prints as `%N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Index of a declared input; the order of declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InputId(pub u32);

impl InputId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The four coordinates a mask is a function of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coord {
    /// Batch index.
    B,
    /// Query head index.
    H,
    /// Query row (position in the query sequence as laid out in memory).
    Q,
    /// Key row.
    K,
}

impl Coord {
    pub fn name(self) -> &'static str {
        match self {
            Coord::B => "b",
            Coord::H => "h",
            Coord::Q => "q",
            Coord::K => "k",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Not,
    Abs,
}

impl UnaryOp {
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Not => "not",
            UnaryOp::Abs => "abs",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Truncating division; dividing by zero gives 0 (the kernel does the same).
    Div,
    /// Remainder with the sign of the dividend; by zero gives 0.
    Rem,
    Min,
    Max,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Rem => "rem",
            Min => "min",
            Max => "max",
            Eq => "eq",
            Ne => "ne",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
            And => "and",
            Or => "or",
        }
    }

    pub fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge)
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }

    pub fn is_arithmetic(self) -> bool {
        !self.is_comparison() && !self.is_logical()
    }

    /// The comparison with its operands swapped (`a < b` ⇔ `b > a`).
    pub fn swapped(self) -> Self {
        use BinaryOp::*;
        match self {
            Lt => Gt,
            Le => Ge,
            Gt => Lt,
            Ge => Le,
            other => other,
        }
    }
}

/// One node of the expression DAG.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Coord(Coord),
    ConstI32(i32),
    ConstF32(f32),
    ConstBool(bool),
    /// Reads an input at its natural index (`q`, `k`, `h`, nothing, or `(q, k)`).
    Input(InputId),
    Unary(UnaryOp, NodeId),
    Binary(BinaryOp, NodeId, NodeId),
    /// Numeric conversion: i32→f32 rounds to nearest, f32→i32 truncates toward zero
    /// and saturates (NaN gives 0), bool→i32 gives 0 or 1.
    Cast(ScalarType, NodeId),
    /// `if c { a } else { b }` with both sides evaluated.
    Select(NodeId, NodeId, NodeId),
}

/// A hashable key for hash-consing (f32 compared by bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum NodeKey {
    Coord(Coord),
    ConstI32(i32),
    ConstF32(u32),
    ConstBool(bool),
    Input(InputId),
    Unary(UnaryOp, NodeId),
    Binary(BinaryOp, NodeId, NodeId),
    Cast(ScalarType, NodeId),
    Select(NodeId, NodeId, NodeId),
}

impl From<&Node> for NodeKey {
    fn from(n: &Node) -> Self {
        match *n {
            Node::Coord(c) => NodeKey::Coord(c),
            Node::ConstI32(v) => NodeKey::ConstI32(v),
            Node::ConstF32(v) => NodeKey::ConstF32(v.to_bits()),
            Node::ConstBool(v) => NodeKey::ConstBool(v),
            Node::Input(i) => NodeKey::Input(i),
            Node::Unary(o, a) => NodeKey::Unary(o, a),
            Node::Binary(o, a, b) => NodeKey::Binary(o, a, b),
            Node::Cast(t, a) => NodeKey::Cast(t, a),
            Node::Select(c, a, b) => NodeKey::Select(c, a, b),
        }
    }
}

/// An arena of typed nodes. Types are inferred as nodes are added; a node
/// whose operands do not type-check is refused with a [`TypeError`].
#[derive(Clone, Debug, Default)]
pub struct ExprBuilder {
    pub(crate) nodes: Vec<Node>,
    pub(crate) types: Vec<ScalarType>,
    dedup: HashMap<NodeKey, NodeId>,
}

/// Why a node could not be built. The macro reports these on the user's tokens.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    #[error("`{op}` needs two numbers of the same type, found {lhs} and {rhs}; convert one side with `as i32` or `as f32`")]
    ArithmeticMismatch { op: &'static str, lhs: ScalarType, rhs: ScalarType },
    #[error("cannot compare {lhs} with {rhs}; convert one side with `as i32` or `as f32` so both have the same type")]
    ComparisonMismatch { lhs: ScalarType, rhs: ScalarType },
    #[error("`{op}` needs two booleans, found {lhs} and {rhs}; compare numbers first (e.g. `x > 0`)")]
    LogicalOnNumbers { op: &'static str, lhs: ScalarType, rhs: ScalarType },
    #[error("`{op}` is not defined on {ty}")]
    UnaryMismatch { op: &'static str, ty: ScalarType },
    #[error("a select needs a bool condition and two arms of the same type, found {cond}, {then} and {otherwise}")]
    SelectMismatch { cond: ScalarType, then: ScalarType, otherwise: ScalarType },
    #[error("cannot convert {from} to {to}")]
    BadCast { from: ScalarType, to: ScalarType },
    #[error("`%` is only defined on i32, found {ty}")]
    RemOnFloat { ty: ScalarType },
}

impl ExprBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn ty(&self, id: NodeId) -> ScalarType {
        self.types[id.index()]
    }

    fn push(&mut self, node: Node, ty: ScalarType) -> NodeId {
        let key = NodeKey::from(&node);
        if let Some(&id) = self.dedup.get(&key) {
            return id;
        }
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(node);
        self.types.push(ty);
        self.dedup.insert(key, id);
        id
    }

    pub fn coord(&mut self, c: Coord) -> NodeId {
        self.push(Node::Coord(c), ScalarType::I32)
    }

    pub fn const_i32(&mut self, v: i32) -> NodeId {
        self.push(Node::ConstI32(v), ScalarType::I32)
    }

    pub fn const_f32(&mut self, v: f32) -> NodeId {
        self.push(Node::ConstF32(v), ScalarType::F32)
    }

    pub fn const_bool(&mut self, v: bool) -> NodeId {
        self.push(Node::ConstBool(v), ScalarType::Bool)
    }

    /// Reads input `id`, whose elements have type `ty`.
    pub fn input(&mut self, id: InputId, ty: ScalarType) -> NodeId {
        self.push(Node::Input(id), ty)
    }

    pub fn unary(&mut self, op: UnaryOp, a: NodeId) -> Result<NodeId, TypeError> {
        let ty = self.ty(a);
        let ok = match op {
            UnaryOp::Not => ty == ScalarType::Bool,
            UnaryOp::Neg | UnaryOp::Abs => ty != ScalarType::Bool,
        };
        if !ok {
            return Err(TypeError::UnaryMismatch { op: op.name(), ty });
        }
        Ok(self.push(Node::Unary(op, a), ty))
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId, TypeError> {
        let (ta, tb) = (self.ty(a), self.ty(b));
        let ty = if op.is_logical() {
            if ta != ScalarType::Bool || tb != ScalarType::Bool {
                return Err(TypeError::LogicalOnNumbers { op: op.name(), lhs: ta, rhs: tb });
            }
            ScalarType::Bool
        } else if op.is_comparison() {
            if ta != tb {
                return Err(TypeError::ComparisonMismatch { lhs: ta, rhs: tb });
            }
            if ta == ScalarType::Bool && !matches!(op, BinaryOp::Eq | BinaryOp::Ne) {
                return Err(TypeError::ComparisonMismatch { lhs: ta, rhs: tb });
            }
            ScalarType::Bool
        } else {
            if ta != tb || ta == ScalarType::Bool {
                return Err(TypeError::ArithmeticMismatch { op: op.name(), lhs: ta, rhs: tb });
            }
            if op == BinaryOp::Rem && ta != ScalarType::I32 {
                return Err(TypeError::RemOnFloat { ty: ta });
            }
            ta
        };
        Ok(self.push(Node::Binary(op, a, b), ty))
    }

    pub fn cast(&mut self, to: ScalarType, a: NodeId) -> Result<NodeId, TypeError> {
        let from = self.ty(a);
        if from == to {
            return Ok(a);
        }
        if to == ScalarType::Bool {
            return Err(TypeError::BadCast { from, to });
        }
        if from == ScalarType::Bool && to == ScalarType::F32 {
            let as_int = self.push(Node::Cast(ScalarType::I32, a), ScalarType::I32);
            return Ok(self.push(Node::Cast(to, as_int), to));
        }
        Ok(self.push(Node::Cast(to, a), to))
    }

    pub fn select(&mut self, c: NodeId, a: NodeId, b: NodeId) -> Result<NodeId, TypeError> {
        let (tc, ta, tb) = (self.ty(c), self.ty(a), self.ty(b));
        if tc != ScalarType::Bool || ta != tb {
            return Err(TypeError::SelectMismatch { cond: tc, then: ta, otherwise: tb });
        }
        Ok(self.push(Node::Select(c, a, b), ta))
    }

    /// Copies the nodes reachable from `root` in `other` into `self`,
    /// renumbering inputs through `input_map`; returns the new root.
    pub(crate) fn import(&mut self, other: &ExprBuilder, root: NodeId, input_map: &[InputId]) -> NodeId {
        let mut map: Vec<Option<NodeId>> = vec![None; root.index() + 1];
        for i in 0..=root.index() {
            let ty = other.types[i];
            let m = |id: NodeId, map: &[Option<NodeId>]| map[id.index()].expect("operands precede their users");
            let node = match &other.nodes[i] {
                Node::Input(id) => Node::Input(input_map[id.index()]),
                Node::Unary(o, a) => Node::Unary(*o, m(*a, &map)),
                Node::Binary(o, a, b) => Node::Binary(*o, m(*a, &map), m(*b, &map)),
                Node::Cast(t, a) => Node::Cast(*t, m(*a, &map)),
                Node::Select(c, a, b) => Node::Select(m(*c, &map), m(*a, &map), m(*b, &map)),
                n => n.clone(),
            };
            map[i] = Some(self.push(node, ty));
        }
        map[root.index()].expect("root was imported")
    }
}
