//! The interval domain: what the mask can be over a whole tile, given the
//! range of every coordinate and the [min, max] summary of every input there.
//!
//! Soundness rule: the interval of a node contains the node's value at every
//! element of the tile, under the exact semantics of `eval` (wrapping i32,
//! IEEE f32 without contraction). f32 rounding is monotone, so evaluating
//! endpoints in f32 keeps that promise.

use crate::eval::{float_binary, int_binary};
use crate::expr::{BinaryOp, UnaryOp};

/// What a boolean can be over a tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tri {
    False,
    True,
    Unknown,
}

impl Tri {
    pub fn from_bool(b: bool) -> Self {
        if b { Tri::True } else { Tri::False }
    }
    fn not(self) -> Self {
        match self {
            Tri::False => Tri::True,
            Tri::True => Tri::False,
            Tri::Unknown => Tri::Unknown,
        }
    }
    fn and(self, o: Self) -> Self {
        match (self, o) {
            (Tri::False, _) | (_, Tri::False) => Tri::False,
            (Tri::True, Tri::True) => Tri::True,
            _ => Tri::Unknown,
        }
    }
    fn or(self, o: Self) -> Self {
        self.not().and(o.not()).not()
    }
    fn join(self, o: Self) -> Self {
        if self == o { self } else { Tri::Unknown }
    }
}

/// An abstract value: a closed i32 range (in i64 to see overflow), an f32
/// range that may also hold NaN, or a three-valued bool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Interval {
    Int { lo: i64, hi: i64 },
    Float { lo: f32, hi: f32, nan: bool },
    Bool(Tri),
}

const I32_FULL: Interval = Interval::Int { lo: i32::MIN as i64, hi: i32::MAX as i64 };
const F32_FULL: Interval = Interval::Float { lo: f32::NEG_INFINITY, hi: f32::INFINITY, nan: true };

impl Interval {
    pub fn int(lo: i64, hi: i64) -> Self {
        debug_assert!(lo <= hi);
        Interval::Int { lo, hi }
    }
    pub fn point_i32(v: i32) -> Self {
        Interval::Int { lo: v as i64, hi: v as i64 }
    }
    pub fn point_f32(v: f32) -> Self {
        if v.is_nan() {
            Interval::Float { lo: f32::INFINITY, hi: f32::NEG_INFINITY, nan: true }
        } else {
            Interval::Float { lo: v, hi: v, nan: false }
        }
    }

    fn int_parts(self) -> (i64, i64) {
        match self {
            Interval::Int { lo, hi } => (lo, hi),
            other => unreachable!("verified types: expected int, got {other:?}"),
        }
    }

    pub fn tri(self) -> Tri {
        match self {
            Interval::Bool(t) => t,
            other => unreachable!("verified types: expected bool, got {other:?}"),
        }
    }

    /// A wrapped i32 result: if the exact range leaves i32, any i32 is possible.
    fn wrap(lo: i64, hi: i64) -> Self {
        if lo < i32::MIN as i64 || hi > i32::MAX as i64 { I32_FULL } else { Interval::Int { lo, hi } }
    }

    fn float(lo: f32, hi: f32, nan: bool) -> Self {
        if lo.is_nan() || hi.is_nan() { F32_FULL } else { Interval::Float { lo, hi, nan } }
    }

    /// The smallest interval holding both.
    pub fn hull(self, o: Self) -> Self {
        match (self, o) {
            (Interval::Int { lo: a, hi: b }, Interval::Int { lo: c, hi: d }) => Interval::Int { lo: a.min(c), hi: b.max(d) },
            (Interval::Float { lo: a, hi: b, nan: n }, Interval::Float { lo: c, hi: d, nan: m }) => {
                Interval::Float { lo: a.min(c), hi: b.max(d), nan: n || m }
            }
            (Interval::Bool(x), Interval::Bool(y)) => Interval::Bool(x.join(y)),
            _ => unreachable!("verified types: hull of different types"),
        }
    }

    pub fn unary(op: UnaryOp, a: Self) -> Self {
        match (op, a) {
            (UnaryOp::Not, Interval::Bool(t)) => Interval::Bool(t.not()),
            (UnaryOp::Neg, Interval::Int { lo, hi }) => Self::wrap(-hi, -lo),
            (UnaryOp::Neg, Interval::Float { lo, hi, nan }) => Self::float(-hi, -lo, nan),
            (UnaryOp::Abs, Interval::Int { lo, hi }) => {
                if lo >= 0 { Interval::int(lo, hi) } else if hi <= 0 { Self::wrap(-hi, -lo) } else { Self::wrap(0, (-lo).max(hi)) }
            }
            (UnaryOp::Abs, Interval::Float { lo, hi, nan }) => {
                // Only NaN (lo > hi) or already non-negative: unchanged.
                if lo > hi || lo >= 0.0 { a } else if hi <= 0.0 { Self::float(-hi, -lo, nan) } else { Self::float(0.0, (-lo).max(hi), nan) }
            }
            _ => unreachable!("verified types"),
        }
    }

