//! Plan validation and compilation of every supported head dim, checked on
//! the emitted text (no GPU, no ptxas).

mod common;

use lacuna_codegen::{compile, Arch, CodegenError, Dtype, KernelPlan, KeySource, Mma, RowLength, SUMMARY_ENTRY};
use lacuna_ir::{GridOrder, KernelParam};

#[test]
fn plan_rejects_unsupported_head_dims() {
    let p = common::causal();
    for d in [0, 8, 24, 100, 272, 512] {
        let err = KernelPlan::for_pattern(&p, d, Dtype::Bf16, Arch::Sm90a).expect_err("unsupported head dim");
        assert!(matches!(err, CodegenError::UnsupportedHeadDim { head_dim } if head_dim == d), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("multiple of 16") && msg.contains("256"), "message says what is supported: {msg}");
    }
}

#[test]
fn plan_validation_catches_bad_fields() {
    let p = common::causal();
    let base = KernelPlan::for_pattern(&p, 64, Dtype::Bf16, Arch::Sm80).expect("plan");
    let invalid = |f: &dyn Fn(&mut KernelPlan)| {
        let mut plan = base.clone();
        f(&mut plan);
        plan.validate().expect_err("invalid plan")
    };
    assert!(matches!(invalid(&|p| p.block_q = 100), CodegenError::InvalidPlan { .. }));
    assert!(matches!(invalid(&|p| p.block_k = 40), CodegenError::InvalidPlan { .. }));
    assert!(matches!(invalid(&|p| p.stages = 1), CodegenError::InvalidPlan { .. }));
    assert!(matches!(invalid(&|p| p.warps = 0), CodegenError::InvalidPlan { .. }));
    assert!(matches!(invalid(&|p| p.head_dim = 72), CodegenError::UnsupportedHeadDim { head_dim: 72 }));
    // 8 stages of 2 x 256 rows at D=256 is far beyond sm_80's 163 KB.
    let err = invalid(&|p| {
        p.head_dim = 256;
        p.block_k = 256;
        p.stages = 8;
    });
    assert!(matches!(err, CodegenError::SharedMemory { arch: Arch::Sm80, .. }), "{err:?}");
    assert!(err.to_string().contains("stages"), "says what to lower: {err}");
    // compile() re-checks the plan rather than trusting it.
    let mut bad = base.clone();
    bad.stages = 1;
    assert!(matches!(compile(&p, &bad), Err(CodegenError::InvalidPlan { .. })));
}

