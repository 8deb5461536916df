//! MoA end to end on the GPU: a plan (JSON, one elastic rule per head),
//! validated, evaluated at the launch length, all heads in ONE launch of the
//! Moa kernel. Checks the result against the CPU reference and times it
//! against dense causal attention of the same shape.
//!
//!   cargo run --release -p lacuna-examples --example moa -- [--n 16384] [--heads 16] [--plan plan.json]

use std::collections::BTreeMap;

use lacuna_examples::{arg, check_against_reference, compile, dense_causal_ms, gpu, median_ms, ok, random_qkv, report_time, Shape};
use lacuna_ir::InputValue;
use lacuna_runtime::methods::{MethodPattern, MoaLayer, MoaPlan};
use lacuna_runtime::moa_attention;

/// A plan with `heads` heads mixing the paper's grid: alpha in
/// {512, 1024, 2048, 4096} (scaled by `unit` / 1024), beta in {0, 1/8, 1/4},
/// 64 sink tokens.
fn plan_json(heads: usize, unit: i64) -> String {
    let head = |h: usize| {
        let alpha = [1024, 2048, 512, 4096][h % 4] * unit / 1024;
        let beta = [0.0, 0.125, 0.25, 0.0][(h + h / 4) % 4];
        format!("{{\"alpha\": {alpha}, \"beta\": {beta}, \"sink\": 64}}")
    };
    format!("{{\"layers\": [{{\"heads\": [{}]}}]}}", (0..heads).map(head).collect::<Vec<_>>().join(", "))
}

fn values(layer: &MoaLayer, n: usize) -> BTreeMap<String, InputValue> {
    let h = layer.heads.len();
    let mut v = BTreeMap::new();
    v.insert("alpha".into(), InputValue::I32Array { shape: vec![h], data: layer.heads.iter().map(|x| x.alpha as i32).collect() });
    v.insert("beta".into(), InputValue::F32Array { shape: vec![h], data: layer.heads.iter().map(|x| x.beta as f32).collect() });
    v.insert("sink".into(), InputValue::I32Array { shape: vec![h], data: layer.heads.iter().map(|x| x.sink as i32).collect() });
    v.insert("N".into(), InputValue::I32(n as i32));
    v
}

fn main() {
    let gpu = gpu();
    let iters = arg("iters", 10);

    let s = Shape { batch: 1, heads: 4, kv_heads: 2, n: arg("check-n", 1024), head_dim: 64 };
    let plan = ok(MoaPlan::from_json(&plan_json(s.heads, 128)));
    let layer = ok(plan.layer(0));
    let kernel = compile(&gpu, &MethodPattern::Moa.ir(), s);
    let x = random_qkv(&gpu, s, 1);
    let out = ok(moa_attention(&gpu, &kernel, &x.q, &x.k, &x.v, layer, s.n));
    println!("check plan spans at N={}: {:?}", s.n, ok(layer.spans(s.n)));
    check_against_reference(&MethodPattern::Moa.ir(), values(layer, s.n), s, &x, &out.o, &out.lse);

    let s = Shape { batch: arg("batch", 1), heads: arg("heads", 16), kv_heads: arg("heads", 16), n: arg("n", 16384), head_dim: 64 };
    let text = match std::env::args().skip_while(|a| a != "--plan").nth(1) {
        Some(path) => ok(std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))),
        None => plan_json(s.heads, 1024),
    };
    let plan = ok(MoaPlan::from_json(&text));
    let layer = ok(plan.layer(0));
    ok(layer.check_heads(s.heads));
    let kernel = compile(&gpu, &MethodPattern::Moa.ir(), s);
    let x = random_qkv(&gpu, s, 2);
    let method = median_ms(&gpu, iters, || {
        ok(moa_attention(&gpu, &kernel, &x.q, &x.k, &x.v, layer, s.n));
    });
    let dense = dense_causal_ms(&gpu, s, &x, iters);
    let density = ok(layer.density(s.n));
    let mean = density.iter().sum::<f64>() / density.len() as f64;
    println!("spans at N={}: {:?}", s.n, ok(layer.spans(s.n)));
    println!("density per head (share of causal pairs): {}; mean {:.1}%",
        density.iter().map(|d| format!("{:.0}%", d * 100.0)).collect::<Vec<_>>().join(" "), mean * 100.0);
    report_time(s, method, dense);
}