    pub fn binary(op: BinaryOp, a: Self, b: Self) -> Self {
        match op {
            BinaryOp::And => Interval::Bool(a.tri().and(b.tri())),
            BinaryOp::Or => Interval::Bool(a.tri().or(b.tri())),
            o if o.is_comparison() => Interval::Bool(compare(o, a, b)),
            o => match (a, b) {
                (Interval::Int { .. }, Interval::Int { .. }) => int_arith(o, a.int_parts(), b.int_parts()),
                (Interval::Float { lo: a0, hi: a1, nan: an }, Interval::Float { lo: b0, hi: b1, nan: bn }) => {
                    if a0 > a1 || b0 > b1 {
                        // An operand is only NaN.
                        return F32_FULL;
                    }
                    float_arith(o, (a0, a1, an), (b0, b1, bn))
                }
                _ => unreachable!("verified types"),
            },
        }
    }

    pub fn cast_to_f32(self) -> Self {
        match self {
            Interval::Int { lo, hi } => Interval::Float { lo: lo as i32 as f32, hi: hi as i32 as f32, nan: false },
            Interval::Bool(t) => match t {
                Tri::False => Interval::point_f32(0.0),
                Tri::True => Interval::point_f32(1.0),
                Tri::Unknown => Interval::Float { lo: 0.0, hi: 1.0, nan: false },
            },
            f => f,
        }
    }

    pub fn cast_to_i32(self) -> Self {
        match self {
            Interval::Float { lo, hi, nan } => {
                if lo > hi {
                    return Interval::point_i32(0);
                }
                let (mut l, mut h) = ((lo as i32) as i64, (hi as i32) as i64);
                if nan {
                    l = l.min(0);
                    h = h.max(0);
                }
                Interval::int(l, h)
            }
            Interval::Bool(t) => match t {
                Tri::False => Interval::point_i32(0),
                Tri::True => Interval::point_i32(1),
                Tri::Unknown => Interval::int(0, 1),
            },
            i => i,
        }
    }
}

fn corners(a: (i64, i64), b: (i64, i64), f: impl Fn(i64, i64) -> i64) -> (i64, i64) {
    let v = [f(a.0, b.0), f(a.0, b.1), f(a.1, b.0), f(a.1, b.1)];
    (*v.iter().min().unwrap_or(&0), *v.iter().max().unwrap_or(&0))
}

fn int_arith(op: BinaryOp, a: (i64, i64), b: (i64, i64)) -> Interval {
    let point = |x: (i64, i64)| x.0 == x.1;
    if point(a) && point(b) {
        return Interval::point_i32(int_binary(op, a.0 as i32, b.0 as i32));
    }
    match op {
        BinaryOp::Add => Interval::wrap(a.0 + b.0, a.1 + b.1),
        BinaryOp::Sub => Interval::wrap(a.0 - b.1, a.1 - b.0),
        BinaryOp::Mul => {
            let (lo, hi) = corners(a, b, |x, y| x * y);
            Interval::wrap(lo, hi)
        }
        BinaryOp::Min => Interval::int(a.0.min(b.0), a.1.min(b.1)),
        BinaryOp::Max => Interval::int(a.0.max(b.0), a.1.max(b.1)),
        BinaryOp::Div => {
            if a.0 == i32::MIN as i64 && b.0 <= -1 && -1 <= b.1 {
                return I32_FULL;
            }
            if b.0 <= 0 && 0 <= b.1 {
                // Dividing by 0 gives 0, and |x / y| <= |x| otherwise.
                let m = a.0.abs().max(a.1.abs());
                return Interval::wrap(-m, m);
            }
            let (lo, hi) = corners(a, b, |x, y| x / y);
            Interval::int(lo, hi)
        }
        BinaryOp::Rem => {
            // |x % y| <= |x| and < |y|; the sign follows x; x % 0 == 0.
            let m = b.0.abs().max(b.1.abs());
            let (mut lo, mut hi) = (a.0.min(0), a.1.max(0));
            if m > 0 {
                lo = lo.max(-(m - 1));
                hi = hi.min(m - 1);
            } else {
                lo = 0;
                hi = 0;
            }
            Interval::int(lo, hi)
        }
        _ => unreachable!("{op:?} is not arithmetic"),
    }
}

