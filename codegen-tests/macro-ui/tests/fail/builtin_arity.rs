lacuna_ir::pattern! {
    pub MinOneArg() = min(q) > k;

    pub AbsTwoArgs() = q.abs(k) > 0;

    pub MaxMixed(s: f32) = max(q, s) > 0.0;
}

fn main() {}
