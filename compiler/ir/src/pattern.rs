//! `PatternIr`: a named predicate over `(b, h, q, k)` and declared inputs,
//! how it is built (by the `pattern!` macro or by hand), composed and hashed.

use crate::expr::{BinaryOp, Coord, ExprBuilder, InputId, Node, NodeId, TypeError, UnaryOp};
use crate::types::{InputDecl, InputKind, ScalarType};

/// Implemented by every pattern declared with `pattern!`.
pub trait Pattern {
    /// The pattern's name as declared (`HashBucket`).
    const NAME: &'static str;
    /// Builds the pattern's IR.
    fn ir() -> PatternIr;
}

/// A mask predicate with its inputs. Immutable once built; see [`PatternBuilder`].
#[derive(Clone, Debug)]
pub struct PatternIr {
    pub(crate) name: String,
    pub(crate) doc: String,
    pub(crate) inputs: Vec<InputDecl>,
    pub(crate) expr: ExprBuilder,
    pub(crate) root: NodeId,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("input `{name}` is declared twice in pattern `{pattern}`; give each input its own name")]
    DuplicateInput { pattern: String, name: String },
    #[error("cannot combine patterns: input `{name}` is {a} in one and {b} in the other; rename one of them")]
    ConflictingInput { name: String, a: InputKind, b: InputKind },
    #[error("the mask of pattern `{pattern}` has type {ty}; a mask must be a bool (e.g. `q >= k`)")]
    NotBoolean { pattern: String, ty: ScalarType },
    #[error(transparent)]
    Type(#[from] TypeError),
}

impl PatternIr {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn doc(&self) -> &str {
        &self.doc
    }

    pub fn inputs(&self) -> &[InputDecl] {
        &self.inputs
    }

    pub fn input(&self, id: InputId) -> &InputDecl {
        &self.inputs[id.index()]
    }

    pub fn input_id(&self, name: &str) -> Option<InputId> {
        self.inputs.iter().position(|d| d.name == name).map(|i| InputId(i as u32))
    }

    pub fn root(&self) -> NodeId {
        self.root
    }

    /// All nodes in arena (topological) order.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = (NodeId, &Node)> {
        self.expr.nodes.iter().enumerate().map(|(i, n)| (NodeId(i as u32), n))
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.expr.node(id)
    }

    pub fn ty(&self, id: NodeId) -> ScalarType {
        self.expr.ty(id)
    }

    /// Returns a copy under another name (and doc), e.g. after composing.
    pub fn renamed(mut self, name: &str, doc: &str) -> Self {
        self.name = name.to_string();
        self.doc = doc.to_string();
        self
    }

    /// `self && other`: inputs with the same name are shared and must agree in kind.
    pub fn and(&self, other: &PatternIr) -> Result<PatternIr, PatternError> {
        self.combine(other, BinaryOp::And, "and")
    }

    /// `self || other`: inputs with the same name are shared and must agree in kind.
    pub fn or(&self, other: &PatternIr) -> Result<PatternIr, PatternError> {
        self.combine(other, BinaryOp::Or, "or")
    }

    fn combine(&self, other: &PatternIr, op: BinaryOp, word: &str) -> Result<PatternIr, PatternError> {
        let mut inputs = self.inputs.clone();
        let mut map = Vec::with_capacity(other.inputs.len());
        for decl in &other.inputs {
            match inputs.iter().position(|d| d.name == decl.name) {
                Some(i) if inputs[i].kind == decl.kind => map.push(InputId(i as u32)),
                Some(i) => {
                    return Err(PatternError::ConflictingInput {
                        name: decl.name.clone(),
                        a: inputs[i].kind,
                        b: decl.kind,
                    })
                }
                None => {
                    map.push(InputId(inputs.len() as u32));
                    inputs.push(decl.clone());
                }
            }
        }
        let identity: Vec<InputId> = (0..self.inputs.len() as u32).map(InputId).collect();
        let mut expr = ExprBuilder::new();
        let a = expr.import(&self.expr, self.root, &identity);
        let b = expr.import(&other.expr, other.root, &map);
        let root = expr.binary(op, a, b)?;
        Ok(PatternIr {
            name: format!("{}_{word}_{}", self.name, other.name),
            doc: format!("({}) {word} ({})", self.name, other.name),
            inputs,
            expr,
            root,
        })
    }

    /// A stable 64-bit content hash of the text form; keys kernel caches.
    /// The name and doc are part of it only through the text's header line.
    pub fn content_hash(&self) -> u64 {
        fnv1a64(self.to_string().as_bytes())
    }

    /// The operands of the root's top-level `and`s, left to right (the root
    /// alone when it is no `and`): each must hold for a pair to attend.
    pub fn conjuncts(&self) -> Vec<NodeId> {
        fn walk(p: &PatternIr, id: NodeId, out: &mut Vec<NodeId>) {
            match *p.node(id) {
                Node::Binary(BinaryOp::And, a, b) => {
                    walk(p, a, out);
                    walk(p, b, out);
                }
                _ => out.push(id),
            }
        }
        let mut out = Vec::new();
        walk(self, self.root(), &mut out);
        out
    }

    /// True when the predicate reads `coord` anywhere.
    pub fn uses_coord(&self, coord: Coord) -> bool {
        self.expr.nodes.iter().any(|n| matches!(n, Node::Coord(c) if *c == coord))
    }
}

