//! Closed-form key ranges: for predicates linear in `k` (causal, windows,
//! bands, sinks) the keys a query block can see form a few spans whose ends
//! are affine in the query position. The kernel loops over exactly these key
//! blocks instead of scanning them all.

use std::fmt;

use crate::bindings::Bindings;
use crate::eval::{ElementEvaluator, Value};
use crate::expr::{BinaryOp, Coord, Node, NodeId, UnaryOp};
use crate::pattern::PatternIr;
use crate::types::{InputKind, ScalarType};

/// `q_coef * q + Σ coef * term + constant`, with each term uniform over a
/// launch (it reads only `b`, `h`, scalars and constants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffineBound {
    pub q_coef: i64,
    pub terms: Vec<(i64, NodeId)>,
    pub constant: i64,
}

/// One span of keys: `max(lower) <= k <= min(upper)`; no bound means the matrix edge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySpan {
    pub lower: Vec<AffineBound>,
    pub upper: Vec<AffineBound>,
}

/// The union of spans a query may attend to; a superset of the mask's true keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub spans: Vec<KeySpan>,
}

/// More spans than this and the closed form is not worth it: scan instead.
const MAX_SPANS: usize = 4;

impl KeyRange {
    /// Derives the closed form, or None when the predicate puts no affine bound on `k`.
    pub fn derive(p: &PatternIr) -> Option<KeyRange> {
        let uniform = uniform_nodes(p);
        let spans = spans_of(p, &uniform, p.root())?;
        if spans.iter().all(|s| s.lower.is_empty() && s.upper.is_empty()) {
            return None;
        }
        Some(KeyRange { spans })
    }

