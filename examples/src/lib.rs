//! Examples live in examples/. This library holds what the method examples
//! share: random inputs, the comparison with the CPU reference, timing, and
//! a dense causal baseline of the same shape. It is example code: it panics
//! with the error's message where a real program would handle it.

use std::collections::BTreeMap;

use lacuna_ir::reference::{attention, AttentionShape, Precision};
use lacuna_ir::{Bindings, Dims, Dtype, InputValue, Pattern, PatternIr};
use lacuna_runtime::half::bf16;
use lacuna_runtime::{AttentionKernel, DeviceTensor, ForwardOptions, Gpu, PatternArgs};

/// Unwraps with the error's message (examples stop on the first error).
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    })
}

/// Opens GPU 0, or says why not and exits.
pub fn gpu() -> Gpu {
    let gpu = ok(Gpu::new(0));
    println!("device: {} ({} SMs)", gpu.name(), gpu.sm_count());
    gpu
}

/// Problem shape (B, H, Hkv, N, D), bf16.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub n: usize,
    pub head_dim: usize,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B={} H={} Hkv={} N={} D={} bf16", self.batch, self.heads, self.kv_heads, self.n, self.head_dim)
    }
}

/// `--name value` from the command line, else `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift noise in [-1, 1).
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// Random bf16 Q, K, V on the GPU and their values as f32 (B, H, N, D).
pub struct Qkv {
    pub q: DeviceTensor,
    pub k: DeviceTensor,
    pub v: DeviceTensor,
    pub qf: Vec<f32>,
    pub kf: Vec<f32>,
    pub vf: Vec<f32>,
}

pub fn random_qkv(gpu: &Gpu, s: Shape, seed: u64) -> Qkv {
    let mut noise = Noise::new(seed);
    let mut up = |heads: usize| {
        let h: Vec<bf16> = noise.vec(s.batch * heads * s.n * s.head_dim).into_iter().map(bf16::from_f32).collect();
        let f: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
        (ok(DeviceTensor::from_host_bf16(gpu, &h, &[s.batch, heads, s.n, s.head_dim])), f)
    };
    let (q, qf) = up(s.heads);
    let (k, kf) = up(s.kv_heads);
    let (v, vf) = up(s.kv_heads);
    Qkv { q, k, v, qf, kf, vf }
}

/// Compiles (or loads from the cache) the kernel a seed method's pipeline
/// runs (SCFA: rows read and written through index arrays).
pub fn compile_method(gpu: &Gpu, method: lacuna_runtime::methods::MethodPattern, s: Shape) -> AttentionKernel {
    let t = std::time::Instant::now();
    let k = ok(method.compile(gpu, s.head_dim as u32, Dtype::Bf16));
    println!("kernel `{}` ready in {:.0} ms (compile or cache)", method.ir().name(), t.elapsed().as_secs_f64() * 1e3);
    k
}

/// [`compile_method`] for every key-length class of the method's plan, the
/// kernel picked per launch (what SCFA's QK-drop wants: its compacted length
/// is known only on the GPU).
pub fn compile_method_by_length(gpu: &Gpu, method: lacuna_runtime::methods::MethodPattern, s: Shape) -> lacuna_runtime::KernelByLength {
    let t = std::time::Instant::now();
    let k = ok(method.compile_by_length(gpu, s.head_dim as u32, Dtype::Bf16));
    println!("kernels `{}` ready in {:.0} ms (compile or cache), {} length classes", method.ir().name(), t.elapsed().as_secs_f64() * 1e3, k.classes().count());
    k
}

/// Compiles (or loads from the cache) a kernel for `ir` at this shape (its
/// tiles chosen for `s.n` keys: short causal problems take short-row tiles).
pub fn compile(gpu: &Gpu, ir: &PatternIr, s: Shape) -> AttentionKernel {
    let t = std::time::Instant::now();
    let k = ok(AttentionKernel::compile_for_length(gpu, ir, s.head_dim as u32, Dtype::Bf16, s.n));
    println!("kernel `{}` ready in {:.0} ms (compile or cache)", ir.name(), t.elapsed().as_secs_f64() * 1e3);
    k
}

