lacuna_ir::pattern! {
    pub AndOnNumbers(W: i32) = q >= k && W;

    pub OrOnNumbers() = q || k;
}

fn main() {}