    /// The key-block ranges `[start, end)` for rows `q0..=q1` of one (b, h),
    /// clipped to the key length and merged where they overlap. Returns None
    /// when a bound's arithmetic could wrap in i32 (the element test would not
    /// agree with exact arithmetic): then every key block must be scanned.
    pub fn key_blocks(&self, p: &PatternIr, bindings: &Bindings, (b, h): (usize, usize), (q0, q1): (usize, usize), block_k: usize) -> Option<Vec<(usize, usize)>> {
        let dims = bindings.dims();
        let values = ElementEvaluator::new(p, bindings).values_at(b, h, 0, 0);
        let term = |id: NodeId| match values[id.index()] {
            Value::I32(v) => v as i64,
            _ => 0,
        };
        let limit = (dims.q_len.max(dims.kv_len) as i64) * 2;
        let mut out: Vec<(usize, usize)> = Vec::new();
        for span in &self.spans {
            let mut lo = 0i64;
            let mut hi = dims.kv_len as i64 - 1;
            for (bound, is_lower) in span.lower.iter().map(|x| (x, true)).chain(span.upper.iter().map(|x| (x, false))) {
                let magnitude: i64 = bound.q_coef.abs() * limit
                    + bound.terms.iter().map(|(c, t)| c.abs() * term(*t).abs()).sum::<i64>()
                    + bound.constant.abs()
                    + limit;
                if magnitude >= i32::MAX as i64 {
                    return None;
                }
                let rest: i64 = bound.terms.iter().map(|(c, t)| c * term(*t)).sum::<i64>() + bound.constant;
                // The loosest value over the query rows of the block.
                let q = if (bound.q_coef >= 0) == is_lower { q0 } else { q1 } as i64;
                let v = bound.q_coef * q + rest;
                if is_lower { lo = lo.max(v) } else { hi = hi.min(v) }
            }
            if lo <= hi {
                out.push((lo as usize / block_k, hi as usize / block_k + 1));
            }
        }
        out.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (s, e) in out {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Some(merged)
    }
}

/// Nodes whose value is the same for every (q, k) of a (b, h).
fn uniform_nodes(p: &PatternIr) -> Vec<bool> {
    let mut uniform: Vec<bool> = Vec::with_capacity(p.nodes().len());
    for (_, node) in p.nodes() {
        let u = match node {
            Node::Coord(c) => matches!(c, Coord::B | Coord::H),
            Node::ConstI32(_) | Node::ConstF32(_) | Node::ConstBool(_) => true,
            Node::Input(id) => matches!(p.input(*id).kind, InputKind::HeadScalar(_) | InputKind::LaunchScalar(_)),
            Node::Unary(_, a) | Node::Cast(_, a) => uniform[a.index()],
            Node::Binary(_, a, b) => uniform[a.index()] && uniform[b.index()],
            Node::Select(c, a, b) => uniform[c.index()] && uniform[a.index()] && uniform[b.index()],
        };
        uniform.push(u);
    }
    uniform
}

#[derive(Clone, Debug, Default)]
struct Linear {
    q: i64,
    k: i64,
    terms: Vec<(i64, NodeId)>,
    constant: i64,
}

impl Linear {
    fn scaled(mut self, s: i64) -> Self {
        self.q *= s;
        self.k *= s;
        self.constant *= s;
        for t in &mut self.terms {
            t.0 *= s;
        }
        self
    }
    fn plus(mut self, o: Linear) -> Self {
        self.q += o.q;
        self.k += o.k;
        self.constant += o.constant;
        self.terms.extend(o.terms);
        self
    }
}

fn linear(p: &PatternIr, uniform: &[bool], id: NodeId) -> Option<Linear> {
    if p.ty(id) != ScalarType::I32 {
        return None;
    }
    match *p.node(id) {
        Node::Coord(Coord::Q) => Some(Linear { q: 1, ..Default::default() }),
        Node::Coord(Coord::K) => Some(Linear { k: 1, ..Default::default() }),
        Node::ConstI32(v) => Some(Linear { constant: v as i64, ..Default::default() }),
        _ if uniform[id.index()] => Some(Linear { terms: vec![(1, id)], ..Default::default() }),
        Node::Unary(UnaryOp::Neg, a) => Some(linear(p, uniform, a)?.scaled(-1)),
        Node::Binary(BinaryOp::Add, a, b) => Some(linear(p, uniform, a)?.plus(linear(p, uniform, b)?)),
        Node::Binary(BinaryOp::Sub, a, b) => Some(linear(p, uniform, a)?.plus(linear(p, uniform, b)?.scaled(-1))),
        Node::Binary(BinaryOp::Mul, a, b) => match (p.node(a), p.node(b)) {
            (_, Node::ConstI32(c)) => Some(linear(p, uniform, a)?.scaled(*c as i64)),
            (Node::ConstI32(c), _) => Some(linear(p, uniform, b)?.scaled(*c as i64)),
            _ => None,
        },
        _ => None,
    }
}

fn everything() -> Vec<KeySpan> {
    vec![KeySpan::default()]
}

/// The spans of `k` for which boolean node `id` can be true; None means "no closed form".
fn spans_of(p: &PatternIr, uniform: &[bool], id: NodeId) -> Option<Vec<KeySpan>> {
    match *p.node(id) {
        Node::Binary(BinaryOp::And, a, b) => {
            let (sa, sb) = (spans_of(p, uniform, a)?, spans_of(p, uniform, b)?);
            let mut out = Vec::new();
            for x in &sa {
                for y in &sb {
                    let mut s = x.clone();
                    s.lower.extend(y.lower.iter().cloned());
                    s.upper.extend(y.upper.iter().cloned());
                    out.push(s);
                }
            }
            (out.len() <= MAX_SPANS).then_some(out)
        }
        Node::Binary(BinaryOp::Or, a, b) => {
            let (sa, sb) = (spans_of(p, uniform, a)?, spans_of(p, uniform, b)?);
            if sa.iter().chain(&sb).any(|s| s.lower.is_empty() && s.upper.is_empty()) {
                return Some(everything());
            }
            let out: Vec<KeySpan> = sa.into_iter().chain(sb).collect();
            (out.len() <= MAX_SPANS).then_some(out)
        }
        Node::Binary(op, a, b) if op.is_comparison() && p.ty(a) == ScalarType::I32 => {
            let (Some(la), Some(lb)) = (linear(p, uniform, a), linear(p, uniform, b)) else {
                return Some(everything());
            };
            // la - lb (op) 0, i.e. kc*k + rest (op) 0.
            let l = la.plus(lb.scaled(-1));
            if l.k == 0 {
                return Some(everything());
            }
            if l.k.abs() != 1 {
                return Some(everything());
            }
            // k (op') X with X = -(rest) / kc; dividing by -1 flips the comparison.
            let op = if l.k == 1 { op } else { op.swapped() };
            let s = -l.k;
            let x = |adjust: i64| AffineBound {
                q_coef: s * l.q,
                terms: l.terms.iter().map(|(c, t)| (s * c, *t)).collect(),
                constant: s * l.constant + adjust,
            };
            let mut span = KeySpan::default();
            match op {
                BinaryOp::Lt => span.upper.push(x(-1)),
                BinaryOp::Le => span.upper.push(x(0)),
                BinaryOp::Gt => span.lower.push(x(1)),
                BinaryOp::Ge => span.lower.push(x(0)),
                BinaryOp::Eq => {
                    span.lower.push(x(0));
                    span.upper.push(x(0));
                }
                _ => return Some(everything()),
            }
            Some(vec![span])
        }
        Node::ConstBool(true) => Some(everything()),
        _ => Some(everything()),
    }
}

impl fmt::Display for AffineBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        match self.q_coef {
            0 => {}
            1 => parts.push("q".into()),
            -1 => parts.push("-q".into()),
            c => parts.push(format!("{c}*q")),
        }
        for (c, t) in &self.terms {
            parts.push(match c {
                1 => format!("{t}"),
                -1 => format!("-{t}"),
                c => format!("{c}*{t}"),
            });
        }
        if self.constant != 0 || parts.is_empty() {
            parts.push(self.constant.to_string());
        }
        let mut s = parts.join(" + ");
        s = s.replace("+ -", "- ");
        f.write_str(&s)
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spans: Vec<String> = self
            .spans
            .iter()
            .map(|s| {
                let join = |v: &[AffineBound], word: &str, edge: &str| match v.len() {
                    0 => edge.to_string(),
                    1 => v[0].to_string(),
                    _ => format!("{word}({})", v.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")),
                };
                format!("[{}, {}]", join(&s.lower, "max", "0"), join(&s.upper, "min", "Nk-1"))
            })
            .collect();
        write!(f, "k in {}", spans.join(" | "))
    }
}