/// FNV-1a, 64 bit: tiny, stable across Rust versions (std's hasher is not).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Builds a [`PatternIr`]: declare inputs, build the expression, finish with the root.
#[derive(Debug)]
pub struct PatternBuilder {
    name: String,
    doc: String,
    inputs: Vec<InputDecl>,
    expr: ExprBuilder,
}

impl PatternBuilder {
    pub fn new(name: &str, doc: &str) -> Self {
        Self { name: name.into(), doc: doc.trim().into(), inputs: Vec::new(), expr: ExprBuilder::new() }
    }

    pub fn declare(&mut self, name: &str, kind: InputKind) -> Result<InputId, PatternError> {
        if self.inputs.iter().any(|d| d.name == name) {
            return Err(PatternError::DuplicateInput { pattern: self.name.clone(), name: name.into() });
        }
        self.inputs.push(InputDecl { name: name.into(), kind });
        Ok(InputId(self.inputs.len() as u32 - 1))
    }

    pub fn coord(&mut self, c: Coord) -> NodeId {
        self.expr.coord(c)
    }

    pub fn const_i32(&mut self, v: i32) -> NodeId {
        self.expr.const_i32(v)
    }

    pub fn const_f32(&mut self, v: f32) -> NodeId {
        self.expr.const_f32(v)
    }

    pub fn const_bool(&mut self, v: bool) -> NodeId {
        self.expr.const_bool(v)
    }

    pub fn read(&mut self, id: InputId) -> NodeId {
        let ty = self.inputs[id.index()].kind.value_type();
        self.expr.input(id, ty)
    }

    pub fn unary(&mut self, op: UnaryOp, a: NodeId) -> Result<NodeId, PatternError> {
        Ok(self.expr.unary(op, a)?)
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId, PatternError> {
        Ok(self.expr.binary(op, a, b)?)
    }

    pub fn cast(&mut self, to: ScalarType, a: NodeId) -> Result<NodeId, PatternError> {
        Ok(self.expr.cast(to, a)?)
    }

    pub fn select(&mut self, c: NodeId, a: NodeId, b: NodeId) -> Result<NodeId, PatternError> {
        Ok(self.expr.select(c, a, b)?)
    }

    pub fn ty(&self, id: NodeId) -> ScalarType {
        self.expr.ty(id)
    }

    pub fn finish(self, root: NodeId) -> Result<PatternIr, PatternError> {
        let ty = self.expr.ty(root);
        if ty != ScalarType::Bool {
            return Err(PatternError::NotBoolean { pattern: self.name, ty });
        }
        Ok(PatternIr { name: self.name, doc: self.doc, inputs: self.inputs, expr: self.expr, root })
    }
}

/// Used by code that `pattern!` generates; not for hand-written code.
#[doc(hidden)]
pub mod macro_support {
    use super::PatternError;

    /// The macro type-checks before expanding, so the IR accepting the same
    /// expression is an invariant; a failure here is a bug in Lacuna.
    #[track_caller]
    pub fn checked<T>(r: Result<T, PatternError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("internal error in lacuna: pattern! accepted what the IR rejects: {e}"),
        }
    }
}