#[test]
fn plan_key_source_follows_the_pattern() {
    let causal = KernelPlan::for_pattern(&common::causal(), 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    assert_eq!(causal.key_source, KeySource::Range("k in [0, q]".into()));
    let hash = KernelPlan::for_pattern(&common::hash_bucket(), 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    assert_eq!(hash.key_source, KeySource::Scan);
    // Asking for a closed form the pattern does not have is an error, not a wrong kernel.
    let mut forced = hash.clone();
    forced.key_source = KeySource::Range("k in [0, q]".into());
    let err = compile(&common::hash_bucket(), &forced).expect_err("no closed form");
    assert!(matches!(err, CodegenError::NoKeyRange { .. }), "{err:?}");
}

#[test]
fn short_problems_take_short_row_tiles() {
    for (d, limit, shape) in [(64, 4096, (64, 64, 4, 2)), (128, 8192, (64, 48, 4, 2))] {
        let causal = KernelPlan::for_pattern(&common::causal(), d, Dtype::Bf16, Arch::Sm90a).expect("plan");
        let short = causal.clone().for_length(limit);
        assert_eq!((short.block_q, short.block_k, short.warps, short.stages), shape, "D={d}");
        assert_eq!((short.rows, short.grid, short.key_source.clone()), (RowLength::Short, causal.grid, causal.key_source.clone()));
        short.validate().expect("a valid plan");
        compile(&common::causal(), &short).expect("compiles");
        // Past the limit, and for every plan that is not long-row wgmma, nothing changes.
        assert_eq!(causal.clone().for_length(limit + 1), causal);
        assert_eq!(causal.clone().with_mma(Mma::Sync).for_length(1024), causal.clone().with_mma(Mma::Sync));
        // Closed-form row-index plans keep their tiles (not measured).
        let mut rows = causal.clone();
        rows.row_index = true;
        assert_eq!(rows.clone().for_length(1024), rows);
        let hash = KernelPlan::for_pattern(&common::hash_bucket(), d, Dtype::Bf16, Arch::Sm90a).expect("plan");
        if d == 64 {
            assert_eq!(hash.clone().for_length(1024), hash);
        } else {
            // Scanned D=128 rows of at most 1,536 keys take 64-key tiles.
            let wide = hash.clone().for_length(1536);
            assert_eq!((wide.block_q, wide.block_k, wide.warps, wide.stages), (64, 64, 4, 2));
            assert_eq!(KernelPlan { block_k: 48, ..wide.clone() }, hash);
            wide.validate().expect("a valid plan");
            assert_eq!(hash.clone().for_length(1537), hash);
        }
        // Scanned rows the caller knows are long (QK-drop's compacted rows):
        // short tiles up to 8K keys at both head dims, long ones past it.
        let long_scan = hash.clone().with_row_length(RowLength::Long);
        assert_eq!(long_scan.key_source, KeySource::Scan);
        let at = |n: usize| long_scan.clone().for_length(n);
        assert_eq!((at(8192).block_q, at(8192).rows), (64, RowLength::Short), "D={d}");
        assert_eq!(at(8193), long_scan, "D={d}");
        // Shortened, they follow the short-row rules: 64-key tiles for short D=128 rows.
        assert_eq!(at(1536), hash.clone().for_length(1536), "D={d}");
        // Through index arrays (the QK-drop pipeline's kernels) they cross
        // over at 4K keys instead.
        let mut indexed = long_scan.clone();
        indexed.row_index = true;
        let at = |n: usize| indexed.clone().for_length(n);
        assert_eq!((at(4096).block_q, at(4096).rows, at(4096).row_index), (64, RowLength::Short, true), "D={d}");
        at(4096).validate().expect("a valid plan");
        assert_eq!(at(4097), indexed, "D={d}");
    }
}

/// Every key length falls in the class whose plan `for_length` gives it,
/// for every standard pattern's plan, long or short rows, with and without
/// row indices.
#[test]
fn length_classes_cover_every_length() {
    let probes: Vec<usize> = [1usize, 100, 1535, 1536, 1537, 2048, 4095, 4096, 4097, 8191, 8192, 8193, 16384, 1 << 20, usize::MAX - 1]
        .into_iter()
        .collect();
    let mut seen_multi = false;
    for sp in lacuna_patterns::standard() {
        let (name, ir) = (sp.name, (sp.ir)());
        for d in [64, 128] {
            for arch in [Arch::Sm90a, Arch::Sm80] {
                let base = KernelPlan::for_pattern(&ir, d, Dtype::Bf16, arch).expect("plan");
                for row_index in [false, true] {
                    for rows in [None, Some(RowLength::Long)] {
                        let mut plan = rows.map_or(base.clone(), |r| base.clone().with_row_length(r));
                        plan.row_index = row_index;
                        let classes = plan.length_classes();
                        assert_eq!(classes.last().map(|(b, _)| *b), Some(usize::MAX), "{name} D={d}");
                        assert!(classes.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1), "{name} D={d}: {classes:?}");
                        seen_multi |= classes.len() > 1;
                        for &n in &probes {
                            let (_, class_plan) = classes.iter().find(|(b, _)| n <= *b).expect("the last class takes every length");
                            assert_eq!(*class_plan, plan.clone().for_length(n), "{name} D={d} row_index={row_index} n={n}");
                        }
                    }
                }
            }
        }
    }
    assert!(seen_multi, "some plan changes with the length");
    // The QK-drop pipeline's kernel at D=128: 64-key short tiles up to
    // 1,536 keys, 64x48 up to 4K, long tiles past it.
    let mut drop = KernelPlan::for_pattern(&common::hash_bucket(), 128, Dtype::Bf16, Arch::Sm90a).expect("plan").with_row_length(RowLength::Long);
    drop.row_index = true;
    let shapes: Vec<(usize, u32, u32)> = drop.length_classes().iter().map(|(b, p)| (*b, p.block_q, p.block_k)).collect();
    assert_eq!(shapes, vec![(1536, 64, 64), (4096, 64, 48), (usize::MAX, 128, 128)]);
}

#[test]
fn short_band_problems_run_heaviest_first() {
    for (name, ir) in [("window", common::sliding_window()), ("moa", common::moa())] {
        for d in [64, 128] {
            let band = KernelPlan::for_pattern(&ir, d, Dtype::Bf16, Arch::Sm90a).expect("plan");
            assert_eq!((band.rows, band.grid), (RowLength::Short, GridOrder::HeadMajor), "{name} D={d}");
            let short = band.clone().for_length(4096);
            // Only the grid changes: tiles, key source and head order stay.
            assert_eq!(short, KernelPlan { grid: GridOrder::RankMajor, ..band.clone() }, "{name} D={d}");
            compile(&ir, &short).expect("compiles");
            assert_eq!(band.clone().for_length(4097), band, "{name} D={d}");
            assert_eq!(band.clone().with_mma(Mma::Sync).for_length(1024), band.clone().with_mma(Mma::Sync));
        }
    }
    // One-warpgroup D=64 tiles rescale O lazily, except scanned patterns
    // with row indices (SCFA's regrouped hash kernels; perf log v6.7).
    let plan = |ir: &lacuna_ir::PatternIr, d| KernelPlan::for_pattern(ir, d, Dtype::Bf16, Arch::Sm90a).expect("plan");
    let indexed = |mut plan: KernelPlan| {
        plan.row_index = true;
        plan
    };
    assert!(plan(&common::sliding_window(), 64).conditional_rescale());
    assert!(indexed(plan(&common::sliding_window(), 64)).conditional_rescale());
    assert!(plan(&common::causal(), 64).for_length(4096).conditional_rescale());
    assert!(!plan(&common::causal(), 64).conditional_rescale(), "the 128x64 long tiles keep the plain rescale");
    assert!(plan(&common::hash_bucket(), 64).conditional_rescale());
    assert!(!indexed(plan(&common::hash_bucket(), 64)).conditional_rescale());
    assert!(plan(&common::hash_bucket(), 128).conditional_rescale(), "O outweighs S in 64x48 tiles");
    // MoA's per-head spans keep their head order under the rank-major grid.
    let moa = KernelPlan::for_pattern(&common::moa(), 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    assert!(moa.head_order && moa.for_length(2048).head_order);
}

#[test]
fn row_length_picks_the_tiles_and_keeps_the_rest() {
    let causal = KernelPlan::for_pattern(&common::causal(), 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    let hash = KernelPlan::for_pattern(&common::hash_bucket(), 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    assert_eq!((causal.rows, hash.rows), (RowLength::Long, RowLength::Short));
    // Re-shaped for long rows: the causal kernel's tiles, the scan and the query order kept.
    let long = hash.clone().with_row_length(RowLength::Long);
    assert_eq!((long.block_q, long.block_k, long.warps, long.stages), (causal.block_q, causal.block_k, causal.warps, causal.stages));
    assert_eq!((long.key_source.clone(), long.grid, long.rows), (KeySource::Scan, hash.grid, RowLength::Long));
    long.validate().expect("a valid plan");
    assert!(long.to_string().contains("(shaped for long rows)"), "{long}");
    // Switching the tensor-core path keeps the row length.
    let sync = long.with_mma(Mma::Sync);
    assert_eq!(sync.rows, RowLength::Long);
    assert_eq!(RowLength::parse("long"), Some(RowLength::Long));
    assert_eq!(RowLength::parse("medium"), None);
}

#[test]
fn plan_display_shows_every_field() {
    let plan = KernelPlan::for_pattern(&common::sliding_window(), 128, Dtype::F16, Arch::Sm80).expect("plan");
    let text = plan.to_string();
    for needle in ["sm_80", "fp16", "head_dim 128", "block_q 128", "block_k 32", "warps: 4 (128 threads)", "3 stages", "shared memory: 93264 bytes", "softmax state 4096", "grid: (query blocks, H, B), query blocks in order", "key source: closed form"] {
        assert!(text.contains(needle), "plan text lacks {needle:?}:\n{text}");
    }
}

#[test]
fn grid_order_follows_how_work_grows_with_the_query() {
    // Causal-like and scanned work grows with q: heaviest first across heads.
    // Windows are flat: head-major, so neighbouring blocks share K/V in L2.
    let plan = |p: &lacuna_ir::PatternIr| KernelPlan::for_pattern(p, 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    assert_eq!(plan(&common::causal()).grid, GridOrder::RankMajor);
    assert_eq!(plan(&common::sliding_window()).grid, GridOrder::HeadMajor);
    let hash = lacuna_patterns::find("hash-bucket").expect("standard pattern");
    assert_eq!(plan(&(hash.ir)()).grid, GridOrder::RankMajor);
    // Block lists read keys from the whole sequence: keep heads together.
    assert_eq!(plan(&common::block_list()).grid, GridOrder::HeadMajor);
    let compiled = compile(&common::causal(), &plan(&common::causal())).expect("compiles");
    assert_eq!(compiled.manifest.grid, GridOrder::RankMajor);
}

#[test]
fn every_head_dim_compiles_for_causal() {
    let p = common::causal();
    for d in (16..=256).step_by(16) {
        for dtype in [Dtype::Bf16, Dtype::F16] {
            if dtype == Dtype::F16 && d % 64 != 0 {
                continue;
            }
            let plan = KernelPlan::for_pattern(&p, d, dtype, Arch::Sm90a).expect("plan");
            let k = compile(&p, &plan).unwrap_or_else(|e| panic!("d={d}: {e}"));
            let entry = format!("fwd_causal_d{d}_{}", dtype.name());
            assert_eq!(k.manifest.entry, entry);
            let ty = if dtype == Dtype::Bf16 { "bf16" } else { "f16" };
            let products: Vec<String> = match plan.mma {
                Mma::Sync => vec![
                    "mma.sync.aligned.m16n8k16.row.col.f32".into(),
                    "ldmatrix.sync.aligned.m8n8.x4.shared.b16".into(),
                    "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16".into(),
                    "cp.async.cg.shared.global".into(),
                    "cp.async.wait_group".into(),
                ],
                Mma::Wgmma => vec![
                    format!("wgmma.mma_async.sync.aligned.m64n{}k16.f32.{ty}.{ty}", plan.block_k),
                    format!("wgmma.mma_async.sync.aligned.m64n{d}k16.f32.{ty}.{ty}"),
                    "wgmma.fence.sync.aligned".into(),
                    "wgmma.commit_group.sync.aligned".into(),
                    "wgmma.wait_group.sync.aligned 0".into(),
                    "fence.proxy.async.shared::cta".into(),
                    // Q, K and V by TMA (no tensor inputs to stage: no cp.async at all).
                    "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes".into(),
                    "mbarrier.try_wait.parity.shared::cta.b64".into(),
                ],
            };
            assert_eq!(plan.mma == Mma::Wgmma, d == 64 || d == 128, "d={d}: sm_90a takes wgmma exactly at head dims 64 and 128");
            assert_eq!(plan.mma == Mma::Wgmma, !k.ptx.contains("cp.async.cg.shared.global"), "d={d}: wgmma kernels copy by TMA");
            for needle in products.iter().map(String::as_str).chain([
                ".target sm_90a",
                &format!(".entry {entry}("),
                &format!(".entry {SUMMARY_ENTRY}("),
                &format!(".maxntid {}", plan.threads()),
            ]) {
                assert!(k.ptx.contains(needle), "d={d} {dtype:?}: PTX lacks {needle:?}");
            }
            assert!(!k.ptx.contains(".local"), "d={d}: no local memory in the PTX");
            // compile() verified the module; the text is the verified module.
            assert!(k.llvm_ir.contains(&format!("define ptx_kernel void @{entry}(")), "d={d}: IR lacks the entry");
            assert!(k.llvm_ir.contains("define ptx_kernel void @block_minmax("));
        }
    }
}

#[test]
fn sm80_uses_ptx70_and_the_same_instructions() {
    let p = common::moa();
    let plan = KernelPlan::for_pattern(&p, 64, Dtype::Bf16, Arch::Sm80).expect("plan");
    let k = compile(&p, &plan).expect("compile");
    assert!(k.ptx.contains(".version 7.0") && k.ptx.contains(".target sm_80"), "PTX header");
    assert!(k.ptx.contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"));
    // PTX float-to-int cvt saturates and maps NaN to 0 by default (the `as i32` of eval.rs).
    assert!(k.ptx.contains("cvt.rzi.s32.f32"), "f32 -> i32 casts truncate toward zero");
}

#[test]
fn manifest_describes_the_launch() {
    let p = common::moa();
    let plan = KernelPlan::for_pattern(&p, 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    let k = compile(&p, &plan).expect("compile");
    let m = &k.manifest;
    assert_eq!(m.entry, "fwd_mo_a_d64_bf16");
    assert_eq!(m.summary_entry, "block_minmax");
    assert_eq!(m.pattern, "MoA");
    assert_eq!(m.ir_hash, p.content_hash());
    assert_eq!((m.block_q, m.block_k, m.threads), (plan.block_q, plan.block_k, plan.threads()));
    assert_eq!(m.shared_bytes, plan.shared_bytes());
    // Band span and sink span, walked as a union.
    assert!(matches!(&m.key_source, KeySource::Range(r) if r.contains(" | ")), "{:?}", m.key_source);
    let names: Vec<&str> = m.params.iter().map(|KernelParam::Input { name, .. }| name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "sink", "n"]);
    // 23 fixed parameters, then alpha, beta, sink pointers and n by value,
    // then head_order: the span reads per-head inputs, so heads differ in
    // work; then the Q, K and V tensor maps.
    assert!(plan.head_order && m.head_order);
    let params = k.ptx.split(&format!(".entry {}(", m.entry)).nth(1).and_then(|s| s.split(')').next()).expect("param list");
    assert_eq!(params.matches(".param").count(), 31);
    // Patterns whose work does not depend on the head keep the plain grid.
    let causal = KernelPlan::for_pattern(&common::causal(), 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    assert!(!causal.head_order);
}

#[test]
fn block_list_and_tensor_inputs_take_two_parameters() {
    // + 3: the Q, K and V tensor maps of the TMA kernels.
    for (p, expected) in [(common::hash_bucket(), 23 + 8 + 3), (common::block_list(), 23 + 2 + 3)] {
        let plan = KernelPlan::for_pattern(&p, 128, Dtype::Bf16, Arch::Sm90a).expect("plan");
        let k = compile(&p, &plan).expect("compile");
        let params = k.ptx.split(&format!(".entry {}(", k.manifest.entry)).nth(1).and_then(|s| s.split(')').next()).expect("params");
        assert_eq!(params.matches(".param").count(), expected, "{}", p.name());
    }
}

/// wgmma kernels load Q, K and V by TMA: three 128-byte grid-constant
/// tensor maps after every other parameter, read in place (`cvta.param`,
/// no copy to local memory), one mbarrier per stage and one for Q.
/// Row-index kernels (TMA cannot gather rows) and mma.sync kernels keep
/// cp.async and take no maps.
#[test]
fn tma_kernels_take_the_tensor_maps_last() {
    let p = common::hash_bucket();
    for d in [64, 128] {
        let plan = KernelPlan::for_pattern(&p, d, Dtype::Bf16, Arch::Sm90a).expect("plan");
        assert!(plan.tma());
        let k = compile(&p, &plan).expect("compile");
        assert!(k.manifest.tensor_maps);
        let params = k.ptx.split(&format!(".entry {}(", k.manifest.entry)).nth(1).and_then(|s| s.split(')').next()).expect("params");
        let last: Vec<&str> = params.lines().map(str::trim).filter(|l| l.starts_with(".param")).collect();
        let n = last.len();
        for (i, l) in last[n - 3..].iter().enumerate() {
            assert!(l.starts_with(".param .align 64 .b8") && l.contains(&format!("_param_{}[128]", n - 3 + i)), "{l}");
        }
        assert!(!last[n - 4].contains("[128]"), "exactly three maps");
        assert!(k.ptx.contains("cvta.param.u64"), "maps are read where they lie");
        assert_eq!(entry_text(&k.ptx, &k.manifest.entry).matches("mbarrier.init.shared::cta.b64").count(), plan.stages as usize + 1);
        assert!(k.ptx.contains("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"));
        assert!(k.plan.to_string().contains("TMA"), "{}", k.plan);
    }
    let mut indexed = KernelPlan::for_pattern(&p, 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    indexed.row_index = true;
    let sync = KernelPlan::for_pattern(&p, 64, Dtype::Bf16, Arch::Sm80).expect("plan");
    for plan in [indexed, sync] {
        assert!(!plan.tma());
        let k = compile(&p, &plan).expect("compile");
        assert!(!k.manifest.tensor_maps && !k.ptx.contains("cp.async.bulk.tensor") && !k.ptx.contains("mbarrier"));
    }
}

#[test]
fn dense_pattern_needs_no_inputs() {
    let p = common::dense();
    let plan = KernelPlan::for_pattern(&p, 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    assert_eq!(plan.key_source, KeySource::Scan);
    let k = compile(&p, &plan).expect("compile");
    assert!(k.manifest.params.is_empty());
}

#[test]
fn row_index_kernels_take_the_index_arrays_last_and_say_so() {
    let p = common::causal();
    for (arch, d) in [(Arch::Sm90a, 64), (Arch::Sm90a, 128), (Arch::Sm80, 64)] {
        let mut plan = KernelPlan::for_pattern(&p, d, Dtype::Bf16, arch).expect("plan");
        let plain = compile(&p, &plan).expect("plain kernel");
        assert!(!plain.manifest.row_index && !plain.ptx.contains("q_rows"));
        plan.row_index = true;
        let k = compile(&p, &plan).unwrap_or_else(|e| panic!("{} d{d}: {e}", arch.name()));
        assert!(k.manifest.row_index, "the manifest tells the runtime to pass the indices");
        assert!(k.plan.to_string().contains("through q_rows / kv_rows indices"));
        // The four extra parameters come after every fixed and pattern parameter.
        let define = k.llvm_ir.lines().find(|l| l.starts_with("define ptx_kernel void @fwd_")).expect("entry");
        let tail = define.rsplit_once(')').expect("parameter list").0;
        assert!(
            tail.ends_with("ptr addrspace(1) noalias %q_rows, ptr addrspace(1) noalias %kv_rows, i32 %q_src_len, i32 %kv_src_len"),
            "{} d{d}: {define}",
            arch.name()
        );
        // Index loads feed the copies: more global loads than the plain kernel.
        let loads = |k: &lacuna_codegen::CompiledKernel| entry_text(&k.ptx, &k.manifest.entry).matches("ld.global").count();
        assert!(loads(&k) > loads(&plain), "{} d{d}: no index loads", arch.name());
        assert!(k.manifest.split_kv.is_none() && !k.ptx.contains("_split("), "row-index modules have no split entry");
    }
}

/// Programmatic dependent launch (`manifest.dependent_launch`): kernels that
/// read block summaries, on sm_90a, wait (`griddepcontrol.wait`) once,
/// before the first summary load and after the Q tile's load is issued, and
/// their module's `block_summaries` lets them be scheduled as each of its
/// CTAs exits. Kernels without summaries, and sm_80 ones, have neither.
#[test]
fn summary_readers_wait_for_the_summaries_before_the_key_scan() {
    let p = common::hash_bucket();
    for d in [64, 128] {
        let plan = KernelPlan::for_pattern(&p, d, Dtype::Bf16, Arch::Sm90a).expect("plan");
        let k = compile(&p, &plan).expect("compile");
        assert!(k.manifest.dependent_launch);
        assert!(k.manifest.to_string().contains("griddepcontrol.wait before the key scan"));
        let fwd = entry_text(&k.ptx, &k.manifest.entry);
        assert_eq!(fwd.matches("griddepcontrol.wait;").count(), 1, "d{d}");
        let wait = fwd.find("griddepcontrol.wait;").expect("wait");
        // The summaries are the kernel's only global loads; Q goes out by TMA first.
        assert!(wait < fwd.find("ld.global").expect("summary loads"), "d{d}: a global load precedes the wait");
        assert!(fwd.find("cp.async.bulk.tensor").expect("Q by TMA") < wait, "d{d}: Q is issued after the wait");
        let all = entry_text(&k.ptx, k.manifest.summaries_entry.as_deref().expect("fused summaries"));
        // One trigger, in the exit block every thread reaches after its stores.
        assert_eq!(all.matches("griddepcontrol.launch_dependents;").count(), 1);
        let after: Vec<&str> = all.split("griddepcontrol.launch_dependents;").nth(1).expect("trigger").lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//")).take(1).collect();
        assert_eq!(after, ["ret;"], "the trigger is the summary kernel's last act");
    }
    for (p, arch) in [(common::sliding_window(), Arch::Sm90a), (common::block_list(), Arch::Sm90a), (common::hash_bucket(), Arch::Sm80)] {
        let plan = KernelPlan::for_pattern(&p, 64, Dtype::Bf16, arch).expect("plan");
        let k = compile(&p, &plan).expect("compile");
        // (The split-KV entry and its combine use it for themselves: see
        // `split_kv_entries_sit_beside_the_forward_kernel`.)
        assert!(!k.manifest.dependent_launch && !entry_text(&k.ptx, &k.manifest.entry).contains("griddepcontrol"), "{} {}", p.name(), arch.name());
    }
}

/// The single V slot (`KernelPlan::single_v_slot`): the D=128 short-row
/// plans on 64x48 tiles keep K in two slots and V in one, which fits four
/// CTAs per SM (the P·V overlap's layout fits three); 64x64 tiles (three
/// instead of two), block lists (ptxas spills at the fourth CTA's
/// registers) and D=64 keep the overlap or their pipeline.
#[test]
fn d128_short_rows_take_the_single_v_slot_for_a_fourth_cta() {
    for p in [common::hash_bucket(), common::sliding_window(), common::moa()] {
        let plan = KernelPlan::for_pattern(&p, 128, Dtype::Bf16, Arch::Sm90a).expect("plan");
        assert_eq!((plan.block_q, plan.block_k), (64, 48), "{}", p.name());
        assert!(plan.single_v_slot() && !plan.pv_overlap(), "{}", p.name());
        assert_eq!(plan.resident_ctas(), 4, "{}", p.name());
        let per_cta = (KernelPlan::shared_per_sm(Arch::Sm90a) / 4) - KernelPlan::SHARED_RESERVED_PER_CTA;
        assert!(plan.shared_bytes() <= per_cta, "{}: {} bytes", p.name(), plan.shared_bytes());
        let k = compile(&p, &plan).expect("compile");
        assert!(k.ptx.contains(".minnctapersm 4"), "{}", p.name());
        assert!(plan.to_string().contains("one V slot") && plan.to_string().contains("4 CTAs per SM"));
    }
    let hash = KernelPlan::for_pattern(&common::hash_bucket(), 128, Dtype::Bf16, Arch::Sm90a).expect("plan");
    let wide = hash.clone().for_length(1024);
    assert_eq!(wide.block_k, 64);
    assert!(!wide.single_v_slot() && wide.pv_overlap(), "64x64 keeps the overlap");
    let top_k = KernelPlan::for_pattern(&common::block_list(), 128, Dtype::Bf16, Arch::Sm90a).expect("plan").with_row_length(RowLength::Short);
    assert!(top_k.block_lists && !top_k.single_v_slot());
    let d64 = KernelPlan::for_pattern(&common::hash_bucket(), 64, Dtype::Bf16, Arch::Sm90a).expect("plan");
    assert!(!d64.single_v_slot());
    let mut rows = hash.clone();
    rows.row_index = true;
    assert!(!rows.single_v_slot(), "cp.async plans have no barrier to carry V");
}

/// The PTX of one entry of a module: its parameters and body, up to the next entry.
fn entry_text(ptx: &str, entry: &str) -> String {
    let body = ptx.split(&format!(".entry {entry}(")).nth(1).unwrap_or_else(|| panic!("no entry {entry}"));
    body.split(".entry ").next().expect("body").to_string()
}

/// Split-KV: every module without row indices also holds `<entry>_split`,
/// the forward kernel with `kv_splits, o_partial, lse_partial` last that
/// writes f32 partial rows instead of O, and `<entry>_combine`, which
/// merges them into O and the LSE. The plain entry is the same kernel it
/// was before the split entry existed: none of the split's parameters.
#[test]
fn split_kv_entries_sit_beside_the_forward_kernel() {
    for (p, arch) in [(common::causal(), Arch::Sm90a), (common::moa(), Arch::Sm90a), (common::hash_bucket(), Arch::Sm80)] {
        for d in [64, 128] {
            let plan = KernelPlan::for_pattern(&p, d, Dtype::Bf16, arch).expect("plan");
            let k = compile(&p, &plan).expect("compile");
            let sp = k.manifest.split_kv.as_ref().expect("a split entry");
            assert_eq!(sp.entry, format!("{}_split", k.manifest.entry));
            assert_eq!(sp.combine_entry, format!("{}_combine", k.manifest.entry));
            assert!(k.plan.to_string().contains("split-KV") && k.manifest.to_string().contains(&sp.combine_entry));
            let define = |name: &str| k.llvm_ir.lines().find(|l| l.starts_with(&format!("define ptx_kernel void @{name}("))).unwrap_or_else(|| panic!("no {name}")).to_string();
            let split = define(&sp.entry);
            assert!(split.ends_with("i32 %kv_splits, ptr addrspace(1) noalias %o_partial, ptr addrspace(1) noalias %lse_partial) #0 {") || split.contains("i32 %kv_splits, ptr addrspace(1) noalias %o_partial, ptr addrspace(1) noalias %lse_partial)"), "{split}");
            assert!(!define(&k.manifest.entry).contains("kv_splits"));
            let (plain, split, combine) = (entry_text(&k.ptx, &k.manifest.entry), entry_text(&k.ptx, &sp.entry), entry_text(&k.ptx, &sp.combine_entry));
            // The split writes 8-byte pairs (f32 partials, which LLVM moves
            // as b32); the plain kernel writes O in bf16, never such pairs.
            let pairs = |text: &str| text.contains("st.global.v2.f32") || text.contains("st.global.v2.b32");
            assert!(pairs(&split), "{}: the split entry stores f32 partial pairs", sp.entry);
            assert!(!pairs(&plain), "{}: 8-byte pairs in the plain entry", k.manifest.entry);
            // The combine reads every split's pair and LSE, weighs them by 2^(lse - max), writes bf16 pairs.
            assert!((combine.contains("ld.global.v2.f32") || combine.contains("ld.global.v2.b32")) && combine.contains("ex2.approx") && combine.contains("lg2.approx"), "{combine}");
            assert!(combine.contains("cvt.rn.bf16x2.f32"), "O in the kernel's dtype");
            // On sm_90a the combine runs behind the split grid (programmatic
            // dependent launch): the split lets it be scheduled, it waits.
            let hopper = arch == Arch::Sm90a;
            assert_eq!(sp.combine_dependent, hopper);
            assert_eq!(combine.contains("griddepcontrol.wait"), hopper);
            assert_eq!(split.contains("griddepcontrol.launch_dependents"), hopper);
            assert!(!plain.contains("griddepcontrol.launch_dependents"));
        }
    }
}

/// Decoding (`KernelPlan::for_queries`): up to one short-row query block of
/// queries takes short-row tiles at any key length; longer query rows, row
/// indices, mma.sync and plans already short are left alone.
#[test]
fn few_queries_take_short_row_tiles() {
    let plan = |ir: &lacuna_ir::PatternIr, d| KernelPlan::for_pattern(ir, d, Dtype::Bf16, Arch::Sm90a).expect("plan");
    for d in [64, 128] {
        let causal = plan(&common::causal(), d);
        assert_eq!(causal.rows, RowLength::Long);
        let decode = causal.clone().for_queries(1).for_length(1 << 15);
        assert_eq!((decode.rows, decode.block_q), (RowLength::Short, 64), "D={d}");
        assert_eq!(causal.clone().for_queries(64), causal.clone().with_row_length(RowLength::Short));
        assert_eq!(causal.clone().for_queries(65), causal, "D={d}");
        let mut indexed = causal.clone();
        indexed.row_index = true;
        assert_eq!(indexed.clone().for_queries(1), indexed);
        let sync = causal.clone().with_mma(Mma::Sync);
        assert_eq!(sync.clone().for_queries(1), sync);
        let band = plan(&common::moa(), d);
        assert_eq!(band.clone().for_queries(1), band);
    }
}