/// Relative L2 error of `o` against the CPU reference of `ir` with `values`
/// (in original order), the largest LSE difference, and the masked rows'
/// correctness (output 0, LSE −inf). Prints one line and returns the error.
pub fn check_against_reference(
    ir: &PatternIr,
    values: BTreeMap<String, InputValue>,
    s: Shape,
    x: &Qkv,
    o: &DeviceTensor,
    lse: &DeviceTensor,
) -> f64 {
    let bindings = ok(Bindings::new(ir, Dims::new(s.batch, s.heads, s.n, s.n), values));
    let shape = AttentionShape {
        batch: s.batch,
        heads: s.heads,
        kv_heads: s.kv_heads,
        q_len: s.n,
        kv_len: s.n,
        head_dim: s.head_dim,
    };
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let t = std::time::Instant::now();
    let want = ok(attention(ir, &bindings, shape, &x.qf, &x.kf, &x.vf, scale, Precision::F32));
    let ref_s = t.elapsed().as_secs_f64();
    let got = ok(o.to_host_as_f32());
    let got_lse = ok(lse.to_host_f32());
    let d = s.head_dim;
    let (mut num, mut den, mut lse_err, mut masked, mut bad) = (0f64, 0f64, 0f64, 0usize, 0usize);
    for row in 0..s.batch * s.heads * s.n {
        let (g, w) = (&got[row * d..][..d], &want.out[row * d..][..d]);
        if want.lse[row] == f32::NEG_INFINITY {
            masked += 1;
            bad += usize::from(got_lse[row] != f32::NEG_INFINITY || g.iter().any(|&x| x != 0.0));
            continue;
        }
        lse_err = lse_err.max((got_lse[row] - want.lse[row]).abs() as f64);
        for t in 0..d {
            num += ((g[t] - w[t]) as f64).powi(2);
            den += (w[t] as f64).powi(2);
        }
    }
    let rel = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    println!(
        "check {s}: rel L2 error vs CPU reference {rel:.2e}, max |lse diff| {lse_err:.2e}, \
         masked rows {masked} (wrong {bad}) [reference {ref_s:.1} s]"
    );
    if bad > 0 || !rel.is_finite() || rel > 1e-2 {
        println!("FAIL: the method differs from the reference");
        std::process::exit(1);
    }
    rel
}

/// `0..n` per (b, h): original positions, as a pattern input.
pub fn iota(b: usize, h: usize, n: usize) -> InputValue {
    InputValue::I32Array { shape: vec![b, h, n], data: (0..b * h).flat_map(|_| 0..n as i32).collect() }
}

/// Median GPU time of `f` in ms over `iters` runs after two warm-ups.
pub fn median_ms(gpu: &Gpu, iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    ok(gpu.synchronize());
    let mut times: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            ok(gpu.time_ms(|| {
                f();
                Ok(())
            })) as f64
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Dense causal attention at the same shape: the baseline time in ms.
pub fn dense_causal_ms(gpu: &Gpu, s: Shape, x: &Qkv, iters: usize) -> f64 {
    let kernel = compile(gpu, &lacuna_patterns::Causal::ir(), s);
    median_ms(gpu, iters, || {
        ok(kernel.forward(&x.q, &x.k, &x.v, &PatternArgs::new(), ForwardOptions::default()));
    })
}

/// Prints the timing lines and returns the speed-up over dense causal.
pub fn report_time(s: Shape, method_ms: f64, dense_ms: f64) -> f64 {
    let causal_flop = 2.0 * s.head_dim as f64 * (s.n as f64).powi(2) * (s.batch * s.heads) as f64;
    println!("time {s}: method {method_ms:.3} ms (all steps, median), dense causal {dense_ms:.3} ms ({:.0} TFLOP/s)",
        causal_flop / dense_ms / 1e9);
    let speedup = dense_ms / method_ms;
    println!("speed-up over dense causal: {speedup:.2}x");
    speedup
}
