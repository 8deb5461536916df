lacuna_ir::pattern! {
    pub TensorBare(q_pos: Q<i32>, alpha: H<f32>, sel: Blocks<64>) = q_pos >= k && alpha > 0.5 && sel;
}

fn main() {}
