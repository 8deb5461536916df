//! `lacuna mask`: binds a pattern's inputs (files, then `--param`, then
//! examples), runs the block analysis and prints the block mask as text,
//! JSON or PNG, optionally checked against brute force. Generates no code.
//! Binding and the size limits are shared with `lacuna tour`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lacuna_ir::{BindError, Bindings, BlockMask, Dims, InputKind, InputValue, PatternIr, TileShape};
use lacuna_patterns::StandardPattern;
use serde::Serialize;

use crate::commands::ir::{key_range_text, verified};
use crate::error::CliError;
use crate::{npy, params, picture, MaskArgs};

/// Text output shows at most this many (b, h) pictures.
const MAX_PICTURES: usize = 4;
/// With query or key tensor inputs, B·H·(Nq + Nk) at most this many: each
/// (query, key) tensor pair then holds at most 1 GiB of i32.
const MAX_ELEMENTS: u128 = 1 << 28;
/// The block mask holds at most this many tiles.
const MAX_TILES: u128 = 1 << 28;
/// `--check` visits every element; beyond this it would run for hours.
pub const MAX_CHECK: u128 = 1 << 31;

/// Where an input's value came from, for the `inputs:` lines.
enum Source {
    File(PathBuf),
    Param,
    Example,
}

#[derive(Serialize)]
struct MaskJson {
    q_blocks: usize,
    k_blocks: usize,
    classes: Vec<Vec<Vec<&'static str>>>,
    counts: CountsJson,
}

#[derive(Serialize)]
struct CountsJson {
    empty: usize,
    partial: usize,
    full: usize,
}

