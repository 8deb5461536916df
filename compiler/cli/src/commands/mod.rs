//! One file per subcommand. Each exposes `run(args, out)` returning the exit
//! code; they print to `out` (stdout) and never exit the process themselves.
//! Later subcommands (`run`, `selftest`, `bench`) go here as new files.

pub mod compile;
pub mod ir;
pub mod mask;
pub mod patterns;
pub mod tour;
pub mod run;
