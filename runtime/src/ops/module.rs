//! `GpuOps`: the helper ops' CUDA module on one GPU. Compiles
//! `runtime/kernels/ops.cu` with NVRTC the first time a GPU needs it, loads
//! it, and keeps it (one per device context, for the life of the process).
//! NVRTC is probed before any cudarc call because cudarc's dynamic loading
//! panics, rather than returning an error, when the library is missing.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::{CudaFunction, CudaModule, LaunchConfig};
use cudarc::nvrtc::{CompileError, CompileOptions};

use super::error::{OpError, OpResult};
use crate::error::RuntimeError;
use crate::gpu::Gpu;
use crate::validate::KernelArg;

/// The CUDA C of the helper ops.
pub const OPS_SOURCE: &str = include_str!("../../kernels/ops.cu");

/// Every entry point of `ops.cu`; all are looked up when the module loads,
/// so a missing one is reported at once.
pub const OPS_ENTRIES: &[&str] = &[
    "lacuna_lsh_bucket",
    "lacuna_lsh_bucket_direct",
    "lacuna_bucket_hist",
    "lacuna_bucket_offsets",
    "lacuna_bucket_place",
    "lacuna_gather_rows",
    "lacuna_scatter_rows",
    "lacuna_expand_heads",
    "lacuna_keep_count",
    "lacuna_keep_compact",
    "lacuna_token_scores",
    "lacuna_block_scores",
    "lacuna_topk_blocks",
    "lacuna_topk_order",
    "lacuna_topk_pick",
    "lacuna_sparsek_tau",
];

/// True when libnvrtc can be opened.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names and drops
    // the handle again; no NVRTC function is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "cudarc panicked".into())
}

/// Compiles the helper ops to PTX for compute capability `major.minor`
/// (`compute_XY`, so the driver JIT finishes it for the exact chip). Needs
/// libnvrtc, not a GPU.
pub fn compile_ops_ptx(major: u32, minor: u32) -> OpResult<String> {
    if !nvrtc_present() {
        return Err(OpError::NoNvrtc);
    }
    let arch = format!("compute_{major}{minor}");
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}")],
        name: Some("ops.cu".into()),
        ..Default::default()
    };
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        cudarc::nvrtc::compile_ptx_with_opts(OPS_SOURCE, opts).map(|ptx| ptx.to_src())
    }));
    match compiled {
        Ok(Ok(ptx)) => Ok(ptx),
        Ok(Err(CompileError::CompileError { log, .. })) => {
            Err(OpError::OpsCompile { arch, message: log.to_string_lossy().into_owned() })
        }
        Ok(Err(e)) => Err(OpError::OpsCompile { arch, message: format!("{e:?}") }),
        Err(payload) => Err(OpError::OpsCompile {
            arch,
            message: format!("NVRTC could not be used ({}); install a CUDA 12 or 13 NVRTC", panic_message(payload)),
        }),
    }
}

/// The helper ops loaded on one GPU. Cheap to share (`Arc`); every launch
/// goes to the Gpu's one stream, so ops, the attention kernel and copies are
/// ordered without host round trips.
pub struct GpuOps {
    gpu: Gpu,
    // Kept so the functions' module stays loaded.
    _module: Arc<CudaModule>,
    functions: HashMap<&'static str, CudaFunction>,
}

impl std::fmt::Debug for GpuOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuOps({} entries on {:?})", self.functions.len(), self.gpu)
    }
}

/// One `GpuOps` per device context, made on first use.
static LOADED: Mutex<Vec<(usize, Arc<GpuOps>)>> = Mutex::new(Vec::new());

