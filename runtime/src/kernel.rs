//! `AttentionKernel`: a generated forward kernel loaded on one GPU, and its
//! launch. Owns the ABI glue: the summary kernel(s) into reusable scratch, per-head
//! values uploaded, then the forward kernel, all on the Gpu's stream with no
//! host round trip. Every check happens (in `validate`) before anything is
//! launched; a kernel given a wrong shape would read out of bounds silently.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaFunction, CudaModule, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use lacuna_ir::summary::{RANGE_WORDS, RUN_WORDS};
use lacuna_ir::{InputKind, KernelManifest, KernelParam, PatternIr};

use crate::args::{ArgValue, PatternArgs};
use crate::error::{Result, RuntimeError};
use crate::gpu::{arch_runs_on, Gpu};
use crate::tensor::{DeviceTensor, ElemType};
use crate::validate::{
    auto_kv_splits, check_kv_splits, check_manifest, combine_launch, forward_args, forward_launch, row_chunks, scale_log2, summary_grid_x, summary_launches, summary_len, validate_forward,
    validate_head_order, validate_inputs, validate_row_index, validate_summary_input, tensor_map_request, ForwardPointers, KernelArg, Problem,
    TensorDesc, TensorMapBytes, SUMMARY_THREADS,
};

/// One tensor input's summary, to be made before the forward launch.
struct SummaryJob<'a> {
    name: &'a str,
    src: u64,
    /// This side's bucket input, when the input is summarised with runs.
    buckets: Option<u64>,
    dst: u64,
    n: usize,
    block: u32,
}

impl SummaryJob<'_> {
    /// i32 words per block of this summary.
    fn words(&self) -> usize {
        if self.buckets.is_some() { RUN_WORDS } else { RANGE_WORDS }
    }

    fn nblocks(&self) -> usize {
        self.n.div_ceil(self.block.max(1) as usize)
    }
}

// SAFETY: a `CUtensorMap` is plain bytes the kernel takes by value
// (`.param .align 64 .b8 [128]`); the driver copies the 128 bytes behind the
// pointer cudarc passes, and the type's alignment matches the parameter's.
unsafe impl cudarc::driver::DeviceRepr for TensorMapBytes {}

/// Encodes the tensor map Q, K or V is loaded through by a TMA kernel
/// (`manifest.tensor_maps`; layout in `KernelManifest`): bf16 or fp16
/// elements, the 128-byte swizzle wgmma reads, zeros for rows past the end.
/// `desc` is `t`'s, as validation saw it.
fn tensor_map(t: &DeviceTensor, desc: &TensorDesc, box_rows: u32) -> Result<TensorMapBytes> {
    use cudarc::driver::sys::{
        CUtensorMapDataType, CUtensorMapFloatOOBfill, CUtensorMapInterleave, CUtensorMapL2promotion, CUtensorMapSwizzle,
    };
    let req = tensor_map_request(desc, box_rows)?;
    let name = &desc.name;
    let dtype = match t.dtype() {
        ElemType::Bf16 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        ElemType::F16 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        other => return Err(internal(&format!("a {other} tensor passed validation for a TMA kernel"))),
    };
    let mut map = std::mem::MaybeUninit::<cudarc::driver::sys::CUtensorMap>::zeroed();
    let element_strides = [1u32; 4];
    // SAFETY: every pointer is to a live local array of the rank (4; strides
    // 3) the call reads, and `map` is a properly aligned CUtensorMap.
    let status = unsafe {
        cudarc::driver::sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            dtype,
            4,
            t.device_ptr() as *mut std::ffi::c_void,
            req.dims.as_ptr(),
            req.strides.as_ptr(),
            req.box_dims.as_ptr(),
            element_strides.as_ptr(),
            CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    status.result().map_err(RuntimeError::driver(format!(
        "encoding the TMA tensor map of {name} (dims {:?}, byte strides {:?}, box {:?}); \
         TMA needs 16-byte aligned rows and strides below 2^40 bytes",
        req.dims, req.strides, req.box_dims
    )))?;
    // SAFETY: the driver wrote the map (a zeroed map is also valid bytes).
    let map = unsafe { map.assume_init() };
    Ok(TensorMapBytes(map.opaque))
}

/// Pushes `args` onto a launch in order: the generated kernels and the
/// helper ops both take their parameters as `KernelArg` lists.
pub(crate) fn push_args<'a>(b: &mut cudarc::driver::LaunchArgs<'a>, args: &'a [KernelArg]) {
    for a in args {
        match a {
            KernelArg::Ptr(x) => b.arg(x),
            KernelArg::I64(x) => b.arg(x),
            KernelArg::I32(x) => b.arg(x),
            KernelArg::F32(x) => b.arg(x),
            KernelArg::TensorMap(x) => b.arg(x),
        };
    }
}