pub fn run(args: &MaskArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let pattern = crate::registry::find(&args.pattern)?;
    let ir = (pattern.ir)();
    verified(&ir)?;
    let dims = Dims::new(args.batch, args.heads, args.q_len, args.kv_len.unwrap_or(args.q_len));
    let tiles = TileShape::new(args.block_q, args.block_k);
    check_size(&ir, dims, tiles)?;
    let check_elements = element_count(dims);
    if args.check && check_elements > MAX_CHECK {
        return Err(CliError::CheckTooLarge { elements: check_elements });
    }

    let Bound { bindings, inputs_text } = bind_inputs(pattern, &ir, dims, &args.inputs, &args.params, args.seed)?;

    let mask = lacuna_ir::analyze(&ir, &bindings, tiles)?;
    let check = args.check.then(|| lacuna_ir::check_against_brute_force(&ir, &bindings, &mask));
    let png = match &args.png {
        Some(path) => Some((path, picture::write_png(&mask, path)?)),
        None => None,
    };

    let mut err = io::stderr();
    if args.json {
        serde_json::to_writer(&mut *out, &to_json(&mask))?;
        writeln!(out)?;
        if let Some((path, info)) = png {
            let _ = writeln!(err, "{}", png_line(path, info));
        }
        if let Some(c) = check {
            let _ = writeln!(err, "{c}");
        }
    } else {
        let d = dims;
        writeln!(out, "pattern {}: B={} H={} Nq={} Nk={}, tiles of {} x {}", pattern.name, d.batch, d.heads, d.q_len, d.kv_len, tiles.block_q, tiles.block_k)?;
        write!(out, "{inputs_text}")?;
        writeln!(out, "key range: {}", key_range_text(&ir))?;
        write!(out, "{}", picture::text(&mask, MAX_PICTURES))?;
        writeln!(out, "{}", visited_line(&mask))?;
        if let Some((path, info)) = png {
            writeln!(out, "{}", png_line(path, info))?;
        }
        if let Some(c) = check {
            writeln!(out, "{c}")?;
        }
    }
    match check {
        Some(c) if !c.is_sound() => {
            let _ = writeln!(err, "error: the block mask is unsound for `{}`: a kernel using it would compute wrong results; this is a bug in lacuna, please report it with this command line", pattern.name);
            Ok(ExitCode::from(1))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// A pattern's inputs bound for one problem shape, with the `input NAME: ...`
/// lines that say where each value came from.
pub struct Bound {
    pub bindings: Bindings,
    pub inputs_text: String,
}

/// Binds a pattern's inputs: `--input` files first, then `--param` values,
/// then example values (from `seed`) for the rest. `lacuna tour` passes no
/// files and no params, so every input is an example.
pub fn bind_inputs(
    pattern: &StandardPattern,
    ir: &PatternIr,
    dims: Dims,
    inputs: &[(String, String)],
    params: &[(String, String)],
    seed: u64,
) -> Result<Bound, CliError> {
    let files = params::collect(inputs, "--input")?;
    let param_values = params::collect(params, "--param")?;
    let mut given: BTreeMap<String, InputValue> = BTreeMap::new();
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    for (name, file) in &files {
        let Some(decl) = ir.inputs().iter().find(|d| &d.name == name) else {
            let inputs: Vec<String> = ir.inputs().iter().map(|d| format!("{} ({})", d.name, d.expected_shape())).collect();
            return Err(CliError::UnknownInput {
                pattern: pattern.name.into(),
                name: name.clone(),
                inputs: if inputs.is_empty() { "(none)".into() } else { inputs.join(", ") },
            });
        };
        let path = PathBuf::from(file);
        given.insert(name.clone(), npy::read_input(decl, &path, dims)?);
        sources.insert(name.clone(), Source::File(path));
    }
    for (name, value) in &param_values {
        match ir.inputs().iter().find(|d| &d.name == name) {
            Some(_) if given.contains_key(name) => return Err(CliError::GivenTwice { name: name.clone() }),
            Some(decl) => {
                given.insert(name.clone(), params::to_input_value(decl, value, Some(dims.heads))?);
                sources.insert(name.clone(), Source::Param);
            }
            None if pattern.knobs.iter().any(|(k, _)| k == name) => {}
            None => {
                return Err(CliError::UnknownParam {
                    pattern: pattern.name.into(),
                    name: name.clone(),
                    accepted: params::accepted_names(ir.inputs(), pattern.knobs),
                })
            }
        }
    }
    let examples = lacuna_patterns::example_inputs(pattern, dims, &param_values, &given, seed)?;
    let mut values = given;
    for (name, v) in examples {
        if let std::collections::btree_map::Entry::Vacant(slot) = values.entry(name) {
            sources.insert(slot.key().clone(), Source::Example);
            slot.insert(v);
        }
    }
    let inputs_text = describe_inputs(ir, &values, &sources, seed);
    let bindings = Bindings::new(ir, dims, values).map_err(|source| {
        let file = bind_error_input(&source).and_then(|n| match sources.get(n) {
            Some(Source::File(p)) => Some(p.clone()),
            _ => None,
        });
        CliError::Bind { source, file }
    })?;
    Ok(Bound { bindings, inputs_text })
}

/// Refuses problems whose inputs or tile list would not fit in memory here.
pub fn check_size(ir: &PatternIr, dims: Dims, tiles: TileShape) -> Result<(), CliError> {
    let tensor_inputs = ir.inputs().iter().filter(|d| matches!(d.kind, InputKind::QueryTensor | InputKind::KeyTensor)).count();
    let bh = dims.batch as u128 * dims.heads as u128;
    let elements = bh * (dims.q_len as u128 + dims.kv_len as u128);
    if tensor_inputs > 0 && elements > MAX_ELEMENTS {
        return Err(CliError::TooLarge {
            what: "B·H·(Nq + Nk)",
            count: elements,
            limit: MAX_ELEMENTS,
            advice: "use shorter --q-len / --kv-len, fewer heads or a smaller batch",
        });
    }
    let count = bh * dims.q_len.div_ceil(tiles.block_q) as u128 * dims.kv_len.div_ceil(tiles.block_k) as u128;
    if count > MAX_TILES {
        return Err(CliError::TooLarge {
            what: "the number of tiles",
            count,
            limit: MAX_TILES,
            advice: "use larger --block-q / --block-k",
        });
    }
    Ok(())
}

/// The input a binding error is about, to say which file it came from.
fn bind_error_input(e: &BindError) -> Option<&str> {
    match e {
        BindError::WrongShape { name, .. } | BindError::WrongType { name, .. } | BindError::BlockOutOfRange { name, .. } => Some(name),
        _ => None,
    }
}

/// B·H·Nq·Nk: the elements a brute-force check evaluates.
pub fn element_count(dims: Dims) -> u128 {
    dims.batch as u128 * dims.heads as u128 * dims.q_len as u128 * dims.kv_len as u128
}

/// `visited: P% of the N elements`: the share of the attention matrix inside kept tiles.
pub fn visited_line(mask: &BlockMask) -> String {
    let total = element_count(mask.dims);
    let visited = mask.visited_elements() as u128;
    format!("visited: {:.1}% of the {} elements", 100.0 * visited as f64 / total as f64, total)
}

fn describe_inputs(ir: &PatternIr, values: &BTreeMap<String, InputValue>, sources: &BTreeMap<String, Source>, seed: u64) -> String {
    let mut s = String::new();
    for d in ir.inputs() {
        let Some(v) = values.get(&d.name) else { continue };
        let from = match sources.get(&d.name) {
            Some(Source::File(p)) => format!("from {}", p.display()),
            Some(Source::Param) => "from --param".into(),
            Some(Source::Example) | None => format!("example, seed {seed}"),
        };
        s.push_str(&format!("input {}: {} {} ({from})\n", d.name, d.kind, params::describe(v)));
    }
    s
}

fn to_json(mask: &BlockMask) -> MaskJson {
    let mut classes = Vec::with_capacity(mask.dims.batch * mask.dims.heads);
    for b in 0..mask.dims.batch {
        for h in 0..mask.dims.heads {
            let rows = mask.head(b, h).chunks(mask.k_blocks).map(|row| row.iter().map(|c| c.letter()).collect()).collect();
            classes.push(rows);
        }
    }
    let c = mask.counts();
    MaskJson { q_blocks: mask.q_blocks, k_blocks: mask.k_blocks, classes, counts: CountsJson { empty: c.empty, partial: c.partial, full: c.full } }
}

fn png_line(path: &Path, info: picture::PngInfo) -> String {
    format!("picture: wrote {} ({} x {} pixels, {} per tile)", path.display(), info.width, info.height, info.tile_px)
}
