//! The `lacuna` binary: clap definitions and dispatch only. Each subcommand
//! lives in its own file under `commands/`; this file must not grow logic.

mod commands;
mod error;
mod npy;
mod params;
mod picture;

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::CliError;

#[derive(Parser, Debug)]
#[command(name = "lacuna", version, about = "Lacuna: a compiler for sparse-attention kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the standard patterns: summary, inputs with their shapes, knobs, paper.
    Patterns,
    /// Print a pattern's IR, its content hash and its closed-form key range, and verify it.
    Ir(IrArgs),
    /// Classify every tile of a pattern's attention matrix as Empty / Partial / Full.
    Mask(MaskArgs),
    // `compile`, `run`, `selftest` and `bench` come here, each implemented in its own commands/*.rs.
}

#[derive(Args, Debug)]
pub struct IrArgs {
    /// A standard pattern (see `lacuna patterns`).
    pub pattern: String,
    /// A value for a scalar or per-head input, or a knob: `--param window=256`, `--param alpha=256,512`.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = params::parse_assignment)]
    pub params: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct MaskArgs {
    /// A standard pattern (see `lacuna patterns`).
    pub pattern: String,
    /// Number of query tokens (Nq).
    #[arg(long, value_name = "N", value_parser = params::parse_positive)]
    pub q_len: usize,
    /// Number of key tokens (Nk); defaults to --q-len.
    #[arg(long, value_name = "M", value_parser = params::parse_positive)]
    pub kv_len: Option<usize>,
    /// Number of heads (H).
    #[arg(long, value_name = "H", default_value = "1", value_parser = params::parse_positive)]
    pub heads: usize,
    /// Batch size (B).
    #[arg(long, value_name = "B", default_value = "1", value_parser = params::parse_positive)]
    pub batch: usize,
    /// Query rows per tile.
    #[arg(long, value_name = "ROWS", default_value = "128", value_parser = params::parse_positive)]
    pub block_q: usize,
    /// Key rows per tile.
    #[arg(long, value_name = "ROWS", default_value = "128", value_parser = params::parse_positive)]
    pub block_k: usize,
    /// A value for a scalar or per-head input (one per head, comma-separated, or one for all), or a knob.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = params::parse_assignment)]
    pub params: Vec<(String, String)>,
    /// An array input read from a .npy file (i32; f32 for f32 per-head inputs).
    #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = params::parse_assignment)]
    pub inputs: Vec<(String, String)>,
    /// Seed for the example values of inputs given neither by --input nor --param.
    #[arg(long, default_value = "0")]
    pub seed: u64,
    /// Print only JSON: {"q_blocks", "k_blocks", "classes", "counts"}.
    #[arg(long)]
    pub json: bool,
    /// Also draw the block mask into a PNG file.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Compare every tile with brute-force evaluation of every element (small sizes only).
    #[arg(long)]
    pub check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = match &cli.command {
        Command::Patterns => commands::patterns::run(&mut out),
        Command::Ir(args) => commands::ir::run(args, &mut out),
        Command::Mask(args) => commands::mask::run(args, &mut out),
    };
    let result = result.and_then(|code| out.flush().map(|()| code).map_err(CliError::Output));
    match result {
        Ok(code) => code,
        // A reader that went away (`| head`) is not an error of ours.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: {e}");
            ExitCode::from(2)
        }
    }
}
