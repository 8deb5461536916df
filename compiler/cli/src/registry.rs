//! The patterns this command line knows by name: the standard ones, then any
//! an embedding application registered through `main_with` (its own
//! `pattern!` types), so they get `ir`, `mask`, `compile`, `run` like the
//! standard ones with no other code.

use std::sync::OnceLock;

use lacuna_patterns::{StandardPattern, UnknownPattern};

static EXTRA: OnceLock<&'static [StandardPattern]> = OnceLock::new();

/// Registers the application's patterns (once per process; later calls keep the first set).
pub fn register(extra: Vec<StandardPattern>) {
    if !extra.is_empty() {
        let _ = EXTRA.set(Box::leak(extra.into_boxed_slice()));
    }
}

/// Standard patterns first, then registered ones.
pub fn all() -> impl Iterator<Item = &'static StandardPattern> {
    lacuna_patterns::standard().iter().chain(EXTRA.get().copied().unwrap_or_default())
}

/// Looks a pattern up by its command-line name; the error lists every known name.
pub fn find(name: &str) -> Result<&'static StandardPattern, UnknownPattern> {
    all().find(|p| p.name == name).ok_or_else(|| UnknownPattern {
        name: name.into(),
        known: all().map(|p| p.name).collect::<Vec<_>>().join(", "),
    })
}
