//! Scratch: writes PTX + a JSON index for gpu_check/run.py. `cargo test -p lacuna-codegen --test export_gpu_bundle -- --ignored`
mod common;
use lacuna_codegen::*;
use lacuna_ir::{InputKind, KernelParam};

fn kind_json(k: InputKind) -> String {
    match k {
        InputKind::QueryTensor => r#"{"kind":"q"}"#.into(),
        InputKind::KeyTensor => r#"{"kind":"k"}"#.into(),
        InputKind::HeadScalar(t) => format!(r#"{{"kind":"head","ty":"{t}"}}"#),
        InputKind::LaunchScalar(t) => format!(r#"{{"kind":"launch","ty":"{t}"}}"#),
        InputKind::BlockList { block } => format!(r#"{{"kind":"list","block":{block}}}"#),
    }
}

#[test]
#[ignore]
fn export() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gpu_check/kernels");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut jobs: Vec<(lacuna_ir::PatternIr, u32, Dtype, bool)> = Vec::new();
    for p in [common::causal(), common::sliding_window(), common::hash_bucket(), common::moa(), common::block_list(), common::dense()] {
        for d in [64, 128] {
            jobs.push((p.clone(), d, Dtype::Bf16, false));
        }
    }
    for p in [common::causal(), common::hash_bucket(), common::moa()] {
        jobs.push((p.clone(), 64, Dtype::F16, false));
        jobs.push((p.clone(), 128, Dtype::F16, false));
    }
    for d in [16, 32, 48, 80, 96, 112, 144, 192, 256] {
        jobs.push((common::causal(), d, Dtype::Bf16, false));
    }
    jobs.push((common::causal(), 64, Dtype::Bf16, true));
    jobs.push((common::moa(), 128, Dtype::Bf16, true));
    let mut index = Vec::new();
    for (p, d, dt, scan) in jobs {
        let mut plan = KernelPlan::for_pattern(&p, d, dt, Arch::Sm90a).unwrap();
        if scan {
            plan.key_source = KeySource::Scan;
        }
        let k = compile(&p, &plan).unwrap();
        let file = format!("{}{}.ptx", k.manifest.entry, if scan { "_scan" } else { "" });
        std::fs::write(dir.join(&file), &k.ptx).unwrap();
        let inputs: Vec<String> = k
            .manifest
            .params
            .iter()
            .map(|KernelParam::Input { name, kind }| format!(r#"{{"name":"{name}","spec":{}}}"#, kind_json(*kind)))
            .collect();
        index.push(format!(
            r#"{{"file":"{file}","entry":"{}","pattern":"{}","head_dim":{d},"dtype":"{}","block_q":{},"block_k":{},"threads":{},"shared":{},"inputs":[{}]}}"#,
            k.manifest.entry,
            p.name(),
            dt.name(),
            plan.block_q,
            plan.block_k,
            plan.threads(),
            plan.shared_bytes(),
            inputs.join(",")
        ));
    }
    std::fs::write(dir.join("index.json"), format!("[\n{}\n]\n", index.join(",\n"))).unwrap();
}
