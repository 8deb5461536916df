//! The standard patterns.
