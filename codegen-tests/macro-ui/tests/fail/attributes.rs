lacuna_ir::pattern! {
    /// Docs are fine.
    #[inline]
    pub WithAttr() = q >= k;

    pub DupPattern() = q >= k;
    pub DupPattern() = q > k;
}

fn main() {}
