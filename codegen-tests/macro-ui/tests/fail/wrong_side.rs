lacuna_ir::pattern! {
    pub WrongSide(q_bucket: Q<i32>, k_pos: K<i32>, alpha: H<i32>, sel: Blocks<64>) =
        q_bucket[k] == 0 && k_pos[q] >= 0 && alpha[q] > 0 && sel[k, q];
}

fn main() {}
