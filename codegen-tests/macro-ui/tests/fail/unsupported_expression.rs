lacuna_ir::pattern! {
    pub Closure() = |x: i32| x > 0;

    pub CallClosure() = (|x: i32| x > 0)(q);

    pub Block() = { q >= k };

    pub Method() = q.pow(2) > k;

    pub Function() = clamp(q, 0, 10) > k;

    pub Str() = q == "q";

    pub Match() = match q { 0 => true, _ => false };

    pub Range() = k == 0..q;

    pub Field() = q.0 > k;

    pub Macro() = max!(q, k) > 0;
}

fn main() {}
