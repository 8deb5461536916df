// Errors in one pattern: its struct is still declared, so later uses of the
// name compile and only the macro's errors are reported.
use lacuna_ir::Pattern;

lacuna_ir::pattern! {
    pub Broken(pos: Q<i32>) = pos[k] >= 0 && undefined > 0;

    pub Fine() = q >= k;
}

fn uses(_: Broken) -> &'static str {
    Broken::NAME
}

fn main() {
    let _ = uses(Broken);
    let _ = Broken::ir();
    let _ = Fine::ir();
}
