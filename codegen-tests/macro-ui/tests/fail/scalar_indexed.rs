lacuna_ir::pattern! {
    pub ScalarIndexed(N: i32) = q - k < N[q];

    pub CoordIndexed(pos: Q<i32>) = pos[q] >= q[k];
}

fn main() {}
