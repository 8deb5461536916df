lacuna_ir::pattern! {
    pub TooLarge() = q < 2147483648;

    pub TooSmall() = k > -2147483649;

    pub BadSuffix() = q < 10u8 && q as f32 > 1.0f64;
}

fn main() {}
