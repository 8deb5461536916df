lacuna_ir::pattern! {
    pub Mixed(beta: H<f32>) = q - k < beta[h] * 2;

    pub RemOnFloat(beta: H<f32>) = beta[h] % 2.0 == 0.0;

    pub BoolMath() = (q >= k) + 1 > 0;
}

fn main() {}