fn float_arith(op: BinaryOp, (a0, a1, an): (f32, f32, bool), (b0, b1, bn): (f32, f32, bool)) -> Interval {
    let (a, b, nan_in) = ((a0, a1), (b0, b1), an || bn);
    let f = |x: f32, y: f32| float_binary(op, x, y);
    let all = [f(a.0, b.0), f(a.0, b.1), f(a.1, b.0), f(a.1, b.1)];
    let nan = nan_in || all.iter().any(|v| v.is_nan());
    match op {
        BinaryOp::Add => Interval::float(a.0 + b.0, a.1 + b.1, nan || (a.0.is_infinite() && b.0.is_infinite())),
        BinaryOp::Sub => Interval::float(a.0 - b.1, a.1 - b.0, nan),
        // min/max return the other operand when one is NaN: a NaN-able side
        // lets the other side's whole range through.
        BinaryOp::Min | BinaryOp::Max => {
            let (mut lo, mut hi) = if op == BinaryOp::Min { (a.0.min(b.0), a.1.min(b.1)) } else { (a.0.max(b.0), a.1.max(b.1)) };
            if an {
                lo = lo.min(b.0);
                hi = hi.max(b.1);
            }
            if bn {
                lo = lo.min(a.0);
                hi = hi.max(a.1);
            }
            Interval::float(lo, hi, an && bn)
        }
        BinaryOp::Mul | BinaryOp::Div => {
            if op == BinaryOp::Div && b.0 <= 0.0 && 0.0 <= b.1 {
                return F32_FULL;
            }
            if all.iter().any(|v| v.is_nan()) || [a.0, a.1, b.0, b.1].iter().any(|v| v.is_infinite()) {
                return F32_FULL;
            }
            let lo = all.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = all.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            Interval::float(lo, hi, nan)
        }
        _ => unreachable!("{op:?} is not float arithmetic"),
    }
}

fn compare(op: BinaryOp, a: Interval, b: Interval) -> Tri {
    match (a, b) {
        (Interval::Int { lo: a0, hi: a1 }, Interval::Int { lo: b0, hi: b1 }) => order(op, (a0, a1), (b0, b1), false),
        (Interval::Float { lo: a0, hi: a1, nan: an }, Interval::Float { lo: b0, hi: b1, nan: bn }) => {
            let nan = an || bn;
            if a0 > a1 || b0 > b1 {
                // Only NaN: every comparison but `!=` is false.
                return Tri::from_bool(op == BinaryOp::Ne);
            }
            order(op, (a0, a1), (b0, b1), nan)
        }
        (Interval::Bool(x), Interval::Bool(y)) => {
            let (eq, ne) = match (x, y) {
                (Tri::Unknown, _) | (_, Tri::Unknown) => (Tri::Unknown, Tri::Unknown),
                _ => (Tri::from_bool(x == y), Tri::from_bool(x != y)),
            };
            if op == BinaryOp::Eq { eq } else { ne }
        }
        _ => unreachable!("verified types"),
    }
}

/// Three-valued comparison of two ranges. With `nan`, a NaN operand makes
/// every comparison false except `!=`, which it makes true.
fn order<T: PartialOrd + Copy>(op: BinaryOp, a: (T, T), b: (T, T), nan: bool) -> Tri {
    let definite = |always: bool, never: bool| {
        if always { Tri::True } else if never { Tri::False } else { Tri::Unknown }
    };
    let t = match op {
        BinaryOp::Lt => definite(a.1 < b.0, a.0 >= b.1),
        BinaryOp::Le => definite(a.1 <= b.0, a.0 > b.1),
        BinaryOp::Gt => definite(a.0 > b.1, a.1 <= b.0),
        BinaryOp::Ge => definite(a.0 >= b.1, a.1 < b.0),
        BinaryOp::Eq => definite(a.0 == a.1 && b.0 == b.1 && a.0 == b.0, a.1 < b.0 || b.1 < a.0),
        BinaryOp::Ne => definite(a.1 < b.0 || b.1 < a.0, a.0 == a.1 && b.0 == b.1 && a.0 == b.0),
        _ => unreachable!("{op:?} is not a comparison"),
    };
    if !nan {
        return t;
    }
    match (op, t) {
        (BinaryOp::Ne, Tri::True) => Tri::True,
        (BinaryOp::Ne, _) => Tri::Unknown,
        (_, Tri::False) => Tri::False,
        _ => Tri::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_of_a_nan_able_range_lets_the_other_side_through() {
        let maybe_nan = Interval::Float { lo: 0.0, hi: 1.0, nan: true };
        let big = Interval::Float { lo: 5.0, hi: 6.0, nan: false };
        // min(NaN, y) = y, so 5..6 must be inside the result.
        let Interval::Float { lo, hi, nan } = Interval::binary(BinaryOp::Min, maybe_nan, big) else { panic!("float") };
        assert!(lo <= 0.0 && hi >= 6.0 && !nan, "{lo} {hi} {nan}");
    }

    #[test]
    fn wrapping_add_widens_to_every_i32() {
        let near_max = Interval::int(i32::MAX as i64 - 1, i32::MAX as i64);
        assert_eq!(Interval::binary(BinaryOp::Add, near_max, Interval::point_i32(5)), I32_FULL);
    }

    #[test]
    fn comparisons_are_three_valued() {
        let q = Interval::int(0, 63);
        let k = Interval::int(64, 127);
        assert_eq!(Interval::binary(BinaryOp::Ge, q, k).tri(), Tri::False);
        assert_eq!(Interval::binary(BinaryOp::Lt, q, k).tri(), Tri::True);
        assert_eq!(Interval::binary(BinaryOp::Ge, q, Interval::int(10, 20)).tri(), Tri::Unknown);
    }
}
