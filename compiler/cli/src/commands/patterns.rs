//! `lacuna patterns`: the table of standard patterns. Prints only; builds
//! each pattern's IR to list its inputs, analyses nothing.

use std::io::Write;
use std::process::ExitCode;

use crate::error::CliError;

pub fn run(out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let all: Vec<_> = crate::registry::all().collect();
    let width = all.iter().map(|p| p.name.len()).max().unwrap_or(0).max(4);
    writeln!(out, "{:width$}  SUMMARY", "NAME")?;
    for p in all {
        let ir = (p.ir)();
        writeln!(out)?;
        writeln!(out, "{:width$}  {}", p.name, p.summary)?;
        let pad = " ".repeat(width + 2);
        if ir.inputs().is_empty() {
            writeln!(out, "{pad}inputs: (none)")?;
        }
        let name_w = ir.inputs().iter().map(|d| d.name.len()).max().unwrap_or(0);
        let kind_w = ir.inputs().iter().map(|d| d.kind.to_string().len()).max().unwrap_or(0);
        for (i, d) in ir.inputs().iter().enumerate() {
            let label = if i == 0 { "inputs:" } else { "" };
            writeln!(out, "{pad}{label:7} {:name_w$}: {:kind_w$}  {}", d.name, d.kind.to_string(), d.expected_shape())?;
        }
        let knob_w = p.knobs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (i, (knob, meaning)) in p.knobs.iter().enumerate() {
            let label = if i == 0 { "knobs:" } else { "" };
            writeln!(out, "{pad}{label:7} {knob:knob_w$}  {meaning}")?;
        }
        writeln!(out, "{pad}paper:  {}", p.paper)?;
    }
    writeln!(out)?;
    writeln!(out, "Scalar and per-head inputs and knobs take `--param NAME=VALUE`; arrays take `--input NAME=FILE.npy`;")?;
    writeln!(out, "`lacuna mask` makes example values for any input not given.")?;
    Ok(ExitCode::SUCCESS)
}
