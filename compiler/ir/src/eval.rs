//! Element semantics: the mask at one `(b, h, q, k)`. This is the definition
//! every other stage (interval analysis, the kernel's element test) must agree with.

use crate::bindings::Bindings;
use crate::expr::{BinaryOp, Coord, Node, UnaryOp};
use crate::pattern::PatternIr;
use crate::types::{InputKind, ScalarType};

/// A value of the predicate language.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    I32(i32),
    F32(f32),
    Bool(bool),
}

impl Value {
    fn i(self) -> i32 {
        match self {
            Value::I32(v) => v,
            other => unreachable!("verified types: expected i32, got {other:?}"),
        }
    }
    fn f(self) -> f32 {
        match self {
            Value::F32(v) => v,
            other => unreachable!("verified types: expected f32, got {other:?}"),
        }
    }
    fn b(self) -> bool {
        match self {
            Value::Bool(v) => v,
            other => unreachable!("verified types: expected bool, got {other:?}"),
        }
    }
}

/// i32 arithmetic wraps (as the kernel's does); division by zero gives 0.
pub fn int_binary(op: BinaryOp, a: i32, b: i32) -> i32 {
    match op {
        BinaryOp::Add => a.wrapping_add(b),
        BinaryOp::Sub => a.wrapping_sub(b),
        BinaryOp::Mul => a.wrapping_mul(b),
        BinaryOp::Div => if b == 0 { 0 } else { a.wrapping_div(b) },
        BinaryOp::Rem => if b == 0 { 0 } else { a.wrapping_rem(b) },
        BinaryOp::Min => a.min(b),
        BinaryOp::Max => a.max(b),
        _ => unreachable!("{op:?} is not arithmetic"),
    }
}

/// f32 arithmetic, IEEE round-to-nearest, no fused multiply-add.
/// min/max return the other operand when one is NaN (as PTX `min.f32` does).
pub fn float_binary(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Min => a.min(b),
        BinaryOp::Max => a.max(b),
        _ => unreachable!("{op:?} is not float arithmetic"),
    }
}

fn compare<T: PartialOrd>(op: BinaryOp, a: T, b: T) -> bool {
    match op {
        BinaryOp::Eq => a == b,
        BinaryOp::Ne => a != b,
        BinaryOp::Lt => a < b,
        BinaryOp::Le => a <= b,
        BinaryOp::Gt => a > b,
        BinaryOp::Ge => a >= b,
        _ => unreachable!("{op:?} is not a comparison"),
    }
}

/// Evaluates the mask element by element; reuses its value buffer between calls.
#[derive(Debug)]
pub struct ElementEvaluator<'a> {
    pattern: &'a PatternIr,
    bindings: &'a Bindings,
    values: Vec<Value>,
}

impl<'a> ElementEvaluator<'a> {
    pub fn new(pattern: &'a PatternIr, bindings: &'a Bindings) -> Self {
        Self { pattern, bindings, values: Vec::with_capacity(pattern.nodes().len()) }
    }

    /// `mask(b, h, q, k)`: true when query `q` may attend to key `k`.
    pub fn mask(&mut self, b: usize, h: usize, q: usize, k: usize) -> bool {
        self.values.clear();
        for (_, node) in self.pattern.nodes() {
            let v = match *node {
                Node::Coord(c) => Value::I32(match c {
                    Coord::B => b,
                    Coord::H => h,
                    Coord::Q => q,
                    Coord::K => k,
                } as i32),
                Node::ConstI32(v) => Value::I32(v),
                Node::ConstF32(v) => Value::F32(v),
                Node::ConstBool(v) => Value::Bool(v),
                Node::Input(id) => match self.pattern.input(id).kind {
                    InputKind::QueryTensor => Value::I32(self.bindings.row(id, b, h)[q]),
                    InputKind::KeyTensor => Value::I32(self.bindings.row(id, b, h)[k]),
                    InputKind::HeadScalar(ScalarType::F32) | InputKind::LaunchScalar(ScalarType::F32) => {
                        Value::F32(self.bindings.read_f32(id, h))
                    }
                    InputKind::HeadScalar(_) | InputKind::LaunchScalar(_) => {
                        Value::I32(self.bindings.read_i32(id, b, h, 0))
                    }
                    InputKind::BlockList { block } => {
                        let list = self.bindings.block_list(id, b, h, q / block as usize);
                        let kb = (k / block as usize) as i32;
                        Value::Bool(list.contains(&kb))
                    }
                },
                Node::Unary(op, a) => {
                    let a = self.values[a.index()];
                    match (op, a) {
                        (UnaryOp::Not, Value::Bool(x)) => Value::Bool(!x),
                        (UnaryOp::Neg, Value::I32(x)) => Value::I32(x.wrapping_neg()),
                        (UnaryOp::Neg, Value::F32(x)) => Value::F32(-x),
                        (UnaryOp::Abs, Value::I32(x)) => Value::I32(x.wrapping_abs()),
                        (UnaryOp::Abs, Value::F32(x)) => Value::F32(x.abs()),
                        _ => unreachable!("verified types"),
                    }
                }
                Node::Binary(op, a, c) => {
                    let (a, c) = (self.values[a.index()], self.values[c.index()]);
                    match op {
                        BinaryOp::And => Value::Bool(a.b() && c.b()),
                        BinaryOp::Or => Value::Bool(a.b() || c.b()),
                        o if o.is_comparison() => Value::Bool(match (a, c) {
                            (Value::I32(x), Value::I32(y)) => compare(o, x, y),
                            (Value::F32(x), Value::F32(y)) => compare(o, x, y),
                            (Value::Bool(x), Value::Bool(y)) => compare(o, x, y),
                            _ => unreachable!("verified types"),
                        }),
                        o => match a {
                            Value::I32(x) => Value::I32(int_binary(o, x, c.i())),
                            Value::F32(x) => Value::F32(float_binary(o, x, c.f())),
                            Value::Bool(_) => unreachable!("verified types"),
                        },
                    }
                }
                Node::Cast(to, a) => match (to, self.values[a.index()]) {
                    (ScalarType::F32, Value::I32(x)) => Value::F32(x as f32),
                    // Rust's `as` truncates toward zero, saturates and maps NaN to 0: like cvt.rzi.sat.
                    (ScalarType::I32, Value::F32(x)) => Value::I32(x as i32),
                    (ScalarType::I32, Value::Bool(x)) => Value::I32(x as i32),
                    (_, v) => v,
                },
                Node::Select(c, a, e) => {
                    if self.values[c.index()].b() {
                        self.values[a.index()]
                    } else {
                        self.values[e.index()]
                    }
                }
            };
            self.values.push(v);
        }
        self.values[self.pattern.root().index()].b()
    }
}

impl ElementEvaluator<'_> {
    /// Every node's value at one element (for reading launch-uniform nodes).
    pub fn values_at(&mut self, b: usize, h: usize, q: usize, k: usize) -> Vec<Value> {
        self.mask(b, h, q, k);
        self.values.clone()
    }
}
