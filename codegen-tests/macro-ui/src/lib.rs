//! No code: this crate holds the `pattern!` macro's compile tests in tests/.
