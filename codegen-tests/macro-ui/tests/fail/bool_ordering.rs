lacuna_ir::pattern! {
    pub BoolLess() = (q >= k) < (k >= 0);
}

fn main() {}
