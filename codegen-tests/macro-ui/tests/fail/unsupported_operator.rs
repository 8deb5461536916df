lacuna_ir::pattern! {
    pub Shift() = q >> 1 == k;

    pub BitAnd() = (q >= k) & (k >= 0);

    pub BitOr() = (q >= k) | (k >= 0);

    pub Xor() = (q ^ k) == 0;

    pub Compound() = q += 1;

    pub Assign() = q = k;

    pub Deref() = *q == k;
}

fn main() {}
