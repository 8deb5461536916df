//! The verifier: structural and type invariants every `PatternIr` must hold
//! before analysis or code generation trusts it.

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Dfs;

use crate::expr::{BinaryOp, Node, NodeId, UnaryOp};
use crate::pattern::PatternIr;
use crate::types::{InputKind, ScalarType};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("{node} uses {operand}, which is not defined before it")]
    ForwardReference { node: NodeId, operand: NodeId },
    #[error("{node} reads input #{input}, but the pattern declares only {declared} inputs")]
    UnknownInput { node: NodeId, input: u32, declared: usize },
    #[error("{node} has type {found} but its operation gives {expected}")]
    WrongType { node: NodeId, found: ScalarType, expected: ScalarType },
    #[error("{node} applies `{op}` to operands of types {lhs} and {rhs}")]
    BadOperands { node: NodeId, op: &'static str, lhs: ScalarType, rhs: ScalarType },
    #[error("the mask {root} has type {ty}, not bool")]
    RootNotBool { root: NodeId, ty: ScalarType },
    #[error("{node} does not contribute to the mask (dead code)")]
    Dead { node: NodeId },
    #[error("input name `{name}` is not an identifier")]
    BadInputName { name: String },
    #[error("block list `{name}` has block size {block}; use a power of two from 16 to 1024")]
    BadBlockSize { name: String, block: u32 },
}

/// Checks every invariant; returns all violations, not just the first.
pub fn verify(p: &PatternIr) -> Result<(), Vec<VerifyError>> {
    let mut errors = Vec::new();
    for d in p.inputs() {
        let ok = d.name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && d.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            errors.push(VerifyError::BadInputName { name: d.name.clone() });
        }
        if let InputKind::BlockList { block } = d.kind {
            if !(16..=1024).contains(&block) || !block.is_power_of_two() {
                errors.push(VerifyError::BadBlockSize { name: d.name.clone(), block });
            }
        }
    }
    let mut graph = DiGraph::<NodeId, ()>::new();
    let idx: Vec<NodeIndex> = p.nodes().map(|(id, _)| graph.add_node(id)).collect();
    for (id, node) in p.nodes() {
        let operands: Vec<NodeId> = match node {
            Node::Unary(_, a) | Node::Cast(_, a) => vec![*a],
            Node::Binary(_, a, b) => vec![*a, *b],
            Node::Select(c, a, b) => vec![*c, *a, *b],
            _ => vec![],
        };
        for &o in &operands {
            if o >= id {
                errors.push(VerifyError::ForwardReference { node: id, operand: o });
            } else {
                graph.add_edge(idx[id.index()], idx[o.index()], ());
            }
        }
        if operands.iter().any(|o| *o >= id) {
            continue;
        }
        if let Some(e) = check_types(p, id, node) {
            errors.push(e);
        }
    }
    let root_ty = p.ty(p.root());
    if root_ty != ScalarType::Bool {
        errors.push(VerifyError::RootNotBool { root: p.root(), ty: root_ty });
    }
    if p.root().index() < idx.len() {
        let mut reached = vec![false; idx.len()];
        let mut dfs = Dfs::new(&graph, idx[p.root().index()]);
        while let Some(n) = dfs.next(&graph) {
            reached[n.index()] = true;
        }
        for (i, r) in reached.iter().enumerate() {
            if !r {
                errors.push(VerifyError::Dead { node: NodeId(i as u32) });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_types(p: &PatternIr, id: NodeId, node: &Node) -> Option<VerifyError> {
    use ScalarType::*;
    let found = p.ty(id);
    let expected = match node {
        Node::Coord(_) | Node::ConstI32(_) => I32,
        Node::ConstF32(_) => F32,
        Node::ConstBool(_) => Bool,
        Node::Input(i) => match p.inputs().get(i.index()) {
            Some(d) => d.kind.value_type(),
            None => {
                return Some(VerifyError::UnknownInput { node: id, input: i.0, declared: p.inputs().len() })
            }
        },
        Node::Unary(op, a) => {
            let t = p.ty(*a);
            let ok = (*op == UnaryOp::Not) == (t == Bool);
            if !ok {
                return Some(VerifyError::BadOperands { node: id, op: op.name(), lhs: t, rhs: t });
            }
            t
        }
        Node::Binary(op, a, b) => {
            let (ta, tb) = (p.ty(*a), p.ty(*b));
            let ok = ta == tb
                && match op {
                    BinaryOp::And | BinaryOp::Or => ta == Bool,
                    BinaryOp::Eq | BinaryOp::Ne => true,
                    o if o.is_comparison() => ta != Bool,
                    BinaryOp::Rem => ta == I32,
                    _ => ta != Bool,
                };
            if !ok {
                return Some(VerifyError::BadOperands { node: id, op: op.name(), lhs: ta, rhs: tb });
            }
            if op.is_arithmetic() {
                ta
            } else {
                Bool
            }
        }
        Node::Cast(to, _) => *to,
        Node::Select(c, a, b) => {
            let (tc, ta, tb) = (p.ty(*c), p.ty(*a), p.ty(*b));
            if tc != Bool || ta != tb {
                return Some(VerifyError::BadOperands { node: id, op: "select", lhs: ta, rhs: tb });
            }
            ta
        }
    };
    (found != expected).then_some(VerifyError::WrongType { node: id, found, expected })
}
