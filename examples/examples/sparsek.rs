//! SparseK (block form) end to end on the GPU: key scores u = K·w, 64-key
//! block scores, causal top-k key blocks per 64-query block, the TopK kernel
//! over the selection plus a causal window; one call. Checks the result
//! against the CPU reference (selection recomputed on the CPU) and times it
//! against dense causal attention of the same shape.
//!
//!   cargo run --release -p lacuna-examples --example sparsek -- [--topk 16] [--window 256] [--n 16384] [--heads 16]

use std::collections::BTreeMap;

use lacuna_examples::{arg, check_against_reference, compile, dense_causal_ms, gpu, median_ms, ok, random_qkv, report_time, Noise, Shape};
use lacuna_ir::InputValue;
use lacuna_runtime::methods::{MethodPattern, SparseKConfig, TokenScores};
use lacuna_runtime::ops::{cpu, BlockReduce};
use lacuna_runtime::{sparsek_attention, ForwardOptions, PatternArgs};

fn main() {
    let gpu = gpu();
    let topk = arg("topk", 16);
    let window = arg("window", 256) as i32;
    let iters = arg("iters", 10);
    let cfg = SparseKConfig { topk, window, reduce: BlockReduce::Max };

    let s = Shape { batch: 1, heads: 4, kv_heads: 2, n: arg("check-n", 1024), head_dim: 64 };
    let w = Noise::new(9).vec(s.head_dim);
    let kernel = compile(&gpu, &MethodPattern::TopK.ir(), s);
    let x = random_qkv(&gpu, s, 1);
    let check_cfg = SparseKConfig { topk: topk.min(4), window: window.min(128), ..cfg };
    let out = ok(sparsek_attention(&gpu, &kernel, &x.q, &x.k, &x.v, TokenScores::Weights(&w), &check_cfg));
    let u = cpu::token_scores(&x.kf, s.head_dim, &w);
    let blocks = cpu::block_scores(&u, s.n, check_cfg.reduce);
    let sel = cpu::topk_blocks(&blocks, s.batch, s.heads, s.kv_heads, s.n.div_ceil(64), s.n, check_cfg.topk, check_cfg.window);
    let same = ok(out.sel.to_host_i32()) == sel;
    println!("top-k selection (topk {}, W {}): GPU {} the CPU's", check_cfg.topk, check_cfg.window, if same { "equals" } else { "DIFFERS FROM" });
    let mut values = BTreeMap::new();
    values.insert("sel".into(), InputValue::I32Array { shape: vec![s.batch, s.heads, s.n.div_ceil(64), check_cfg.topk], data: sel });
    values.insert("W".into(), InputValue::I32(check_cfg.window));
    check_against_reference(&MethodPattern::TopK.ir(), values, s, &x, &out.o, &out.lse);
    if !same {
        std::process::exit(1);
    }

    let s = Shape { batch: arg("batch", 1), heads: arg("heads", 16), kv_heads: arg("heads", 16), n: arg("n", 16384), head_dim: 64 };
    let kernel = compile(&gpu, &MethodPattern::TopK.ir(), s);
    let x = random_qkv(&gpu, s, 2);
    let w = Noise::new(10).vec(s.head_dim);
    let method = median_ms(&gpu, iters, || {
        ok(sparsek_attention(&gpu, &kernel, &x.q, &x.k, &x.v, TokenScores::Weights(&w), &cfg));
    });
    // The attention kernel alone, on the selection the method made.
    let out = ok(sparsek_attention(&gpu, &kernel, &x.q, &x.k, &x.v, TokenScores::Weights(&w), &cfg));
    let args = PatternArgs::new().block_list("sel", &out.sel).i32("W", window);
    let kernel_only = median_ms(&gpu, iters, || {
        ok(kernel.forward(&x.q, &x.k, &x.v, &args, ForwardOptions::default()));
    });
    println!("attention kernel alone {kernel_only:.3} ms");
    let dense = dense_causal_ms(&gpu, s, &x, iters);
    let nb = s.n.div_ceil(64) as f64;
    let causal_blocks = nb * (nb + 1.0) / 2.0;
    let window_blocks = (window as f64 / 64.0).ceil() + 1.0;
    let touched = (topk as f64 + window_blocks).min(nb) * nb;
    println!("topk {topk} key blocks + window {window}: about {:.1}% of the causal key blocks", 100.0 * touched.min(causal_blocks) / causal_blocks);
    report_time(s, method, dense);
}
