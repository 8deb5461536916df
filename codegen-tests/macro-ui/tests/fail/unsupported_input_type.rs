lacuna_ir::pattern! {
    pub BadTypes(a: Q<f32>, b_ids: Vec<i32>, c: H<bool>, d: u32, e: K) = q >= k;
}

fn main() {}
