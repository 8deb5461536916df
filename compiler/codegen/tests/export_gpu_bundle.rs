//! Writes the GPU check bundle read by `gpu_check/run.py`: PTX of every
//! standard pattern (and the hand-built test patterns) for sm_90a, plus test
//! cases whose masks come from the IR's own element semantics
//! (`ElementEvaluator`), so the GPU check compares the kernel with the IR,
//! not with a second implementation of each pattern.
//!
//! `cargo test -p lacuna-codegen --test export_gpu_bundle -- --ignored`, then on a GPU
//! machine: `python3 compiler/codegen/gpu_check/run.py`.

// `x % n == 0`: the workspace MSRV (1.85) predates `is_multiple_of`.
#![allow(clippy::manual_is_multiple_of)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use lacuna_codegen::{compile, Arch, Dtype, KernelPlan, KeySource};
use lacuna_ir::eval::ElementEvaluator;
use lacuna_ir::{Bindings, Dims, InputKind, InputValue, KernelParam, PatternIr};

/// (batch, heads, kv_heads, q_len, kv_len): ragged lengths, GQA, Nq != Nk both ways.
const SHAPES: [(usize, usize, usize, usize, usize); 3] = [(2, 4, 2, 300, 300), (1, 4, 1, 129, 517), (1, 4, 4, 520, 140)];

