// A declaration that does not parse is reported, and the others still expand.
use lacuna_ir::Pattern;

lacuna_ir::pattern! {
    pub MissingEq() q >= k;

    pub MissingSemicolon() = q >= k k;

    pub Fine() = q >= k;
}

fn main() {
    let _ = Fine::ir();
    let _ = MissingEq::ir();
}
