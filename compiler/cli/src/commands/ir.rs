//! `lacuna ir`: a pattern's IR text, content hash and closed-form key range,
//! then the verifier. Also owns how a key range is described in words, which
//! `lacuna mask` and `lacuna tour` reuse.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::process::ExitCode;

use lacuna_ir::{KeyRange, Node, PatternIr};

use crate::error::CliError;
use crate::params;
use crate::IrArgs;

pub fn run(args: &IrArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let pattern = crate::registry::find(&args.pattern)?;
    let ir = (pattern.ir)();
    // The IR does not depend on parameters; they are checked against the
    // declaration so a typo shows up here rather than at launch.
    let given = params::collect(&args.params, "--param")?;
    let mut bound = Vec::new();
    for (name, value) in &given {
        match ir.inputs().iter().find(|d| &d.name == name) {
            Some(decl) => bound.push(format!("{name} {}", params::describe(&params::to_input_value(decl, value, None)?))),
            None if pattern.knobs.iter().any(|(k, _)| k == name) => bound.push(format!("{name} = {value} (knob)")),
            None => {
                return Err(CliError::UnknownParam {
                    pattern: pattern.name.into(),
                    name: name.clone(),
                    accepted: params::accepted_names(ir.inputs(), pattern.knobs),
                })
            }
        }
    }
    write_ir(out, &ir)?;
    if !bound.is_empty() {
        writeln!(out, "params: {}", bound.join(", "))?;
    }
    verified(&ir)?;
    writeln!(out, "verify: ok")?;
    Ok(ExitCode::SUCCESS)
}

/// The IR text, its content hash and its key range: what `lacuna ir` and `lacuna tour` print first.
pub fn write_ir(out: &mut dyn Write, ir: &PatternIr) -> io::Result<()> {
    write!(out, "{ir}")?;
    writeln!(out, "content hash: {:016x}", ir.content_hash())?;
    writeln!(out, "key range: {}", key_range_text(ir))
}

/// Runs the verifier and turns its list of violations into one error.
pub fn verified(ir: &PatternIr) -> Result<(), CliError> {
    lacuna_ir::verify(ir).map_err(|errors| CliError::Verify {
        pattern: ir.name().into(),
        errors: errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"),
    })
}

/// `k in [...]` with the launch-uniform terms it mentions spelled out, or why there is none.
pub fn key_range_text(ir: &PatternIr) -> String {
    let Some(range) = KeyRange::derive(ir) else {
        return "none in closed form (the predicate puts no affine bound on k); kernels scan the tiles the block mask keeps".into();
    };
    let terms: BTreeSet<_> = range
        .spans
        .iter()
        .flat_map(|s| s.lower.iter().chain(&s.upper))
        .flat_map(|b| b.terms.iter().map(|(_, t)| *t))
        .collect();
    let legend: Vec<String> = terms
        .iter()
        .map(|&t| match ir.node(t) {
            Node::Input(i) => {
                let d = ir.input(*i);
                format!("{t} = {}", d.kind.access_form(&d.name))
            }
            _ => format!("{t} as in the IR"),
        })
        .collect();
    if legend.is_empty() {
        range.to_string()
    } else {
        format!("{range}  where {}", legend.join(", "))
    }
}
