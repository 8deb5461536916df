lacuna_ir::pattern! {
    pub NotOnNumber() = !q == k;

    pub NegOnBool() = -(q >= k);

    pub CastToBool() = q as bool;

    pub CastToU64() = q as u64 > 0;
}

fn main() {}
