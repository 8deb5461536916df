lacuna_ir::pattern! {
    pub NoElse() = if q > k { true };

    pub IntCondition() = if q { true } else { false };

    pub ArmsDiffer(s: f32) = if q > k { 1 } else { s } > 0;

    pub Statements() = if q > k { let x = 1; x > 0 } else { true };
}

fn main() {}