impl GpuOps {
    /// The ops for `gpu`: compiled and loaded on the first call for its
    /// device, then shared. A failure (no NVRTC) is not remembered, so a
    /// later call after fixing the installation succeeds.
    pub fn for_gpu(gpu: &Gpu) -> OpResult<Arc<GpuOps>> {
        let key = Arc::as_ptr(gpu.context()) as usize;
        let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, ops)) = loaded.iter().find(|(k, _)| *k == key) {
            return Ok(Arc::clone(ops));
        }
        let ops = Arc::new(Self::load(gpu)?);
        loaded.push((key, Arc::clone(&ops)));
        Ok(ops)
    }

    /// Compiles and loads a fresh copy (no sharing).
    pub fn load(gpu: &Gpu) -> OpResult<GpuOps> {
        let (major, minor) = gpu.compute_capability();
        let ptx = compile_ops_ptx(major, minor)?;
        let loaded = catch_unwind(AssertUnwindSafe(|| -> OpResult<GpuOps> {
            let module = gpu.context().load_module(cudarc::nvrtc::Ptx::from_src(ptx)).map_err(RuntimeError::driver(
                format!(
                    "loading the helper ops' PTX on {} (CUDA_ERROR_UNSUPPORTED_PTX_VERSION means libnvrtc is newer \
                     than the driver: use the NVRTC of the driver's CUDA version)",
                    gpu.name()
                ),
            ))?;
            let mut functions = HashMap::new();
            for &name in OPS_ENTRIES {
                let f = module
                    .load_function(name)
                    .map_err(RuntimeError::driver(format!("finding helper op `{name}` in the compiled module")))?;
                functions.insert(name, f);
            }
            Ok(GpuOps { gpu: gpu.clone(), _module: module, functions })
        }));
        match loaded {
            Ok(r) => r,
            Err(payload) => Err(RuntimeError::DriverUnusable { message: panic_message(payload) }.into()),
        }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Launches entry `name` with `args`; `grid` is (x, y, z) blocks of `block` threads.
    pub(crate) fn launch(
        &self,
        name: &'static str,
        args: &[KernelArg],
        grid: (u32, u32, u32),
        block: u32,
        shared_bytes: u32,
    ) -> OpResult<()> {
        let f = self
            .functions
            .get(name)
            .ok_or_else(|| RuntimeError::Internal { what: format!("helper op `{name}` is not loaded") })?;
        let stream = self.gpu.stream();
        let mut b = stream.launch_builder(f);
        crate::kernel::push_args(&mut b, args);
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: shared_bytes };
        // SAFETY: each wrapper passes exactly the parameter list of its entry
        // in ops.cu, with pointers to live allocations whose extents it
        // checked against the sizes the entry indexes; `args` outlives the call.
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(|e| {
            RuntimeError::driver(format!("launching helper op `{name}` (grid {grid:?}, {block} threads)"))(e).into()
        })
    }
}

/// Blocks of `per_block` work items covering `n` items, as a grid x size.
pub(crate) fn blocks_for(n: usize, per_block: usize) -> OpResult<u32> {
    let blocks = n.div_ceil(per_block.max(1)).max(1);
    u32::try_from(blocks).ok().filter(|&b| b <= i32::MAX as u32).ok_or_else(|| {
        OpError::Invalid { what: "the problem".into(), problem: format!("needs {blocks} blocks, above CUDA's grid limit") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_in_the_source() {
        for name in OPS_ENTRIES {
            assert!(OPS_SOURCE.contains(&format!("extern \"C\" __global__ void {name}(")), "{name}");
        }
        assert_eq!(OPS_SOURCE.matches("extern \"C\" __global__").count(), OPS_ENTRIES.len());
    }

    #[test]
    fn missing_nvrtc_is_an_error_not_a_panic() {
        if nvrtc_present() {
            // Compiles for real: the source must be accepted by NVRTC.
            let ptx = compile_ops_ptx(9, 0).unwrap_or_else(|e| panic!("{e}"));
            for name in OPS_ENTRIES {
                assert!(ptx.contains(&format!(".entry {name}(")), "{name} missing from the PTX");
            }
            return;
        }
        let err = compile_ops_ptx(9, 0).expect_err("no NVRTC here");
        assert!(matches!(err, OpError::NoNvrtc));
        assert!(err.to_string().contains("LD_LIBRARY_PATH"), "{err}");
    }

    #[test]
    fn grid_sizes_cover_the_work() {
        assert_eq!(blocks_for(0, 8).ok(), Some(1));
        assert_eq!(blocks_for(17, 8).ok(), Some(3));
        assert!(blocks_for(usize::MAX / 2, 1).is_err());
    }
}
