//! GPU tests of the runtime itself, independent of the code generator: the
//! module loaded here is hand-written PTX with a real `block_minmax` and a
//! probe forward entry that writes back every parameter it received (and the
//! first word behind every pointer), so the launch ABI, the summaries, the
//! shared-memory opt-in and the grid are checked end to end. Each test skips
//! with a printed note on a machine without libcuda.

use lacuna_ir::{pattern, Arch, Dtype, GridOrder, InputKind, KernelManifest, KernelParam, KeySource, Pattern, PatternIr, ScalarType};
use lacuna_runtime::half::{bf16, f16};
use lacuna_runtime::{AttentionKernel, DeviceTensor, ElemType, ForwardOptions, Gpu, PatternArgs, RuntimeError};

pattern! {
    /// One input of every kind.
    pub AllKinds(q_pos: Q<i32>, k_pos: K<i32>, alpha: H<i32>, beta: H<f32>, W: i32, sel: Blocks<64>) =
        q_pos[q] >= k_pos[k] && (q - k < alpha[h] + (beta[h] * W as f32) as i32 || sel[q, k]);

    /// Plain causal.
    pub Causal() = q >= k;
}

fn gpu() -> Option<Gpu> {
    if !lacuna_runtime::gpu::driver_present() {
        eprintln!("note: no libcuda on this machine; GPU test skipped");
        return None;
    }
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) => panic!("libcuda is present but device 0 cannot be opened: {e}"),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Ptr,
    I64,
    I32,
    F32,
}

/// The forward parameter list of the ABI, for a pattern.
fn abi(p: &PatternIr) -> Vec<Ty> {
    let mut t = vec![Ty::Ptr; 5];
    t.extend([Ty::I64; 12]);
    t.extend([Ty::I32; 5]);
    t.push(Ty::F32);
    for d in p.inputs() {
        match d.kind {
            InputKind::QueryTensor | InputKind::KeyTensor => t.extend([Ty::Ptr, Ty::Ptr]),
            InputKind::HeadScalar(_) => t.push(Ty::Ptr),
            InputKind::LaunchScalar(ScalarType::F32) => t.push(Ty::F32),
            InputKind::LaunchScalar(_) => t.push(Ty::I32),
            InputKind::BlockList { .. } => t.extend([Ty::Ptr, Ty::I32]),
        }
    }
    t
}

/// `block_minmax` by hand, on the generated kernel's contract: a row per
/// grid row, CTAs striding over the row's blocks by the grid's width (the
/// runtime launches `summary_grid_x(nblocks)` CTAs, fewer than blocks).
const SUMMARY_PTX: &str = r#"
.visible .entry block_minmax(.param .u64 src, .param .u64 dst, .param .u32 rows, .param .u32 n, .param .u32 block)
{
    .reg .pred %p<4>;
    .reg .b32 %r<20>;
    .reg .b64 %rd<10>;
    mov.u32 %r1, %tid.x;
    setp.ne.u32 %p1, %r1, 0;
    @%p1 bra DONE;
    ld.param.u64 %rd1, [src];
    ld.param.u64 %rd2, [dst];
    ld.param.u32 %r2, [rows];
    ld.param.u32 %r3, [n];
    ld.param.u32 %r4, [block];
    mov.u32 %r5, %ctaid.x;
    mov.u32 %r6, %ctaid.y;
    mov.u32 %r15, %nctaid.x;
    setp.ge.u32 %p2, %r6, %r2;
    @%p2 bra DONE;
    add.u32 %r16, %r3, %r4;
    sub.u32 %r16, %r16, 1;
    div.u32 %r16, %r16, %r4;
    mul.wide.u32 %rd3, %r6, %r3;
    shl.b64 %rd3, %rd3, 2;
    add.u64 %rd3, %rd1, %rd3;
BLOCKS:
    setp.ge.u32 %p2, %r5, %r16;
    @%p2 bra DONE;
    mul.lo.u32 %r7, %r5, %r4;
    add.u32 %r8, %r7, %r4;
    min.u32 %r8, %r8, %r3;
    mov.u32 %r9, 0x7fffffff;
    mov.u32 %r10, 0x80000000;
    mov.u32 %r11, %r7;
LOOP:
    setp.ge.u32 %p3, %r11, %r8;
    @%p3 bra STORE;
    mul.wide.u32 %rd4, %r11, 4;
    add.u64 %rd5, %rd3, %rd4;
    ld.global.u32 %r12, [%rd5];
    min.s32 %r9, %r9, %r12;
    max.s32 %r10, %r10, %r12;
    add.u32 %r11, %r11, 1;
    bra LOOP;
STORE:
    mad.lo.u32 %r13, %r6, %r16, %r5;
    mul.wide.u32 %rd6, %r13, 8;
    add.u64 %rd7, %rd2, %rd6;
    st.global.u32 [%rd7], %r9;
    st.global.u32 [%rd7+4], %r10;
    add.u32 %r5, %r5, %r15;
    bra BLOCKS;
DONE:
    ret;
}
"#;

