lacuna_ir::pattern! {
    pub NotAMask(W: i32) = q - k + W;
}

fn main() {}
