lacuna_ir::pattern! {
    pub FloatVsInt(beta: H<f32>) = beta[h] < q - k;
}

fn main() {}
