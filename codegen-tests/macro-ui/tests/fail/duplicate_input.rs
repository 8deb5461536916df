lacuna_ir::pattern! {
    pub Dup(pos: Q<i32>, pos: K<i32>) = pos[q] >= 0;
}

fn main() {}
