lacuna_ir::pattern! {
    pub Typo(q_bucket: Q<i32>, k_bucket: K<i32>) = q_buckt[q] == k_bucket[k];

    pub Unrelated(q_pos: Q<i32>) = q_pos[q] >= window;

    pub NoInputs() = q >= n;

    pub IndexedUnknown(q_bucket: Q<i32>) = q_bucket[q] == k_bucket[k] && Q > 0;
}

fn main() {}
