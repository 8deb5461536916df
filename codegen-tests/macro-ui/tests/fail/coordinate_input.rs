lacuna_ir::pattern! {
    pub CoordName(q: Q<i32>, h: H<i32>) = k >= 0;
}

fn main() {}