/// A module with the real summary kernel and a probe forward entry. The
/// probe's block (0,0,0), thread 0 writes three u32 per parameter into lse:
/// low word, high word, and (for pointers other than o/lse) the first u32
/// behind the pointer; then ntid.x, nctaid.{x,y,z} and the dynamic shared size.
fn probe_ptx(p: &PatternIr) -> String {
    let tys = abi(p);
    let mut s = String::from(".version 8.0\n.target sm_80\n.address_size 64\n");
    s += SUMMARY_PTX;
    let params: Vec<String> = tys
        .iter()
        .enumerate()
        .map(|(i, t)| match t {
            Ty::Ptr | Ty::I64 => format!(".param .u64 a{i}"),
            Ty::I32 => format!(".param .u32 a{i}"),
            Ty::F32 => format!(".param .f32 a{i}"),
        })
        .collect();
    s += &format!("\n.visible .entry probe_fwd({})\n{{\n", params.join(", "));
    s += "    .reg .pred %p<4>;\n    .reg .b32 %r<1000>;\n    .reg .b64 %rd<400>;\n    .reg .f32 %f<100>;\n";
    s += "    mov.u32 %r1, %tid.x;\n    mov.u32 %r2, %ctaid.x;\n    mov.u32 %r3, %ctaid.y;\n    mov.u32 %r4, %ctaid.z;\n";
    s += "    or.b32 %r1, %r1, %r2;\n    or.b32 %r1, %r1, %r3;\n    or.b32 %r1, %r1, %r4;\n";
    s += "    setp.ne.u32 %p1, %r1, 0;\n    @%p1 bra DONE;\n";
    s += "    ld.param.u64 %rd1, [a4];\n";
    for (i, t) in tys.iter().enumerate() {
        let off = 12 * i;
        let (rd, lo, hi, x) = (10 + i, 10 + 3 * i, 11 + 3 * i, 12 + 3 * i);
        match t {
            Ty::Ptr | Ty::I64 => {
                s += &format!("    ld.param.u64 %rd{rd}, [a{i}];\n    mov.b64 {{%r{lo}, %r{hi}}}, %rd{rd};\n");
                if *t == Ty::Ptr && i != 3 && i != 4 {
                    s += &format!("    ld.global.u32 %r{x}, [%rd{rd}];\n");
                } else {
                    s += &format!("    mov.u32 %r{x}, 0;\n");
                }
            }
            Ty::I32 => s += &format!("    ld.param.u32 %r{lo}, [a{i}];\n    mov.u32 %r{hi}, 0;\n    mov.u32 %r{x}, 0;\n"),
            Ty::F32 => {
                s += &format!("    ld.param.f32 %f{i}, [a{i}];\n    mov.b32 %r{lo}, %f{i};\n    mov.u32 %r{hi}, 0;\n    mov.u32 %r{x}, 0;\n")
            }
        }
        s += &format!(
            "    st.global.u32 [%rd1+{off}], %r{lo};\n    st.global.u32 [%rd1+{}], %r{hi};\n    st.global.u32 [%rd1+{}], %r{x};\n",
            off + 4,
            off + 8
        );
    }
    let base = 12 * tys.len();
    for (k, sreg) in ["%ntid.x", "%nctaid.x", "%nctaid.y", "%nctaid.z", "%dynamic_smem_size"].iter().enumerate() {
        s += &format!("    mov.u32 %r{}, {sreg};\n    st.global.u32 [%rd1+{}], %r{};\n", 900 + k, base + 4 * k, 900 + k);
    }
    s += "DONE:\n    ret;\n}\n";
    s
}

