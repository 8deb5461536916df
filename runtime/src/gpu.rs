//! `Gpu`: one CUDA device, its primary context and the one stream every
//! runtime operation is issued on (so summaries, the forward kernel and copies
//! are ordered without host round trips). It owns the rule that libcuda is
//! probed before any cudarc call, because cudarc's dynamic loading panics
//! instead of returning an error when the library is missing. It knows
//! nothing about kernels or tensors.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags, CUresult};
use cudarc::driver::{CudaContext, CudaStream, DriverError};
use lacuna_ir::Arch;

use crate::error::{Result, RuntimeError};

/// A CUDA device ready to run Lacuna kernels. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<GpuInner>,
}

struct GpuInner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    name: String,
    sm_count: u32,
    compute_capability: (u32, u32),
    max_shared_optin: u32,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (major, minor) = self.inner.compute_capability;
        write!(f, "Gpu({}: {}, sm_{major}{minor}, {} SMs)", self.inner.ordinal, self.inner.name, self.inner.sm_count)
    }
}

/// True when libcuda can be opened. Must gate every cudarc call: without the
/// library cudarc panics on first use instead of returning an error.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its usual names and
    // drops the handle again; no driver function is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Runs driver code, turning a panic inside cudarc (a symbol the installed
/// driver lacks, a library that vanished) into an error value.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "cudarc panicked".into());
            Err(RuntimeError::DriverUnusable { message })
        }
    }
}

impl Gpu {
    /// Opens device `ordinal` (its primary context and the default stream).
    pub fn new(ordinal: usize) -> Result<Gpu> {
        if !driver_present() {
            return Err(RuntimeError::NoDriver);
        }
        guarded(|| Self::open(ordinal))
    }

    /// The number of CUDA devices, or `NoDriver` without libcuda.
    pub fn device_count() -> Result<usize> {
        if !driver_present() {
            return Err(RuntimeError::NoDriver);
        }
        guarded(|| match CudaContext::device_count() {
            Ok(n) => Ok(n.max(0) as usize),
            // cuInit reports a driver with no GPU this way.
            Err(DriverError(CUresult::CUDA_ERROR_NO_DEVICE)) => Ok(0),
            Err(e) => Err(RuntimeError::driver("counting CUDA devices")(e)),
        })
    }

    fn open(ordinal: usize) -> Result<Gpu> {
        let count = match CudaContext::device_count() {
            Ok(n) => n.max(0) as usize,
            Err(DriverError(CUresult::CUDA_ERROR_NO_DEVICE)) => 0,
            Err(e) => return Err(RuntimeError::driver("initialising the CUDA driver")(e)),
        };
        if ordinal >= count {
            return Err(RuntimeError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(RuntimeError::driver(format!("creating a context on device {ordinal}")))?;
        let attr = |a: CUdevice_attribute, what: &str| {
            ctx.attribute(a).map_err(RuntimeError::driver(format!("reading the {what} of device {ordinal}")))
        };
        let sm_count = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "SM count")?;
        let max_shared_optin =
            attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, "shared memory limit")?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(RuntimeError::driver(format!("reading the compute capability of device {ordinal}")))?;
        let name = ctx.name().map_err(RuntimeError::driver(format!("reading the name of device {ordinal}")))?;
        // The default (null) stream: a single stream keeps cudarc out of its
        // multi-stream event tracking, and orders everything we issue.
        let stream = ctx.default_stream();
        keep_freed_memory(&ctx)?;
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                ctx,
                stream,
                ordinal,
                name,
                sm_count: sm_count.max(0) as u32,
                compute_capability: (major.max(0) as u32, minor.max(0) as u32),
                max_shared_optin: max_shared_optin.max(0) as u32,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }

    pub fn sm_count(&self) -> u32 {
        self.inner.sm_count
    }

    /// (major, minor), e.g. (9, 0) for an H100.
    pub fn compute_capability(&self) -> (u32, u32) {
        self.inner.compute_capability
    }

    /// Largest dynamic shared memory a block may opt in to, in bytes.
    pub fn max_shared_bytes(&self) -> u32 {
        self.inner.max_shared_optin
    }

    /// The target Lacuna compiles for on this device.
    pub fn arch(&self) -> Result<Arch> {
        let (major, minor) = self.compute_capability();
        arch_for(major, minor).ok_or_else(|| RuntimeError::ArchMismatch {
            arch: "sm_80 or newer",
            device: self.name().to_string(),
            major,
            minor,
            hint: "Lacuna kernels need compute capability 8.0 or newer (Ampere, Hopper)",
        })
    }

    /// The cudarc context, for interop with other cudarc code.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// The stream all runtime work goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// Waits for all work issued so far, and reports errors from it
    /// (including those cudarc recorded while freeing memory).
    pub fn synchronize(&self) -> Result<()> {
        self.inner.stream.synchronize().map_err(RuntimeError::driver("waiting for the GPU (a kernel may have faulted)"))?;
        self.inner.ctx.check_err().map_err(RuntimeError::driver("checking for deferred CUDA errors"))
    }