fn kind_json(k: InputKind) -> String {
    match k {
        InputKind::QueryTensor => r#"{"kind":"q"}"#.into(),
        InputKind::KeyTensor => r#"{"kind":"k"}"#.into(),
        InputKind::HeadScalar(t) => format!(r#"{{"kind":"head","ty":"{t}"}}"#),
        InputKind::LaunchScalar(t) => format!(r#"{{"kind":"launch","ty":"{t}"}}"#),
        InputKind::BlockList { block } => format!(r#"{{"kind":"list","block":{block}}}"#),
    }
}

fn value_json(v: &InputValue) -> String {
    let join = |xs: Vec<String>| xs.join(",");
    match v {
        InputValue::I32(x) => format!(r#"{{"scalar":{x}}}"#),
        InputValue::F32(x) => format!(r#"{{"scalar":{x:?}}}"#),
        InputValue::I32Array { shape, data } => format!(r#"{{"shape":{shape:?},"data":[{}]}}"#, join(data.iter().map(|x| x.to_string()).collect())),
        InputValue::F32Array { shape, data } => format!(r#"{{"shape":{shape:?},"data":[{}]}}"#, join(data.iter().map(|x| format!("{x:?}")).collect())),
    }
}

/// Inputs for one pattern and shape: example values from lacuna-patterns where
/// the pattern is standard, hand-picked ones for the test patterns.
fn inputs(name: &str, p: &PatternIr, dims: Dims, seed: u64) -> BTreeMap<String, InputValue> {
    if let Ok(sp) = lacuna_patterns::find(name) {
        let mut params = BTreeMap::new();
        let mut set = |k: &str, v: &str| {
            params.insert(k.to_string(), v.to_string());
        };
        match name {
            "sliding-window" => {
                set("W", "100");
                set("sink", "4");
            }
            "topk" => {
                set("W", "32");
                set("topk", "3");
            }
            "moa" => {
                set("alpha", "16,40,64,100");
                set("beta", "0.1,0.05,0,0.2");
                set("sink", "4,0,16,1");
            }
            _ => {}
        }
        return lacuna_patterns::example_inputs(sp, dims, &params, &BTreeMap::new(), seed).expect("example inputs");
    }
    let mut out = BTreeMap::new();
    let h = dims.heads;
    for d in p.inputs() {
        let v = match (name, d.name.as_str()) {
            (_, "window") => InputValue::I32(100),
            (_, "alpha") => InputValue::F32Array { shape: vec![h], data: vec![16.0, 40.0, 64.5, 100.0] },
            (_, "beta") => InputValue::F32Array { shape: vec![h], data: vec![0.1, 0.05, 0.0, 0.2] },
            (_, "sink") => InputValue::I32Array { shape: vec![h], data: vec![4, 0, 16, 1] },
            (_, "n") => InputValue::I32(dims.kv_len as i32),
            (_, "sel") => {
                let nq = dims.q_len.div_ceil(64);
                let nk = dims.kv_len.div_ceil(64) as u64;
                let mut s = seed;
                let mut data = Vec::new();
                for _ in 0..dims.batch * h * nq {
                    for _ in 0..3 {
                        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let r = s >> 33;
                        data.push(if r % 5 == 0 { -1 } else { (r % nk) as i32 });
                    }
                }
                InputValue::I32Array { shape: vec![dims.batch, h, nq, 3], data }
            }
            other => panic!("no test input for {other:?}"),
        };
        out.insert(d.name.clone(), v);
    }
    out
}

fn write_case(dir: &Path, case: &str, name: &str, p: &PatternIr, shape: (usize, usize, usize, usize, usize), seed: u64) {
    let (b, h, kvh, nq, nk) = shape;
    let dims = Dims::new(b, h, nq, nk);
    let values = inputs(name, p, dims, seed);
    let bindings = Bindings::new(p, dims, values.clone()).expect("bindings");
    let mut eval = ElementEvaluator::new(p, &bindings);
    let mut bits = vec![0u8; (b * h * nq * nk).div_ceil(8)];
    let mut i = 0;
    for bb in 0..b {
        for hh in 0..h {
            for q in 0..nq {
                for k in 0..nk {
                    if eval.mask(bb, hh, q, k) {
                        bits[i / 8] |= 0x80 >> (i % 8);
                    }
                    i += 1;
                }
            }
        }
    }
    std::fs::write(dir.join(format!("{case}.mask")), bits).expect("write mask");
    let mut json = format!(r#"{{"batch":{b},"heads":{h},"kv_heads":{kvh},"q_len":{nq},"kv_len":{nk},"seed":{seed},"inputs":{{"#);
    let parts: Vec<String> = values.iter().map(|(k, v)| format!(r#""{k}":{}"#, value_json(v))).collect();
    let _ = write!(json, "{}}}}}", parts.join(","));
    std::fs::write(dir.join(format!("{case}.json")), json).expect("write case");
}

#[test]
#[ignore]
fn export() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("gpu_check/kernels");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut patterns: Vec<(String, PatternIr)> = lacuna_patterns::standard().iter().map(|s| (s.name.to_string(), (s.ir)())).collect();
    patterns.push(("test-moa-f32".into(), common::moa()));
    patterns.push(("test-block-sparse".into(), common::block_list()));
    patterns.push(("test-dense".into(), common::dense()));
    let mut index = Vec::new();
    for (name, p) in &patterns {
        let cases: Vec<String> = SHAPES
            .iter()
            .enumerate()
            .map(|(i, &shape)| {
                let case = format!("case_{name}_{i}");
                write_case(&dir, &case, name, p, shape, 7 + i as u64);
                case
            })
            .collect();
        let mut jobs = vec![(64, Dtype::Bf16, false), (128, Dtype::Bf16, false)];
        if name == "causal" {
            jobs.extend([(64, Dtype::F16, false), (128, Dtype::F16, false), (64, Dtype::Bf16, true)]);
            jobs.extend([16, 32, 48, 80, 96, 112, 144, 160, 192, 224, 256].map(|d| (d, Dtype::Bf16, false)));
        }
        if name == "hash-bucket" || name == "moa" {
            jobs.push((64, Dtype::F16, false));
            jobs.push((128, Dtype::Bf16, true));
        }
        for (d, dt, scan) in jobs {
            let mut plan = KernelPlan::for_pattern(p, d, dt, Arch::Sm90a).expect("plan");
            if scan {
                plan.key_source = KeySource::Scan;
            }
            let k = compile(p, &plan).expect("compile");
            let file = format!("{}{}.ptx", k.manifest.entry, if scan { "_scan" } else { "" });
            std::fs::write(dir.join(&file), &k.ptx).expect("write ptx");
            let inputs: Vec<String> = k
                .manifest
                .params
                .iter()
                .map(|KernelParam::Input { name, kind }| format!(r#"{{"name":"{name}","spec":{}}}"#, kind_json(*kind)))
                .collect();
            index.push(format!(
                r#"{{"file":"{file}","entry":"{}","pattern":"{name}","head_dim":{d},"dtype":"{}","block_q":{},"block_k":{},"threads":{},"shared":{},"inputs":[{}],"cases":[{}]}}"#,
                k.manifest.entry,
                dt.name(),
                plan.block_q,
                plan.block_k,
                plan.threads(),
                plan.shared_bytes(),
                inputs.join(","),
                cases.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(",")
            ));
        }
    }
    std::fs::write(dir.join("index.json"), format!("[\n{}\n]\n", index.join(",\n"))).expect("write index");
}

/// Plan variants for `gpu_check/bench.py` (tuning, not correctness).
#[test]
#[ignore]
fn export_bench_variants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("gpu_check/kernels_bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut index = Vec::new();
    let variants: &[(u32, u32, u32, u32, u32)] = &[
        (64, 128, 64, 4, 3),
        (64, 128, 64, 4, 2),
        (64, 128, 64, 4, 4),
        (64, 128, 128, 4, 2),
        (64, 64, 64, 4, 3),
        (64, 128, 64, 8, 3),
        (128, 128, 64, 8, 2),
        (128, 128, 64, 8, 3),
        (128, 128, 32, 8, 3),
        (128, 128, 128, 8, 2),
        (128, 64, 64, 4, 2),
        (128, 64, 64, 4, 3),
        (128, 128, 32, 4, 3),
    ];
    for (name, p) in [("causal", common::causal()), ("dense", common::dense())] {
        for &(d, bq, bk, warps, stages) in variants {
            let mut plan = KernelPlan::for_pattern(&p, d, Dtype::Bf16, Arch::Sm90a).expect("plan");
            plan.block_q = bq;
            plan.block_k = bk;
            plan.warps = warps;
            plan.stages = stages;
            let k = compile(&p, &plan).expect("compile");
            let file = format!("{}_q{bq}_k{bk}_w{warps}_s{stages}.ptx", k.manifest.entry);
            std::fs::write(dir.join(&file), &k.ptx).expect("write");
            index.push(format!(
                r#"{{"file":"{file}","entry":"{}","pattern":"{name}","head_dim":{d},"dtype":"bf16","block_q":{bq},"block_k":{bk},"threads":{},"shared":{}}}"#,
                k.manifest.entry,
                plan.threads(),
                plan.shared_bytes()
            ));
        }
    }
    std::fs::write(dir.join("index.json"), format!("[\n{}\n]\n", index.join(",\n"))).expect("write index");
}