/// Where `a`'s value lives, as `cuLaunchKernelEx`'s `kernelParams` entries
/// point (what `push_args` does through cudarc's builder).
fn param_ptr(a: &KernelArg) -> *mut std::ffi::c_void {
    match a {
        KernelArg::Ptr(x) => x as *const u64 as *mut _,
        KernelArg::I64(x) => x as *const i64 as *mut _,
        KernelArg::I32(x) => x as *const i32 as *mut _,
        KernelArg::F32(x) => x as *const f32 as *mut _,
        KernelArg::TensorMap(x) => x as *const TensorMapBytes as *mut _,
    }
}

/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// Per-launch options.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ForwardOptions<'a> {
    /// Softmax scale, positive and finite (the kernels fold it into the
    /// exponent; others are refused); `None` means 1/sqrt(head_dim).
    pub scale: Option<f32>,
    /// For kernels whose manifest has `head_order` (heads do different
    /// amounts of work, e.g. MoA's per-head spans): the query heads in the
    /// order to launch them, heaviest first, a permutation of 0..H. `None`
    /// launches them in index order. Kernels without `head_order` refuse it.
    pub head_order: Option<&'a [i32]>,
    /// How many CTAs share each query block's key blocks (split-KV, merged
    /// by a second launch). `None` lets the runtime choose
    /// ([`crate::validate::auto_kv_splits`]: only grids that do not fill
    /// the GPU, such as decoding, are split); `Some(1)` never splits.
    pub kv_splits: Option<usize>,
}

/// Device buffers the kernel keeps between launches, one slot per manifest
/// parameter (summaries of tensor inputs, per-head values). They only grow;
/// reuse is safe because every user of a slot runs on the same stream.
#[derive(Default)]
struct Scratch {
    slots: Vec<Option<CudaSlice<i32>>>,
    /// What each per-head slot holds now, so a launch with the same per-head
    /// values (the usual case: one model's spans) skips the host-to-device copy.
    uploaded: Vec<Option<Vec<i32>>>,
}

impl Scratch {
    /// A buffer of at least `len` i32 in slot `i`, and its device address.
    fn slot(&mut self, gpu: &Gpu, i: usize, len: usize) -> Result<(&mut CudaSlice<i32>, u64)> {
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        let slot = &mut self.slots[i];
        let big_enough = slot.as_ref().is_some_and(|b| b.len() >= len);
        if !big_enough {
            if let Some(u) = self.uploaded.get_mut(i) {
                *u = None;
            }
            // Dropping the old buffer frees it in stream order (or after a
            // sync), so a launch still reading it is unaffected.
            let fresh = gpu
                .stream()
                .alloc_zeros::<i32>(len.max(1))
                .map_err(RuntimeError::driver(format!("allocating {len} i32 of kernel scratch")))?;
            *slot = Some(fresh);
        }
        match slot {
            Some(buf) => {
                let ptr = buf.device_ptr(gpu.stream()).0;
                Ok((buf, ptr))
            }
            None => Err(internal("scratch slot vanished")),
        }
    }
}

/// An invariant of this crate broke; reported, not panicked.
fn internal(what: &str) -> RuntimeError {
    RuntimeError::Internal { what: what.into() }
}

/// The loaded functions of `KernelManifest::split_kv`.
struct SplitKv {
    forward: CudaFunction,
    combine: CudaFunction,
}

/// A Lacuna forward kernel loaded on a GPU.
pub struct AttentionKernel {
    gpu: Gpu,
    manifest: KernelManifest,
    pattern: String,
    // Kept so the functions' module stays loaded.
    _module: Arc<CudaModule>,
    forward: CudaFunction,
    summary: CudaFunction,
    /// The run summary kernel and its entry name, in modules whose pattern joins on a bucket.
    runs: Option<(CudaFunction, String)>,
    /// `manifest.summaries_entry`: every tensor input's summary in one launch.
    all_summaries: Option<CudaFunction>,
    /// `manifest.split_kv`: the split-KV entry and its combine kernel.
    split: Option<SplitKv>,
    /// (dynamic shared bytes, CTAs per SM) of the forward entry, as the
    /// driver last reported it for the automatic split count: a launch
    /// asks again only when its shared memory changes (block lists).
    occupancy: Mutex<Option<(u32, u32)>>,
    scratch: Mutex<Scratch>,
}

impl std::fmt::Debug for AttentionKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AttentionKernel({} on {:?})", self.manifest.entry, self.gpu)
    }
}

