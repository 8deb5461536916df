lacuna_ir::pattern! {
    pub NotPow2(sel: Blocks<48>) = sel[q, k];

    pub TooBig(sel: Blocks<2048>) = sel[q, k];

    pub TooSmall(sel: Blocks<8>) = sel[q, k];

    pub NotLiteral(sel: Blocks<N>) = sel[q, k];
}

fn main() {}
