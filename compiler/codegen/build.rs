//! Fingerprints the code generator's own sources, so that caches of generated
//! PTX (the runtime's JIT cache) are invalidated when the generator changes,
//! not only when the crate version does.

use std::path::Path;

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                visit(&p, files);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
}

fn main() {
    let mut files = Vec::new();
    visit(Path::new("src"), &mut files);
    files.sort();
    // FNV-1a 64 over the paths and contents, in a fixed order.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(f.to_string_lossy().as_bytes());
        eat(&std::fs::read(f).unwrap_or_default());
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rustc-env=LACUNA_CODEGEN_FINGERPRINT={}+{h:016x}", std::env::var("CARGO_PKG_VERSION").unwrap_or_default());
}