fn no_nul(what: &str, s: &str) -> Result<()> {
    // cudarc turns these into C strings and panics on an interior NUL.
    if s.contains('\0') {
        return Err(RuntimeError::BadPtx { problem: format!("{what} contains a NUL byte") });
    }
    Ok(())
}

impl AttentionKernel {
    /// Loads self-describing PTX (first line `// lacuna-manifest: {json}`)
    /// made for `pattern`, after checking that it was made for it, for this
    /// GPU, and within its limits.
    pub fn from_ptx(gpu: &Gpu, ptx_with_manifest: &str, pattern: &PatternIr) -> Result<AttentionKernel> {
        let manifest = KernelManifest::from_ptx(ptx_with_manifest)?;
        check_manifest(&manifest, pattern)?;
        let (major, minor) = gpu.compute_capability();
        if let Err(hint) = arch_runs_on(manifest.arch, major, minor) {
            return Err(RuntimeError::ArchMismatch {
                arch: manifest.arch.name(),
                device: gpu.name().into(),
                major,
                minor,
                hint,
            });
        }
        if manifest.shared_bytes > gpu.max_shared_bytes().max(DEFAULT_SHARED_LIMIT) {
            return Err(RuntimeError::KernelTooBig {
                what: "bytes of shared memory per block",
                needed: manifest.shared_bytes,
                max: gpu.max_shared_bytes(),
                device: gpu.name().into(),
            });
        }
        no_nul("the PTX text", ptx_with_manifest)?;
        no_nul("the forward entry name", &manifest.entry)?;
        no_nul("the summary entry name", &manifest.summary_entry)?;
        let module = gpu.context().load_module(Ptx::from_src(ptx_with_manifest)).map_err(RuntimeError::driver(format!(
            "loading the PTX of pattern `{}` (the driver JIT-compiles it for {}; \
             CUDA_ERROR_UNSUPPORTED_PTX_VERSION means the driver is older than the PTX)",
            manifest.pattern,
            gpu.name()
        )))?;
        let function = |name: &str| {
            module.load_function(name).map_err(RuntimeError::driver(format!("finding entry `{name}` in the PTX")))
        };
        let forward = function(&manifest.entry)?;
        let summary = function(&manifest.summary_entry)?;
        let runs = match &manifest.bucket_runs {
            Some(r) => {
                no_nul("the run summary entry name", &r.entry)?;
                Some((function(&r.entry)?, r.entry.clone()))
            }
            None => None,
        };
        let all_summaries = match &manifest.summaries_entry {
            Some(entry) => {
                no_nul("the summaries entry name", entry)?;
                Some(function(entry)?)
            }
            None => None,
        };
        let split = match &manifest.split_kv {
            Some(sp) => {
                no_nul("the split-KV entry names", &format!("{}{}", sp.entry, sp.combine_entry))?;
                Some(SplitKv { forward: function(&sp.entry)?, combine: function(&sp.combine_entry)? })
            }
            None => None,
        };
        // Block-list bitmaps grow with the key length (`shared_bytes_for`),
        // so such kernels may use all the device allows; a launch checks its
        // own size against that.
        let allowed = if manifest.list_bitmaps.is_empty() { manifest.shared_bytes } else { gpu.max_shared_bytes().max(manifest.shared_bytes) };
        if allowed > DEFAULT_SHARED_LIMIT {
            gpu.context().bind_to_thread().map_err(RuntimeError::driver("binding the CUDA context"))?;
            let entries = std::iter::once((&forward, &manifest.entry)).chain(split.as_ref().zip(manifest.split_kv.as_ref()).map(|(f, sp)| (&f.forward, &sp.entry)));
            for (f, name) in entries {
                f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, allowed as i32)
                    .map_err(RuntimeError::driver(format!("allowing {allowed} bytes of dynamic shared memory for `{name}`")))?;
            }
        }
        Ok(AttentionKernel {
            gpu: gpu.clone(),
            pattern: pattern.name().into(),
            manifest,
            _module: module,
            forward,
            summary,
            runs,
            all_summaries,
            split,
            occupancy: Mutex::new(None),
            scratch: Mutex::new(Scratch::default()),
        })
    }

    pub fn manifest(&self) -> &KernelManifest {
        &self.manifest
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Registers per thread of the forward kernel, as the driver JIT made it.
    pub fn num_regs(&self) -> Result<i32> {
        self.forward.num_regs().map_err(RuntimeError::driver("reading the kernel's register count"))
    }

    /// Local (spill) memory per thread of the forward kernel, in bytes.
    pub fn local_size_bytes(&self) -> Result<i32> {
        self.forward.local_size_bytes().map_err(RuntimeError::driver("reading the kernel's local memory size"))
    }

    /// Attention of q (B, H, Nq, D) over k, v (B, Hkv, Nk, D) under the
    /// pattern; returns o (contiguous, q's shape and dtype) and the
    /// log-sum-exp (f32, (B, H, Nq)). q, k and v may be strided views (the
    /// head_dim dimension contiguous); every row must start on a 16-byte
    /// boundary (the view's offset and its b, h, n strides multiples of 16
    /// bytes), since rows are copied 16 bytes at a time, by TMA or cp.async.
    /// Asynchronous: synchronize (or download) to see errors the kernel
    /// itself raises.
    pub fn forward(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        args: &PatternArgs<'_>,
        opts: ForwardOptions<'_>,
    ) -> Result<(DeviceTensor, DeviceTensor)> {
        // Validate before allocating, so a bad call costs nothing.
        let p = validate_forward(&self.manifest, self.gpu.ordinal(), &q.desc("q"), &k.desc("k"), &v.desc("v"), None)?;
        let mut o = DeviceTensor::zeros(&self.gpu, q.dtype(), q.shape())?;
        let mut lse = DeviceTensor::zeros(&self.gpu, ElemType::F32, &[p.batch, p.heads, p.q_len])?;
        self.forward_into(q, k, v, args, &mut o, &mut lse, opts)?;
        Ok((o, lse))
    }

    /// [`AttentionKernel::forward`] into caller-provided outputs; `o` may be
    /// strided (e.g. a (B, N, H, D) buffer viewed with `transpose(1, 2)`),
    /// `lse` must be contiguous (B, H, Nq) f32.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_into(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        args: &PatternArgs<'_>,
        o: &mut DeviceTensor,
        lse: &mut DeviceTensor,
        opts: ForwardOptions<'_>,
    ) -> Result<()> {
        self.launch_forward(q, k, v, None, args, o, lse, opts)
    }

    /// For a kernel compiled with `row_index` (see the manifest): attention
    /// over a regrouped sequence whose row i is row `q_rows[b, h, i]` of q
    /// (and key row j is row `kv_rows[b, h, j]` of k and v, in the query
    /// head's key/value head), written to row `q_rows[b, h, i]` of o and lse.
    /// The pattern's tensor inputs are in the regrouped order (length
    /// Nq' = q_rows' last dimension, Nk' = kv_rows'). Index entries outside
    /// the source rows are padding: zero rows in, nothing written out. o and
    /// lse have q's shape and (B, H, Nq); rows no index names are left as
    /// they are. This is SCFA's gather → attention → scatter in one kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rows_into(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        q_rows: &DeviceTensor,
        kv_rows: &DeviceTensor,
        args: &PatternArgs<'_>,
        o: &mut DeviceTensor,
        lse: &mut DeviceTensor,
        opts: ForwardOptions<'_>,
    ) -> Result<()> {
        self.launch_forward(q, k, v, Some((q_rows, kv_rows)), args, o, lse, opts)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_forward(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        rows: Option<(&DeviceTensor, &DeviceTensor)>,
        args: &PatternArgs<'_>,
        o: &mut DeviceTensor,
        lse: &mut DeviceTensor,
        opts: ForwardOptions<'_>,
    ) -> Result<()> {
        let m = &self.manifest;
        let (qd, kd, vd, od, ld) = (q.desc("q"), k.desc("k"), v.desc("v"), o.desc("o"), lse.desc("lse"));
        let src = validate_forward(m, self.gpu.ordinal(), &qd, &kd, &vd, Some((&od, &ld)))?;
        let p = match (m.row_index, rows) {
            (false, None) => src,
            (true, Some((qr, kr))) => validate_row_index(self.gpu.ordinal(), &qr.desc("q_rows"), &kr.desc("kv_rows"), &src)?,
            (true, None) => {
                return Err(RuntimeError::RowIndexMode {
                    entry: m.entry.clone(),
                    problem: "reads rows through index arrays: call `forward_rows_into` with q_rows and kv_rows",
                })
            }
            (false, Some(_)) => {
                return Err(RuntimeError::RowIndexMode {
                    entry: m.entry.clone(),
                    problem: "was compiled without row indices: compile it with `row_index` (`lacuna compile --row-index`) or call `forward_into`",
                })
            }
        };
        let order = validate_inputs(&self.pattern, &m.params, &args.describe(), &p, self.gpu.ordinal())?;
        let scale_log2 = scale_log2(opts.scale, p.head_dim)?;
        let head_order = match (m.head_order, opts.head_order) {
            (true, Some(order)) => Some(Cow::Borrowed(validate_head_order(&m.entry, order, p.heads)?)),
            (true, None) => Some(Cow::Owned((0..p.heads as i32).collect())),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(RuntimeError::HeadOrder {
                    entry: m.entry.clone(),
                    problem: "runs heads in index order (its pattern's work does not depend on the head): leave `head_order` out".into(),
                })
            }
        };

        // Held until the forward launch is queued: the scratch addresses
        // passed to it must not be replaced by a concurrent caller first.
        let mut scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        let mut inputs = Vec::new();
        let mut summaries = Vec::new();
        for (slot, (KernelParam::Input { name, kind }, &index)) in m.params.iter().zip(&order).enumerate() {
            let value = &args.entries.get(index).ok_or_else(|| internal("argument index out of range"))?.1;
            match (*kind, value) {
                (InputKind::QueryTensor | InputKind::KeyTensor, ArgValue::Tensor(t)) => {
                    let (n, block) =
                        if *kind == InputKind::QueryTensor { (p.q_len, m.block_q) } else { (p.kv_len, m.block_k) };
                    let (_, dst) = scratch.slot(&self.gpu, slot, summary_len(&p, name, *kind, m))?;
                    let src = t.device_ptr();
                    // With bucket runs, the summary also reads this side's bucket input.
                    let buckets = match m.bucket_runs.as_ref().and_then(|r| r.bucket_for(name, *kind)) {
                        Some(bucket) => match args.entries.iter().find(|(n, _)| n == bucket) {
                            Some((_, ArgValue::Tensor(b))) => Some(b.device_ptr()),
                            _ => return Err(internal("a bucket input passed validation without its tensor")),
                        },
                        None => None,
                    };
                    summaries.push(SummaryJob { name, src, buckets, dst, n, block });
                    inputs.extend([KernelArg::Ptr(src), KernelArg::Ptr(dst)]);
                }
                (InputKind::HeadScalar(_), ArgValue::HeadI32(vals)) => {
                    inputs.push(KernelArg::Ptr(self.upload_head(&mut scratch, slot, name, vals)?));
                }
                (InputKind::HeadScalar(_), ArgValue::HeadF32(vals)) => {
                    // The kernel reads f32; the bits travel unchanged in an i32 buffer.
                    let bits: Vec<i32> = vals.iter().map(|x| x.to_bits() as i32).collect();
                    inputs.push(KernelArg::Ptr(self.upload_head(&mut scratch, slot, name, &bits)?));
                }
                (InputKind::LaunchScalar(_), ArgValue::I32(x)) => inputs.push(KernelArg::I32(*x)),
                (InputKind::LaunchScalar(_), ArgValue::F32(x)) => inputs.push(KernelArg::F32(*x)),
                (InputKind::BlockList { .. }, ArgValue::BlockList(t)) => {
                    let width = t.shape().get(3).copied().ok_or_else(|| internal("block list rank"))?;
                    inputs.extend([KernelArg::Ptr(t.device_ptr()), KernelArg::I32(width as i32)]);
                }
                _ => return Err(internal("an input passed validation with the wrong kind")),
            }
        }
        // Uploaded (only when it changes) before the summaries, so that the
        // summary launch is the last thing on the stream before the forward
        // launch (see `dependent` below).
        let head_order = match &head_order {
            // The slot after the inputs' slots.
            Some(order) => Some(self.upload_head(&mut scratch, m.params.len(), "head_order", order)?),
            None => None,
        };
        self.launch_summaries(&summaries, &p)?;
        let ptrs = ForwardPointers {
            q: q.device_ptr(),
            k: k.device_ptr(),
            v: v.device_ptr(),
            o: o.device_ptr(),
            lse: lse.device_ptr(),
        };
        let mut all = forward_args(ptrs, [q.strides(), k.strides(), v.strides(), o.strides()], &p, scale_log2, &inputs);
        if let Some((qr, kr)) = rows {
            all.extend([
                KernelArg::Ptr(qr.device_ptr()),
                KernelArg::Ptr(kr.device_ptr()),
                KernelArg::I32(src.q_len as i32),
                KernelArg::I32(src.kv_len as i32),
            ]);
        }
        if let Some(order) = head_order {
            all.push(KernelArg::Ptr(order));
        }
        if m.tensor_maps {
            all.push(KernelArg::TensorMap(tensor_map(q, &qd, m.block_q)?));
            all.push(KernelArg::TensorMap(tensor_map(k, &kd, m.block_k)?));
            all.push(KernelArg::TensorMap(tensor_map(v, &vd, m.block_k)?));
        }
        let kv_splits = self.kv_splits(&p, opts.kv_splits)?;
        // With splits: the loaded functions, their manifest entry, and the
        // partial outputs ([kv_splits, B, H, Nq, D] and [kv_splits, B, H, Nq]
        // f32, in scratch slots after the inputs' and the head order's).
        let split = match (kv_splits, &self.split, &m.split_kv) {
            (1, _, _) => None,
            (_, Some(fns), Some(entries)) => {
                let rows = kv_splits * p.batch * p.heads * p.q_len;
                let partials = (scratch.slot(&self.gpu, m.params.len() + 1, rows * p.head_dim)?.1, scratch.slot(&self.gpu, m.params.len() + 2, rows)?.1);
                all.extend([KernelArg::I32(kv_splits as i32), KernelArg::Ptr(partials.0), KernelArg::Ptr(partials.1)]);
                Some((fns, entries, partials))
            }
            _ => return Err(internal("a split count passed its check without a split entry")),
        };
        let (grid_dim, block_dim, shared_mem_bytes) = forward_launch(m, &p, kv_splits);
        if shared_mem_bytes > self.gpu.max_shared_bytes().max(DEFAULT_SHARED_LIMIT) {
            return Err(RuntimeError::ListBitmapsTooBig { kv_len: p.kv_len, needed: shared_mem_bytes, max: self.gpu.max_shared_bytes(), device: self.gpu.name().into() });
        }
        let cfg = LaunchConfig { grid_dim, block_dim, shared_mem_bytes };
        // Right behind the summary launch, the kernel's prologue may overlap
        // it: the kernel waits for the summaries before reading them.
        let dependent = m.dependent_launch && !summaries.is_empty();
        let (function, entry) = match split {
            Some((fns, entries, _)) => (&fns.forward, &entries.entry),
            None => (&self.forward, &m.entry),
        };
        self.launch_as(function, &all, cfg, dependent).map_err(RuntimeError::driver(format!(
            "launching `{entry}` (grid {grid_dim:?}, {} threads, {shared_mem_bytes} bytes shared, {kv_splits} split(s)) for {}",
            block_dim.0,
            describe(&p)
        )))?;
        if let Some((SplitKv { combine, .. }, sp, partials)) = split {
            let [sb, sh, sn] = [0, 1, 2].map(|i| KernelArg::I64(o.strides()[i] as i64));
            let mut args = vec![KernelArg::Ptr(partials.0), KernelArg::Ptr(partials.1), KernelArg::Ptr(o.device_ptr()), KernelArg::Ptr(lse.device_ptr()), sb, sh, sn];
            args.extend([p.batch, p.heads, p.q_len, kv_splits].map(|x| KernelArg::I32(x as i32)));
            let (grid, block_dim) = combine_launch(sp, &p);
            let cfg = LaunchConfig { grid_dim: grid, block_dim, shared_mem_bytes: 0 };
            self.launch_as(combine, &args, cfg, sp.combine_dependent).map_err(RuntimeError::driver(format!("launching `{}` (grid {grid:?}) for {}", sp.combine_entry, describe(&p))))?;
        }
        drop(scratch);
        Ok(())
    }

    /// How many CTAs a launch of `forward_into(q, k, v, ..)` with
    /// `ForwardOptions::kv_splits` = `asked` gives each query block's key
    /// blocks: `asked` once checked, else the runtime's choice.
    pub fn kv_splits_for(&self, q: &DeviceTensor, k: &DeviceTensor, v: &DeviceTensor, asked: Option<usize>) -> Result<usize> {
        let p = validate_forward(&self.manifest, self.gpu.ordinal(), &q.desc("q"), &k.desc("k"), &v.desc("v"), None)?;
        self.kv_splits(&p, asked)
    }

    fn kv_splits(&self, p: &Problem, asked: Option<usize>) -> Result<usize> {
        match asked {
            Some(n) => check_kv_splits(&self.manifest, p, n),
            None => self.auto_kv_splits(p),
        }
    }

    /// The split count for a launch that names none ([`auto_kv_splits`]):
    /// the grid's CTAs against what the GPU holds at once, from the driver's
    /// occupancy for this kernel's block and shared-memory size.
    fn auto_kv_splits(&self, p: &Problem) -> Result<usize> {
        // Row-index kernels have no split entry.
        if self.split.is_none() {
            return Ok(1);
        }
        let m = &self.manifest;
        let (grid, block, shared) = forward_launch(m, p, 1);
        let ctas = grid.0 as usize * grid.1 as usize * grid.2 as usize;
        let mut occupancy = self.occupancy.lock().unwrap_or_else(PoisonError::into_inner);
        let per_sm = match *occupancy {
            Some((bytes, per_sm)) if bytes == shared => per_sm,
            _ => {
                self.gpu.context().bind_to_thread().map_err(RuntimeError::driver("binding the CUDA context"))?;
                let per_sm = self
                    .forward
                    .occupancy_max_active_blocks_per_multiprocessor(block.0, shared as usize, None)
                    .map_err(RuntimeError::driver(format!("asking the driver how many `{}` CTAs fit on an SM", m.entry)))?;
                *occupancy = Some((shared, per_sm));
                per_sm
            }
        };
        drop(occupancy);
        let resident = self.gpu.sm_count() as usize * per_sm.max(1) as usize;
        let splits = auto_kv_splits(ctas, resident, p.kv_len.div_ceil(m.block_k.max(1) as usize));
        // Past the grid's limit (a huge batch): not split.
        Ok(check_kv_splits(m, p, splits).unwrap_or(1))
    }

    /// The per-block `[min, max]` summary the forward kernel is given for a
    /// tensor input, made by the module's summary kernel: `values` i32
    /// (B, H, N) contiguous, in blocks of `block` → i32 (B, H, ceil(N/block), 2).
    /// For checking the summary kernel against the CPU and for debugging.
    pub fn block_summary(&self, values: &DeviceTensor, block: u32) -> Result<DeviceTensor> {
        let (b, h, n) = validate_summary_input(&values.desc("values"), block, self.gpu.ordinal())?;
        let out = DeviceTensor::zeros(&self.gpu, ElemType::I32, &[b, h, n.div_ceil(block as usize), 2])?;
        let job = SummaryJob { name: "values", src: values.device_ptr(), buckets: None, dst: out.device_ptr(), n, block };
        self.launch_summary(&job, b * h)?;
        Ok(out)
    }

    /// The per-block summary with bucket runs, made by the module's run
    /// summary kernel (modules whose pattern joins on a bucket): `values` and
    /// `buckets` i32 (B, H, N) contiguous, in blocks of `block` → i32 (B, H,
    /// ceil(N/block), 6): [min, max], then the range over the block's
    /// smallest-bucket run, then over its largest-bucket run.
    /// For checking the kernel against the CPU and for debugging.
    pub fn bucket_run_summary(&self, values: &DeviceTensor, buckets: &DeviceTensor, block: u32) -> Result<DeviceTensor> {
        let (b, h, n) = validate_summary_input(&values.desc("values"), block, self.gpu.ordinal())?;
        let dims = validate_summary_input(&buckets.desc("buckets"), block, self.gpu.ordinal())?;
        if dims != (b, h, n) {
            return Err(RuntimeError::Shape {
                tensor: "buckets".into(),
                got: vec![dims.0, dims.1, dims.2],
                expected: format!("one bucket per value is needed, (B, H, N) = {:?}", (b, h, n)),
            });
        }
        let out = DeviceTensor::zeros(&self.gpu, ElemType::I32, &[b, h, n.div_ceil(block as usize), RUN_WORDS])?;
        let job = SummaryJob { name: "values", src: values.device_ptr(), buckets: Some(buckets.device_ptr()), dst: out.device_ptr(), n, block };
        self.launch_summary(&job, b * h)?;
        Ok(out)
    }

    fn upload_head(&self, scratch: &mut Scratch, slot: usize, name: &str, vals: &[i32]) -> Result<u64> {
        let (_, ptr) = scratch.slot(&self.gpu, slot, vals.len())?;
        if scratch.uploaded.get(slot).and_then(|u| u.as_deref()) == Some(vals) {
            return Ok(ptr);
        }
        let (buf, ptr) = scratch.slot(&self.gpu, slot, vals.len())?;
        // Stream-ordered after any earlier launch that reads this slot.
        self.gpu
            .stream()
            .memcpy_htod(vals, buf)
            .map_err(RuntimeError::driver(format!("copying per-head input `{name}` to the device")))?;
        if scratch.uploaded.len() <= slot {
            scratch.uploaded.resize_with(slot + 1, || None);
        }
        scratch.uploaded[slot] = Some(vals.to_vec());
        Ok(ptr)
    }

    /// Every tensor input's summary: one launch of the module's
    /// `summaries_entry` (per 65535 rows), or, for manifests without it, one
    /// launch per input.
    fn launch_summaries(&self, jobs: &[SummaryJob<'_>], p: &Problem) -> Result<()> {
        let rows = p.batch * p.heads;
        let (Some(all), Some(entry)) = (&self.all_summaries, &self.manifest.summaries_entry) else {
            for j in jobs {
                self.launch_summary(j, rows)?;
            }
            return Ok(());
        };
        if jobs.is_empty() {
            return Ok(());
        }
        let most = jobs.iter().map(SummaryJob::nblocks).max().unwrap_or(0);
        for (first_row, count) in row_chunks(rows) {
            // Each input's pointers advance to this launch's first row.
            let mut args = Vec::new();
            for j in jobs {
                let src_at = (first_row * j.n * 4) as u64;
                args.push(KernelArg::Ptr(j.src + src_at));
                if let Some(b) = j.buckets {
                    args.push(KernelArg::Ptr(b + src_at));
                }
                args.push(KernelArg::Ptr(j.dst + (first_row * j.nblocks() * j.words() * 4) as u64));
            }
            args.extend([
                KernelArg::I32(count as i32),
                KernelArg::I32(p.q_len as i32),
                KernelArg::I32(p.kv_len as i32),
                KernelArg::I32(self.manifest.block_q as i32),
                KernelArg::I32(self.manifest.block_k as i32),
            ]);
            let grid = (summary_grid_x(most), count as u32, jobs.len() as u32);
            let cfg = LaunchConfig { grid_dim: grid, block_dim: (SUMMARY_THREADS, 1, 1), shared_mem_bytes: 0 };
            self.launch(all, &args, cfg).map_err(RuntimeError::driver(format!(
                "launching `{entry}` for {} tensor inputs (rows {}..{}, grid {grid:?})",
                jobs.len(),
                first_row,
                first_row + count
            )))?;
        }
        Ok(())
    }

    /// `job`'s summary over `rows` rows: `block_minmax`, or with buckets the
    /// run summary kernel.
    fn launch_summary(&self, job: &SummaryJob<'_>, rows: usize) -> Result<()> {
        let &SummaryJob { name, src, buckets, dst, n, block } = job;
        let (function, entry) = match (buckets, &self.runs) {
            (None, _) => (&self.summary, &self.manifest.summary_entry),
            (Some(_), Some((f, entry))) => (f, entry),
            (Some(_), None) => return Err(RuntimeError::NoRunSummary { entry: self.manifest.entry.clone() }),
        };
        for l in summary_launches(rows, n, block, job.words()) {
            let mut args = vec![KernelArg::Ptr(src + (l.src_offset * 4) as u64)];
            if let Some(b) = buckets {
                args.push(KernelArg::Ptr(b + (l.src_offset * 4) as u64));
            }
            args.extend([
                KernelArg::Ptr(dst + (l.dst_offset * 4) as u64),
                KernelArg::I32(l.rows as i32),
                KernelArg::I32(n as i32),
                KernelArg::I32(block as i32),
            ]);
            let cfg = LaunchConfig { grid_dim: l.grid, block_dim: (SUMMARY_THREADS, 1, 1), shared_mem_bytes: 0 };
            self.launch(function, &args, cfg).map_err(RuntimeError::driver(format!(
                "launching `{}` for input `{name}` (rows {}..{}, grid {:?})",
                entry,
                l.first_row,
                l.first_row + l.rows,
                l.grid
            )))?;
        }
        Ok(())
    }

    /// Launches `f` on the stream; with `dependent`, as a programmatic
    /// dependent launch (`cuLaunchKernelEx` with
    /// `PROGRAMMATIC_STREAM_SERIALIZATION`): it may start before the launch
    /// ahead of it on the stream has finished, once that grid's CTAs have
    /// all executed `griddepcontrol.launch_dependents` (or exited). Only for
    /// kernels that wait (`griddepcontrol.wait`) before reading what that
    /// launch writes, and that read nothing else an unfinished launch could
    /// still be writing.
    fn launch_as(&self, f: &CudaFunction, args: &[KernelArg], cfg: LaunchConfig, dependent: bool) -> Result<(), cudarc::driver::DriverError> {
        if !dependent {
            return self.launch(f, args, cfg);
        }
        use cudarc::driver::sys;
        let stream = self.gpu.stream();
        stream.context().bind_to_thread()?;
        let mut params: Vec<*mut std::ffi::c_void> = args.iter().map(param_ptr).collect();
        // SAFETY: a zeroed attribute is a valid C value; id and value are set next.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        // SAFETY: as `launch`: the parameter list is the kernel's ABI, each
        // entry of `params` points into `args`, which outlives the call, and
        // `config` and `attr` live until it returns.
        unsafe { sys::cuLaunchKernelEx(&config, f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()) }.result()
    }

    fn launch(&self, f: &CudaFunction, args: &[KernelArg], cfg: LaunchConfig) -> Result<(), cudarc::driver::DriverError> {
        let stream = self.gpu.stream();
        let mut b = stream.launch_builder(f);
        push_args(&mut b, args);
        // SAFETY: the parameter list is the generated kernel's ABI
        // (`validate::forward_args`, tested), every pointer is to a live
        // allocation whose extent validation checked against the shapes the
        // kernel will index, and `args` outlives the call.
        unsafe { b.launch(cfg) }.map(|_| ())
    }
}

fn describe(p: &Problem) -> String {
    format!(
        "B={} H={} Hkv={} Nq={} Nk={} D={}",
        p.batch, p.heads, p.kv_heads, p.q_len, p.kv_len, p.head_dim
    )
}