fn probe_manifest(p: &PatternIr, shared_bytes: u32) -> KernelManifest {
    KernelManifest {
        entry: "probe_fwd".into(),
        summary_entry: "block_minmax".into(),
        pattern: p.name().into(),
        ir_hash: p.content_hash(),
        head_dim: 16,
        dtype: Dtype::Bf16,
        arch: Arch::Sm80,
        block_q: 64,
        block_k: 32,
        threads: 128,
        shared_bytes,
        key_source: KeySource::Scan,
        params: p.inputs().iter().map(|d| KernelParam::Input { name: d.name.clone(), kind: d.kind }).collect(),
        row_index: false,
        head_order: false,
        // The probe reads the grid back: (ceil(Nq/block_q), H, B).
        grid: GridOrder::HeadMajor,
        bucket_runs: None,
        summaries_entry: None,
        tensor_maps: false,
        dependent_launch: false,
        list_bitmaps: Vec::new(),
        split_kv: None,
    }
}

fn probe_kernel(gpu: &Gpu, p: &PatternIr, shared_bytes: u32) -> AttentionKernel {
    let text = probe_manifest(p, shared_bytes).attach_to_ptx(&probe_ptx(p));
    if let Some(path) = std::env::var_os("LACUNA_PROBE_PTX_OUT") {
        let _ = std::fs::write(path, &text);
    }
    match AttentionKernel::from_ptx(gpu, &text, p) {
        Ok(k) => k,
        Err(e) => panic!("probe PTX did not load: {e}"),
    }
}

