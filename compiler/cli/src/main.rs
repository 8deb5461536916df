//! The `lacuna` binary: the command line over the standard patterns.

fn main() -> std::process::ExitCode {
    lacuna_cli::main_with(Vec::new())
}
