//! The `pattern!` macro: parses (`parse.rs`), checks names and types
//! (`check.rs`) and expands (`expand.rs`) attention mask patterns into
//! `lacuna_ir::Pattern` impls. Depends only on syn, quote and proc-macro2;
//! the expansion names `::lacuna_ir` and nothing else.

mod check;
mod expand;
mod parse;

use proc_macro::TokenStream;

/// Declares attention mask patterns: one unit struct implementing
/// `lacuna_ir::Pattern` per declaration.
///
/// ```ignore
/// lacuna_ir::pattern! {
///     /// Inclusive causal.
///     pub Causal() = q >= k;
///
///     /// Same bucket, causal on original positions.
///     pub HashBucket(q_bucket: Q<i32>, k_bucket: K<i32>, q_pos: Q<i32>, k_pos: K<i32>) =
///         q_bucket[q] == k_bucket[k] && q_pos[q] >= k_pos[k];
///
///     pub TopK(sel: Blocks<64>, W: i32) = q >= k && (sel[q, k] || q - k < W);
/// }
/// ```
///
/// Inputs: `Q<i32>` read as `x[q]`, `K<i32>` as `x[k]`, `H<i32>`/`H<f32>` as
/// `x[h]`, launch scalars `i32`/`f32` as `x`, `Blocks<N>` as `x[q, k]`.
/// The mask is a bool expression over the coordinates `b`, `h`, `q`, `k`
/// (i32), the inputs, i32/f32/bool literals, `+ - * / % == != < <= > >= && ||`,
/// unary `-` and `!`, `as i32`, `as f32`, `min`/`max`/`abs` (as functions or
/// methods) and `if c { a } else { b }`. Mistakes are compile errors on the
/// offending tokens.
#[proc_macro]
pub fn pattern(input: TokenStream) -> TokenStream {
    let items = parse::parse(input.into());
    expand::expand(check::check(items)).into()
}
