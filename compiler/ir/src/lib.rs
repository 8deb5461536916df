//! Lacuna's pattern IR: produced by the `pattern!` macro (or by hand with
//! [`PatternBuilder`]), consumed by the block analysis here and by the code
//! generator. No LLVM, no CUDA, no syn in this crate.
//!
//! Where things live:
//! - [`expr`]: the predicate as a typed DAG; [`text`]: its printed form; [`verify`]: invariants.
//! - [`eval`]: the element semantics (the definition of a mask).
//! - [`interval`] + [`analysis`]: where a pattern becomes a tile list (Empty / Partial / Full),
//!   from the per-block input summaries of [`summary`].
//! - [`keyrange`]: closed-form key-block ranges per query block.
//! - [`reference`]: exact CPU attention, the oracle for GPU tests.

// Lets `pattern!` expansions name `::lacuna_ir` from inside this crate's own tests.
extern crate self as lacuna_ir;

pub mod analysis;
pub mod bindings;
pub mod eval;
pub mod expr;
pub mod interval;
pub mod keyrange;
pub mod manifest;
pub mod pattern;
pub mod reference;
pub mod summary;
pub mod text;
pub mod types;
pub mod verify;

pub use analysis::{analyze, check_against_brute_force, BlockClass, BlockMask, ClassCounts, MaskCheck, TileShape};
pub use summary::{BlockSummaries, BucketJoin};
pub use bindings::{BindError, Bindings, Dims, InputValue};
pub use expr::{BinaryOp, Coord, InputId, Node, NodeId, UnaryOp};
pub use keyrange::KeyRange;
pub use pattern::{macro_support, Pattern, PatternBuilder, PatternError, PatternIr};
pub use lacuna_macros::pattern;
pub use types::{InputDecl, InputKind, ScalarType};
pub use verify::{verify, VerifyError};
pub use manifest::{Arch, BucketRunSummaries, Dtype, GridOrder, KernelManifest, KernelParam, KeySource, ListBitmap, ManifestError, SplitKvEntries, list_bitmap_words};
