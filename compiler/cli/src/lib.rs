//! The `lacuna` command line: clap definitions and dispatch only. Each
//! subcommand lives in its own file under `commands/`; this file must not
//! grow logic. It is a library so that an application can ship the same
//! command line with its own patterns registered ([`main_with`]).

mod commands;
mod error;
mod gpu;
mod npy;
mod params;
mod picture;
mod registry;

pub use lacuna_patterns::StandardPattern;

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
    /// Plan and generate a pattern's forward kernel; print the plan, the LLVM IR or the PTX.
    Compile(CompileArgs),
    /// Every standard pattern from IR to PTX: IR, key range, block mask, brute-force check, kernels, ptxas.
    Tour(TourArgs),
    /// Run one attention on the GPU from .npy files (bf16, fp16 or f32 in; the same dtype out).
    ///
    /// `hash-bucket` without bucket/position inputs runs the whole SCFA pipeline from raw Q/K/V
    /// (`--param buckets=8 seed=S strict=1 shared_qk=1`); `qk-drop` with `--input q_keep=F.npy
    /// --input k_keep=F.npy` runs the QK-drop pipeline; either writes O in the original token order.
    Run(RunArgs),
    /// Every standard pattern on the GPU against the CPU reference (needs a GPU).
    Selftest(SelftestArgs),
    /// Time the forward kernel over a grid of shapes and patterns (needs a GPU); table and JSON.
    Bench(BenchArgs),
    /// Time the seed methods end to end (SCFA hash and QK-drop, MoA, SparseK) against dense causal (needs a GPU); table and JSON.
    BenchMethods(BenchMethodsArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A standard pattern (see `lacuna patterns`).
    pub pattern: String,
    /// Queries, (B, H, Nq, D).
    #[arg(long, value_name = "Q.npy")]
    pub q: PathBuf,
    /// Keys, (B, Hkv, Nk, D).
    #[arg(long, value_name = "K.npy")]
    pub k: PathBuf,
    /// Values, (B, Hkv, Nk, D).
    #[arg(long, value_name = "V.npy")]
    pub v: PathBuf,
    /// An array input of the pattern read from a .npy file.
    #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = params::parse_assignment)]
    pub inputs: Vec<(String, String)>,
    /// A value for a scalar or per-head input, or a knob for example inputs.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = params::parse_assignment)]
    pub params: Vec<(String, String)>,
    /// Where to write the output, (B, H, Nq, D), in the dtype of Q.
    #[arg(long, value_name = "O.npy")]
    pub out: PathBuf,
    /// Where to write the log-sum-exp, (B, H, Nq) f32.
    #[arg(long, value_name = "LSE.npy")]
    pub lse: Option<PathBuf>,
    /// Softmax scale, positive (default 1/sqrt(D)).
    #[arg(long)]
    pub scale: Option<f32>,
    /// Seed for example values of inputs given neither by --input nor --param.
    #[arg(long, default_value = "0")]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// Only the main cases (two shapes per pattern).
    #[arg(long)]
    pub quick: bool,
    /// Only patterns whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Tensor-core path where the GPU and head dim allow it: sync (mma.sync)
    /// or wgmma (sm_90a, head dims 64 and 128); default: the planner's choice.
    #[arg(long, value_parser = parse_mma)]
    pub mma: Option<lacuna_codegen::Mma>,
    /// Grid order instead of the planner's: head-major, rank-major, or heaviest-first (rank-major's older form).
    #[arg(long, value_parser = parse_grid)]
    pub grid: Option<lacuna_ir::GridOrder>,
    /// Only cases at this head dim.
    #[arg(long, value_name = "D")]
    pub head_dim: Option<u32>,
    /// Tile shape instead of the planner's, as BLOCK_QxBLOCK_KxWARPSxSTAGES
    /// (e.g. 64x48x4x2), for every case run: check a shape before timing it
    /// with `lacuna bench --tile` (with --head-dim to keep to the dims it suits).
    #[arg(long, value_parser = parse_tile)]
    pub tile: Option<[u32; 4]>,
    /// Also write the outcomes as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Sequence lengths.
    #[arg(long, value_delimiter = ',', default_value = "4096,8192,16384,32768")]
    pub ns: Vec<usize>,
    /// Head dims.
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    pub head_dims: Vec<u32>,
    /// Only these benchmark patterns (causal, window1024, moa, hash8, hash32, qkdrop50, qkdrop80).
    #[arg(long, value_delimiter = ',')]
    pub patterns: Option<Vec<String>>,
    /// Timed launches per configuration (the median is reported).
    #[arg(long, default_value = "10")]
    pub reps: usize,
    /// Tile shape instead of the planner's, as BLOCK_QxBLOCK_KxWARPSxSTAGES (e.g. 128x64x8x3).
    #[arg(long, value_parser = parse_tile)]
    pub tile: Option<[u32; 4]>,
    /// Tiles shaped for long or short rows instead of the planner's guess
    /// (before --tile, which overrides both).
    #[arg(long, value_parser = parse_rows)]
    pub rows: Option<lacuna_codegen::RowLength>,
    /// Tensor-core path where the GPU and head dim allow it: sync (mma.sync)
    /// or wgmma (sm_90a, head dims 64 and 128); default: the planner's choice.
    #[arg(long, value_parser = parse_mma)]
    pub mma: Option<lacuna_codegen::Mma>,
    /// Time each launch right after the previous one finished, L2 warm, the
    /// host's launch work on the clock (the method of every table before
    /// 2026-11-28's v4.8). By default each timed launch follows a 256 MB
    /// fill, as triton's do_bench does for the peers.
    #[arg(long)]
    pub no_flush: bool,
    /// Grid order instead of the planner's: head-major, rank-major, or heaviest-first (rank-major's older form).
    #[arg(long, value_parser = parse_grid)]
    pub grid: Option<lacuna_ir::GridOrder>,
    /// CTAs per query block's keys (split-KV, then a combine launch)
    /// instead of the runtime's choice; 1 runs the plain kernel.
    #[arg(long)]
    pub kv_splits: Option<usize>,
    /// Decoding: this many query rows per head (the last tokens of each N),
    /// on the decoding patterns (decode, moa-decode) instead of the grid's.
    #[arg(long)]
    pub q_len: Option<usize>,
    /// Also write the rows as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchMethodsArgs {
    /// Sequence lengths (bf16, B=4, H=16, D=64).
    #[arg(long, value_delimiter = ',', default_value = "4096,8192,16384,32768")]
    pub ns: Vec<usize>,
    /// Only these methods: dense, hash, qkdrop, moa, sparsek (dense causal is always timed: it is every ratio's baseline).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<String>>,
    /// Timed calls per configuration after 3 warm-up calls (the median is reported).
    #[arg(long, default_value = "10")]
    pub reps: usize,
    /// Tensor-core path where the GPU and head dim allow it: sync (mma.sync)
    /// or wgmma (sm_90a, head dims 64 and 128); default: the planner's choice.
    #[arg(long, value_parser = parse_mma)]
    pub mma: Option<lacuna_codegen::Mma>,
    /// Tiles of every method's kernel (not the dense baseline's) shaped for
    /// long or short rows, instead of each method's choice.
    #[arg(long, value_parser = parse_rows)]
    pub rows: Option<lacuna_codegen::RowLength>,
    /// Also write the rows as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
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

#[derive(Args, Debug)]
pub struct CompileArgs {
    /// A standard pattern (see `lacuna patterns`).
    pub pattern: String,
    /// Head dimension D: a multiple of 16 from 16 to 256 (64 and 128 are tuned).
    #[arg(long, value_name = "D")]
    pub head_dim: u32,
    /// Element type of Q, K, V and O: bf16 or fp16.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// GPU target: sm_80 (Ampere) or sm_90a (Hopper).
    #[arg(long, default_value = "sm_90a")]
    pub arch: String,
    /// Tensor-core path instead of the planner's choice: sync (mma.sync,
    /// any target) or wgmma (sm_90a, head dims 64 and 128).
    #[arg(long, value_parser = parse_mma)]
    pub mma: Option<lacuna_codegen::Mma>,
    /// Tiles shaped for long rows (causal-like: thousands of keys per query)
    /// or short ones (windows, buckets), instead of the planner's guess.
    #[arg(long, value_parser = parse_rows)]
    pub rows: Option<lacuna_codegen::RowLength>,
    /// Read Q/K/V rows and write O/LSE rows through `q_rows` / `kv_rows`
    /// index arrays (the kernel SCFA's pipelines use: no gather or scatter pass).
    #[arg(long)]
    pub row_index: bool,
    /// Query rows per CTA, instead of the planner's choice.
    #[arg(long, value_name = "N")]
    pub block_q: Option<u32>,
    /// Key rows per pipeline stage, instead of the planner's choice.
    #[arg(long, value_name = "N")]
    pub block_k: Option<u32>,
    /// Warps per CTA, instead of the planner's choice.
    #[arg(long, value_name = "N")]
    pub warps: Option<u32>,
    /// Depth of the K/V pipeline, instead of the planner's choice.
    #[arg(long, value_name = "N")]
    pub stages: Option<u32>,
    /// Grid order instead of the planner's: head-major, rank-major, or heaviest-first (rank-major's older form).
    #[arg(long, value_parser = parse_grid)]
    pub grid: Option<lacuna_ir::GridOrder>,
    /// The key length the kernel will run at: causal-like patterns take
    /// short-row tiles up to 4096 keys at D=64 and 8192 at D=128 (faster
    /// there); without it the tiles suit long sequences. `--rows` wins.
    #[arg(long, value_name = "N", value_parser = parse_kv_len)]
    pub kv_len: Option<usize>,
    /// The query length per head the kernel will run at: up to 64 (decoding)
    /// takes short-row tiles at any key length. `--rows` wins.
    #[arg(long, value_name = "N", value_parser = parse_kv_len)]
    pub q_len: Option<usize>,

    /// The stage to print.
    #[arg(long, value_enum, default_value = "ptx")]
    pub emit: Emit,
    /// Write the output to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// A stage `lacuna compile` can print.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// The kernel plan (tile shape, warps, pipeline, shared memory, key source) and the launch manifest.
    Plan,
    /// LLVM IR as lacuna emits it (verified, before LLVM's optimisation pipeline).
    Llvm,
    /// PTX, preceded by its `// lacuna-manifest:` line.
    Ptx,
}

#[derive(Args, Debug)]
pub struct TourArgs {
    /// Directory for the PTX files (`<pattern>_d<D>.ptx`).
    #[arg(long, value_name = "DIR", default_value = "target/lacuna-tour")]
    pub out: PathBuf,
    /// Tokens per (batch, head) in the block-mask examples.
    #[arg(long, value_name = "N", default_value = "1024", value_parser = params::parse_positive)]
    pub q_len: usize,
    /// Do not assemble the PTX with ptxas.
    #[arg(long)]
    pub no_ptxas: bool,
}

/// The `lacuna` command line over the standard patterns plus `extra` (a
/// user's own `pattern!` types, registered under CLI names), reading the
/// process arguments and writing to stdout.
pub fn main_with(extra: Vec<StandardPattern>) -> ExitCode {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    run_with(std::env::args_os(), extra, &mut out)
}

/// [`main_with`] with explicit arguments (the first is the program name) and
/// output; errors go to stderr. For tests and embedding.
pub fn run_with<I, T>(args: I, extra: Vec<StandardPattern>, out: &mut dyn Write) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    registry::register(extra);
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let result = match &cli.command {
        Command::Patterns => commands::patterns::run(&mut *out),
        Command::Ir(args) => commands::ir::run(args, &mut *out),
        Command::Mask(args) => commands::mask::run(args, &mut *out),
        Command::Compile(args) => commands::compile::run(args, &mut *out),
        Command::Tour(args) => commands::tour::run(args, &mut *out),
        Command::Run(args) => commands::run::run(args, &mut *out),
        Command::Selftest(args) => {
            let [block_q, block_k, warps, stages] = args.tile.map_or([None; 4], |t| t.map(Some));
            let base = commands::compile::PlanOverrides { mma: args.mma, grid: args.grid, block_q, block_k, warps, stages, ..Default::default() };
            let only = gpu::selftest::Only { pattern: args.filter.as_deref(), head_dim: args.head_dim };
            gpu::selftest::run(args.quick, only, base, args.json.as_deref(), &mut *out)
        }
        Command::Bench(args) => gpu::bench::run(
            &gpu::bench::BenchArgs {
                ns: &args.ns,
                head_dims: &args.head_dims,
                patterns: args.patterns.as_deref(),
                reps: args.reps,
                mma: args.mma,
                tile: args.tile,
                rows: args.rows,
                grid: args.grid,
                kv_splits: args.kv_splits,
                q_len: args.q_len,
                flush: !args.no_flush,
                json_out: args.json.as_deref(),
            },
            &mut *out,
        ),
        Command::BenchMethods(args) => gpu::methods_bench::run(
            &gpu::methods_bench::MethodsBenchArgs {
                ns: &args.ns,
                methods: args.methods.as_deref(),
                reps: args.reps,
                mma: args.mma,
                rows: args.rows,
                json_out: args.json.as_deref(),
            },
            &mut *out,
        ),
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

fn parse_mma(s: &str) -> Result<lacuna_codegen::Mma, String> {
    lacuna_codegen::Mma::parse(s).ok_or_else(|| format!("unknown tensor-core path `{s}`: use sync or wgmma"))
}

fn parse_rows(s: &str) -> Result<lacuna_codegen::RowLength, String> {
    lacuna_codegen::RowLength::parse(s).ok_or_else(|| format!("unknown row length '{s}': use long or short"))
}

fn parse_grid(s: &str) -> Result<lacuna_ir::GridOrder, String> {
    lacuna_ir::GridOrder::parse(s).ok_or_else(|| format!("unknown grid order `{s}`: use head-major, rank-major or heaviest-first"))
}

fn parse_kv_len(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a key length: give the number of keys the kernel will run at, at least 1")),
    }
}

fn parse_tile(s: &str) -> Result<[u32; 4], String> {
    let parts: Vec<u32> = s.split('x').map(str::parse).collect::<Result<_, _>>().map_err(|_| format!("`{s}` is not BLOCK_QxBLOCK_KxWARPSxSTAGES (e.g. 128x64x8x3)"))?;
    <[u32; 4]>::try_from(parts).map_err(|_| format!("`{s}` needs four numbers: BLOCK_QxBLOCK_KxWARPSxSTAGES (e.g. 128x64x8x3)"))
}
