// Every expression form and input type the macro accepts, in one pattern,
// plus a trailing-semicolon-free last declaration and private visibility.
use lacuna_ir::Pattern;

mod inner {
    lacuna_ir::pattern! {
        /** A block doc comment
            on two lines. */
        pub EveryForm(
            qp: Q<i32>, kp: K<i32>, hi: H<i32>, hf: H<f32>, n: i32, s: f32, sel: Blocks<16>,
        ) =
            // literals: i32 (plain, suffixed, hex, extreme), f32 (plain, suffixed, exponent), bool
            (1 + 2i32 + 0x10 + -2147483648 + 2147483647 < 0.5 as i32 + 1.5f32 as i32 + 1e3 as i32) != false
            // coordinates, every input kind
            && b >= 0 && h >= 0 && qp[q] + kp[k] + hi[h] + n >= 0 && hf[h] * s >= -1.0 && (sel[q, k] || true)
            // arithmetic and comparisons
            && (q - k) * 2 / 3 % 4 != 5 && q == q && q < k + 1000 && q <= 9999 && k > -1 && k >= 0
            // unary, casts (bool -> f32 too), min/max/abs as functions and methods
            && !(-q > 0) && -s <= 1e9 && (q >= k) as f32 + (q < k) as i32 as f32 >= 0.0
            && min(q, k) <= max(q, k) && q.min(k) <= q.max(k) && abs(q - k) == (k - q).abs()
            && abs(-s) >= 0.0f32
            // select, nested and with else-if
            && if q > k { s > 0.0 } else if q == k { true } else { n >= 0 };

        Private() = true
    }

    pub fn private_ir() -> lacuna_ir::PatternIr {
        <Private as lacuna_ir::Pattern>::ir()
    }
}

fn main() {
    let ir = inner::EveryForm::ir();
    assert_eq!(lacuna_ir::verify(&ir), Ok(()));
    assert_eq!(ir.doc(), "A block doc comment\non two lines.");
    assert_eq!(ir.inputs().len(), 7);
    assert_eq!(lacuna_ir::verify(&inner::private_ir()), Ok(()));
}