fn bf16s(n: usize, seed: u32) -> Vec<bf16> {
    (0..n).map(|i| bf16::from_f32(((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0)).collect()
}

fn ints(n: usize, seed: i32) -> Vec<i32> {
    (0..n as i32).map(|i| (i.wrapping_mul(7919).wrapping_add(seed)).rem_euclid(1000) - 300).collect()
}

fn ok<T>(r: Result<T, RuntimeError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn forward_passes_every_parameter_in_abi_order() {
    let Some(gpu) = gpu() else { return };
    eprintln!("device: {gpu:?}");
    let p = AllKinds::ir();
    // 64 KB: above the 48 KB default, so the opt-in attribute must be set.
    let kernel = probe_kernel(&gpu, &p, 64 * 1024);
    let (b, h, hkv, nq, nk, d) = (1, 4, 2, 100, 200, 16);

    // q as a (B, N, H, D) buffer viewed as (B, H, N, D).
    let q_host = bf16s(b * nq * h * d, 1);
    let q_bnhd = ok(DeviceTensor::from_host_bf16(&gpu, &q_host, &[b, nq, h, d]), "upload q");
    let q = ok(q_bnhd.transpose(1, 2), "view q");
    assert_eq!(q.strides(), &[nq * h * d, d, h * d, 1]);
    let k_host = bf16s(b * hkv * nk * d, 2);
    let v_host = bf16s(b * hkv * nk * d, 3);
    let k = ok(DeviceTensor::from_host_bf16(&gpu, &k_host, &[b, hkv, nk, d]), "upload k");
    let v = ok(DeviceTensor::from_host_bf16(&gpu, &v_host, &[b, hkv, nk, d]), "upload v");
    let q_pos_host = ints(b * h * nq, 5);
    let k_pos_host = ints(b * h * nk, 9);
    let q_pos = ok(DeviceTensor::from_host_i32(&gpu, &q_pos_host, &[b, h, nq]), "upload q_pos");
    let k_pos = ok(DeviceTensor::from_host_i32(&gpu, &k_pos_host, &[b, h, nk]), "upload k_pos");
    let sel_host: Vec<i32> = (0..(b * h * 2 * 3) as i32).map(|i| i % 7 - 1).collect();
    let sel = ok(DeviceTensor::from_host_i32(&gpu, &sel_host, &[b, h, 2, 3]), "upload sel");
    let args = PatternArgs::new()
        .tensor("q_pos", &q_pos)
        .tensor("k_pos", &k_pos)
        .head_i32("alpha", &[3, 5, 7, 9])
        .head_f32("beta", &[0.5, 0.25, 0.125, 2.0])
        .i32("W", 77)
        .block_list("sel", &sel);

    let (o, lse) = ok(kernel.forward(&q, &k, &v, &args, ForwardOptions { scale: Some(0.3), ..ForwardOptions::default() }), "forward");
    assert_eq!(o.shape(), &[b, h, nq, d]);
    assert!(o.is_contiguous());
    assert_eq!(lse.shape(), &[b, h, nq]);
    let words: Vec<u32> = ok(lse.to_host_f32(), "download lse").into_iter().map(f32::to_bits).collect();
    let param = |i: usize| (words[3 * i], words[3 * i + 1], words[3 * i + 2]);
    let first_u32 = |x: &[bf16]| u32::from(x[0].to_bits()) | (u32::from(x[1].to_bits()) << 16);

    // Pointers: nonzero, and pointing at the right data.
    for i in 0..5 {
        let (lo, hi, _) = param(i);
        assert!(lo != 0 || hi != 0, "pointer parameter {i} is null");
    }
    assert_eq!(param(0).2, first_u32(&q_host), "q");
    assert_eq!(param(1).2, first_u32(&k_host), "k");
    assert_eq!(param(2).2, first_u32(&v_host), "v");
    // Strides (b, h, n) of q, k, v, o as i64.
    let strides: Vec<u64> = (5..17).map(|i| u64::from(param(i).0) | (u64::from(param(i).1) << 32)).collect();
    let kvs = [(hkv * nk * d) as u64, (nk * d) as u64, d as u64];
    let os = [(h * nq * d) as u64, (nq * d) as u64, d as u64];
    let qs = [(nq * h * d) as u64, d as u64, (h * d) as u64];
    assert_eq!(strides, [qs, kvs, kvs, os].concat());
    // Dimensions and scale.
    let dims: Vec<u32> = (17..22).map(|i| param(i).0).collect();
    assert_eq!(dims, vec![b as u32, h as u32, hkv as u32, nq as u32, nk as u32]);
    assert_eq!(f32::from_bits(param(22).0), 0.3 * std::f32::consts::LOG2_E);
    // Inputs in declaration order.
    assert_eq!(param(23).2 as i32, q_pos_host[0], "q_pos values");
    assert_eq!(param(24).2 as i32, *q_pos_host[..64].iter().min().expect("nonempty"), "q_pos summary [min] of block 0");
    assert_eq!(param(25).2 as i32, k_pos_host[0], "k_pos values");
    assert_eq!(param(26).2 as i32, *k_pos_host[..32].iter().min().expect("nonempty"), "k_pos summary [min] of block 0");
    assert_eq!(param(27).2, 3, "alpha[0]");
    assert_eq!(f32::from_bits(param(28).2), 0.5, "beta[0]");
    assert_eq!(param(29).0, 77, "W");
    assert_eq!(param(30).2 as i32, sel_host[0], "sel[0]");
    assert_eq!(param(31).0, 3, "sel width");
    // Launch shape: threads, grid (ceil(Nq/block_q), H, B), dynamic shared memory.
    let base = 3 * 32;
    assert_eq!(&words[base..base + 5], &[128, 2, h as u32, b as u32, 64 * 1024]);

    // forward_into with a strided o and a poisoned lse; the default scale.
    let o_bnhd = ok(DeviceTensor::zeros(&gpu, ElemType::Bf16, &[b, nq, h, d]), "alloc o");
    let mut o_view = ok(o_bnhd.transpose(1, 2), "view o");
    let mut lse2 = ok(DeviceTensor::zeros(&gpu, ElemType::F32, &[b, h, nq]), "alloc lse");
    ok(lse2.poison(), "poison lse");
    ok(kernel.forward_into(&q, &k, &v, &args, &mut o_view, &mut lse2, ForwardOptions::default()), "forward_into");
    let words2: Vec<u32> = ok(lse2.to_host_f32(), "download lse").into_iter().map(f32::to_bits).collect();
    assert_eq!(f32::from_bits(words2[3 * 22]), 0.25 * std::f32::consts::LOG2_E, "default scale 1/sqrt(16)");
    assert_eq!(&words2[3 * 14..3 * 14 + 2], &[(nq * h * d) as u32, 0], "o stride_b (low, high) of the (B, N, H, D) view");
    assert_eq!(words2[3 * 15], d as u32, "o stride_h of the view");
    assert_eq!(words2[3 * 16], (h * d) as u32, "o stride_n of the view");
    assert!(f32::from_bits(words2[words2.len() - 1]).is_nan(), "lse elements the probe did not write stay poisoned");
    ok(gpu.synchronize(), "synchronize");
}

#[test]
fn launch_errors_come_back_before_launching() {
    let Some(gpu) = gpu() else { return };
    let p = AllKinds::ir();
    let kernel = probe_kernel(&gpu, &p, 0);
    let q = ok(DeviceTensor::zeros(&gpu, ElemType::Bf16, &[1, 2, 10, 32]), "q");
    let k = ok(DeviceTensor::zeros(&gpu, ElemType::Bf16, &[1, 2, 10, 32]), "k");
    let e = kernel.forward(&q, &k, &k, &PatternArgs::new(), ForwardOptions::default()).expect_err("head dim 32 != 16");
    assert!(e.to_string().starts_with("kernel compiled for head_dim 16, got 32"), "{e}");
    let q = ok(DeviceTensor::zeros(&gpu, ElemType::Bf16, &[1, 2, 10, 16]), "q");
    let e = kernel.forward(&q, &q, &q, &PatternArgs::new(), ForwardOptions::default()).expect_err("no inputs bound");
    assert!(matches!(e, RuntimeError::MissingInput { ref name, .. } if name == "q_pos"), "{e}");
    let f = ok(DeviceTensor::zeros(&gpu, ElemType::F16, &[1, 2, 10, 16]), "f16");
    let e = kernel.forward(&f, &f, &f, &PatternArgs::new(), ForwardOptions::default()).expect_err("fp16");
    assert!(matches!(e, RuntimeError::Dtype { .. }), "{e}");
    // The output may not alias an input.
    let mut lse = ok(DeviceTensor::zeros(&gpu, ElemType::F32, &[1, 2, 10]), "lse");
    let mut o = ok(q.view(q.shape(), q.strides()), "alias");
    let qp = ok(DeviceTensor::zeros(&gpu, ElemType::I32, &[1, 2, 10]), "q_pos");
    let sel = ok(DeviceTensor::zeros(&gpu, ElemType::I32, &[1, 2, 1, 1]), "sel");
    let args = PatternArgs::new()
        .tensor("q_pos", &qp)
        .tensor("k_pos", &qp)
        .head_i32("alpha", &[1, 2])
        .head_f32("beta", &[1.0, 2.0])
        .i32("W", 1)
        .block_list("sel", &sel);
    let e = kernel.forward_into(&q, &q, &q, &args, &mut o, &mut lse, ForwardOptions::default()).expect_err("alias");
    assert!(matches!(e, RuntimeError::Aliased { .. }), "{e}");
}

#[test]
fn loading_checks_pattern_and_reports_bad_ptx_as_values() {
    let Some(gpu) = gpu() else { return };
    let p = AllKinds::ir();
    let text = probe_manifest(&p, 0).attach_to_ptx(&probe_ptx(&p));
    let e = AttentionKernel::from_ptx(&gpu, &text, &Causal::ir()).expect_err("wrong pattern");
    assert!(matches!(e, RuntimeError::WrongPattern { .. }), "{e}");
    let e = AttentionKernel::from_ptx(&gpu, &probe_ptx(&p), &p).expect_err("no manifest");
    assert!(matches!(e, RuntimeError::Manifest(_)), "{e}");
    let garbage = probe_manifest(&p, 0).attach_to_ptx(".version 8.0\n.target sm_80\nthis is not ptx\n");
    let e = AttentionKernel::from_ptx(&gpu, &garbage, &p).expect_err("bad ptx");
    assert!(matches!(e, RuntimeError::Driver { .. }), "{e}");
    let mut m = probe_manifest(&p, 0);
    m.shared_bytes = 10 << 20;
    let e = AttentionKernel::from_ptx(&gpu, &m.attach_to_ptx(&probe_ptx(&p)), &p).expect_err("10 MB shared");
    assert!(matches!(e, RuntimeError::KernelTooBig { .. }), "{e}");
}

fn cpu_summary(values: &[i32], rows: usize, n: usize, block: usize) -> Vec<i32> {
    let mut out = Vec::new();
    for r in 0..rows {
        for chunk in values[r * n..(r + 1) * n].chunks(block) {
            out.push(*chunk.iter().min().expect("nonempty"));
            out.push(*chunk.iter().max().expect("nonempty"));
        }
    }
    out
}

#[test]
fn block_summaries_match_the_cpu_including_split_grids() {
    let Some(gpu) = gpu() else { return };
    let p = AllKinds::ir();
    let kernel = probe_kernel(&gpu, &p, 0);
    for (b, h, n, block) in [(2, 3, 1000, 64), (1, 1, 5, 64), (2, 40_000, 3, 2)] {
        let host = ints(b * h * n, 11);
        let t = ok(DeviceTensor::from_host_i32(&gpu, &host, &[b, h, n]), "upload");
        let s = ok(kernel.block_summary(&t, block as u32), "summary");
        assert_eq!(s.shape(), &[b, h, n.div_ceil(block), 2]);
        assert!(ok(s.to_host_i32(), "download") == cpu_summary(&host, b * h, n, block), "B={b} H={h} N={n} block={block}");
    }
}

#[test]
fn tensors_roundtrip_view_and_fill() {
    let Some(gpu) = gpu() else { return };
    assert!(matches!(Gpu::new(10_000), Err(RuntimeError::NoDevice { ordinal: 10_000, .. })));
    assert!(gpu.sm_count() > 0 && !gpu.name().is_empty());

    let b: Vec<bf16> = bf16s(24, 4);
    let t = ok(DeviceTensor::from_host_bf16(&gpu, &b, &[2, 3, 4]), "bf16");
    assert_eq!(ok(t.to_host_bf16(), "down"), b);
    let h: Vec<f16> = (0..24).map(|i| f16::from_f32(i as f32 * 0.5)).collect();
    let t16 = ok(DeviceTensor::from_host_f16(&gpu, &h, &[24]), "f16");
    assert_eq!(ok(t16.to_host_f16(), "down"), h);
    assert_eq!(ok(t16.to_host_as_f32(), "widen")[3], 1.5);
    let f: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let tf = ok(DeviceTensor::from_host_f32(&gpu, &f, &[2, 3]), "f32");
    assert_eq!(ok(tf.to_host_f32(), "down"), f);
    assert!(matches!(tf.to_host_i32(), Err(RuntimeError::UnsupportedDtype { .. })));
    assert!(matches!(DeviceTensor::from_host_f32(&gpu, &f, &[4, 2]), Err(RuntimeError::HostLength { .. })));

    // Transposed views download in their own row-major order.
    let tt = ok(tf.transpose(0, 1), "transpose");
    assert_eq!(ok(tt.to_host_f32(), "down"), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert!(tf.view(&[2, 4], &[4, 1]).is_err(), "a view past the buffer is refused");

    // Filling a view with holes leaves the holes alone; a dense permuted view is one memset.
    let ints_host: Vec<i32> = (0..12).collect();
    let base = ok(DeviceTensor::from_host_i32(&gpu, &ints_host, &[12]), "i32");
    let mut evens = ok(base.view(&[6], &[2]), "every other");
    ok(evens.fill_i32(-7), "fill");
    assert_eq!(ok(base.to_host_i32(), "down"), vec![-7, 1, -7, 3, -7, 5, -7, 7, -7, 9, -7, 11]);
    let mut odd_tail = ok(base.view_at(5, &[3], &[2]), "offset view");
    ok(odd_tail.poison(), "poison");
    assert_eq!(ok(base.to_host_i32(), "down")[5..10], [i32::MIN, -7, i32::MIN, -7, i32::MIN]);
    let mut tb = ok(t.transpose(0, 2), "permuted");
    ok(tb.fill_f32(1.5), "fill bf16");
    assert!(ok(t.to_host_bf16(), "down").iter().all(|x| x.to_f32() == 1.5));
    let mut z = ok(DeviceTensor::zeros(&gpu, ElemType::F32, &[3, 3]), "zeros");
    ok(z.poison(), "poison f32");
    assert!(ok(z.to_host_f32(), "down").iter().all(|x| x.is_nan()));
}

#[test]
fn timing_measures_gpu_work() {
    let Some(gpu) = gpu() else { return };
    let p = AllKinds::ir();
    let kernel = probe_kernel(&gpu, &p, 0);
    let n = 1 << 20;
    let host = ints(n, 3);
    let t = ok(DeviceTensor::from_host_i32(&gpu, &host, &[1, 1, n]), "upload");
    let (s, ms) = ok(gpu.timed(|| kernel.block_summary(&t, 1024)), "timed");
    assert!(ms.is_finite() && ms > 0.0, "{ms} ms");
    assert_eq!(s.shape(), &[1, 1, 1024, 2]);
    let ms = ok(gpu.time_ms(|| Ok(())), "empty");
    assert!((0.0..100.0).contains(&ms), "{ms} ms for nothing");
}

#[test]
fn the_sm_clock_reads_a_clock_the_card_can_run_at() {
    let Some(gpu) = gpu() else { return };
    let clock = ok(lacuna_runtime::clock::SmClock::load(&gpu), "loading the clock probe");
    let readings: Vec<f64> = (0..3).map(|_| ok(clock.mhz(), "reading the clock")).collect();
    // Every CUDA GPU Lacuna runs on (sm_80 and later) clocks its SMs
    // between a few hundred MHz and about 3 GHz.
    for mhz in &readings {
        assert!((200.0..3500.0).contains(mhz), "SM clock {mhz} MHz (readings {readings:?})");
    }
}