    /// GPU time of the work `f` issues, in milliseconds, measured with CUDA
    /// events on the runtime's stream. Waits for that work to finish.
    pub fn time_ms<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<f32> {
        self.timed(f).map(|(_, ms)| ms)
    }

    /// Like [`Gpu::time_ms`], also returning what `f` returned.
    pub fn timed<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(T, f32)> {
        let ctx = &self.inner.ctx;
        let stream = &self.inner.stream;
        // cudarc's default event flags disable timing; ask for CU_EVENT_DEFAULT.
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = ctx.new_event(flags).map_err(RuntimeError::driver("creating a timing event"))?;
        let end = ctx.new_event(flags).map_err(RuntimeError::driver("creating a timing event"))?;
        start.record(stream).map_err(RuntimeError::driver("recording the start event"))?;
        let out = f()?;
        end.record(stream).map_err(RuntimeError::driver("recording the end event"))?;
        let ms = start.elapsed_ms(&end).map_err(RuntimeError::driver("reading the elapsed time (a kernel may have faulted)"))?;
        Ok((out, ms))
    }
}

/// sm_90a only runs on compute capability 9.0 exactly; everything from 8.0 on
/// runs the portable sm_80 code.
pub fn arch_for(major: u32, minor: u32) -> Option<Arch> {
    match (major, minor) {
        (9, 0) => Some(Arch::Sm90a),
        (m, _) if m >= 8 => Some(Arch::Sm80),
        _ => None,
    }
}

/// Can PTX built for `arch` run on compute capability `major.minor`?
/// Returns the hint for the error message when it cannot.
pub fn arch_runs_on(arch: Arch, major: u32, minor: u32) -> std::result::Result<(), &'static str> {
    match arch {
        // "a" targets use features that exist on exactly one architecture.
        Arch::Sm90a if (major, minor) == (9, 0) => Ok(()),
        Arch::Sm90a => Err("sm_90a code runs only on compute capability 9.0 (H100/H200); compile for sm_80 instead"),
        Arch::Sm80 if major >= 8 => Ok(()),
        Arch::Sm80 => Err("Lacuna kernels need compute capability 8.0 or newer (Ampere, Hopper)"),
    }
}

/// cudarc allocates with `cuMemAllocAsync` from the device's default memory
/// pool where the driver has pools. That pool's release threshold is 0: at
/// every synchronisation (a read-back, a timing event)
/// freed memory goes back to the driver, and the next call's large buffers
/// (outputs of 100+ MB) are mapped again. Keeping freed memory in the pool,
/// as PyTorch's caching allocator does, makes a repeated call allocate for
/// free. Without pools there is nothing to set.
fn keep_freed_memory(ctx: &CudaContext) -> Result<()> {
    use cudarc::driver::sys;
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    let failed = |r: sys::CUresult| match r {
        sys::CUresult::CUDA_SUCCESS => Ok(()),
        e => Err(RuntimeError::driver(format!("keeping freed memory in the default memory pool of device {}", ctx.ordinal()))(DriverError(e))),
    };
    let mut pool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: `pool` receives the device's default pool handle, valid for the
    // context's life; the attribute takes a pointer to a u64 that outlives the call.
    unsafe {
        failed(sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()))?;
        failed(sys::cuMemPoolSetAttribute(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, (&mut threshold as *mut u64).cast()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_without_driver_is_an_error_not_a_panic() {
        if driver_present() {
            eprintln!("note: libcuda is present on this machine; the NoDriver assertion is skipped");
            return;
        }
        let err = Gpu::new(0).expect_err("no driver, so no Gpu");
        assert!(matches!(err, RuntimeError::NoDriver), "got {err:?}");
        let msg = err.to_string();
        assert!(msg.contains("no CUDA driver found (libcuda)"), "{msg}");
        assert!(matches!(Gpu::device_count(), Err(RuntimeError::NoDriver)));
    }

    #[test]
    fn arch_selection_follows_compute_capability() {
        assert_eq!(arch_for(9, 0), Some(Arch::Sm90a));
        assert_eq!(arch_for(8, 0), Some(Arch::Sm80));
        assert_eq!(arch_for(8, 9), Some(Arch::Sm80));
        assert_eq!(arch_for(10, 0), Some(Arch::Sm80));
        assert_eq!(arch_for(7, 5), None);
    }

    #[test]
    fn sm90a_code_runs_only_on_9_0() {
        assert!(arch_runs_on(Arch::Sm90a, 9, 0).is_ok());
        assert!(arch_runs_on(Arch::Sm90a, 8, 0).expect_err("8.0 is not Hopper").contains("sm_80"));
        assert!(arch_runs_on(Arch::Sm90a, 10, 0).is_err());
        assert!(arch_runs_on(Arch::Sm80, 9, 0).is_ok());
        assert!(arch_runs_on(Arch::Sm80, 7, 5).expect_err("7.5 is too old").contains("8.0"));
    }
}
