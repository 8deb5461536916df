//! `SmClock`: the SM clock a GPU runs at right now, read on the GPU itself.
//! One thread counts `%clock64` cycles over a stretch of `%globaltimer`
//! nanoseconds, both read just after the timer ticks, so the timer's
//! granularity drops out. Benchmarks record it beside each time: on an
//! H200 the same kernel ran up to 8% slower late in a long run than alone
//! (perf log, fourteenth session), and a time without its clock cannot say
//! whether the kernel or the card changed. Needs no NVML and no NVRTC: the
//! kernel is a few lines of PTX, JIT-compiled by the driver.

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use crate::error::{Result, RuntimeError};
use crate::gpu::Gpu;

const ENTRY: &str = "lacuna_sm_clock";

/// Writes `out[0]` = SM cycles and `out[1]` = nanoseconds of one stretch of
/// at least `span_ns`, each stretch starting and ending on a timer tick.
pub const PROBE_PTX: &str = r#"
.version 7.0
.target sm_80
.address_size 64

.visible .entry lacuna_sm_clock(.param .u64 out, .param .u64 span_ns)
{
    .reg .pred %busy;
    .reg .b64 %out, %span, %t, %t0, %t1, %c0, %c1, %d;
    ld.param.u64 %out, [out];
    ld.param.u64 %span, [span_ns];
    cvta.to.global.u64 %out, %out;
    mov.u64 %t, %globaltimer;
first_tick:
    mov.u64 %t0, %globaltimer;
    setp.eq.u64 %busy, %t0, %t;
    @%busy bra first_tick;
    mov.u64 %c0, %clock64;
span:
    mov.u64 %t1, %globaltimer;
    sub.u64 %d, %t1, %t0;
    setp.lt.u64 %busy, %d, %span;
    @%busy bra span;
    mov.u64 %c1, %clock64;
    sub.u64 %c1, %c1, %c0;
    st.global.u64 [%out], %c1;
    st.global.u64 [%out+8], %d;
    ret;
}
"#;

/// How long one reading counts cycles: long against the timer's tick (up
/// to 1 µs on some GPUs) and short against a kernel (tens of µs and up).
pub const CLOCK_SPAN_NS: u64 = 50_000;

/// The clock probe, loaded on one GPU.
pub struct SmClock {
    gpu: Gpu,
    func: CudaFunction,
}

impl SmClock {
    /// Loads the probe (the driver compiles its PTX for the GPU).
    pub fn load(gpu: &Gpu) -> Result<SmClock> {
        let module = gpu.context().load_module(Ptx::from_src(PROBE_PTX)).map_err(RuntimeError::driver("loading the SM clock probe"))?;
        let func = module.load_function(ENTRY).map_err(RuntimeError::driver("finding the SM clock probe's entry"))?;
        Ok(SmClock { gpu: gpu.clone(), func })
    }

    /// The SM clock in MHz over the next [`CLOCK_SPAN_NS`] of GPU time,
    /// after the work already on the stream. Waits for it.
    pub fn mhz(&self) -> Result<f64> {
        let stream = self.gpu.stream();
        let mut out = stream.alloc_zeros::<u64>(2).map_err(RuntimeError::driver("allocating the SM clock probe's output"))?;
        let mut launch = stream.launch_builder(&self.func);
        launch.arg(&mut out).arg(&CLOCK_SPAN_NS);
        let one_thread = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the entry takes a pointer to two u64s (`out`, allocated
        // with two) and a u64 span, which is what is pushed.
        unsafe { launch.launch(one_thread) }.map_err(RuntimeError::driver("launching the SM clock probe"))?;
        let read = stream.clone_dtoh(&out).map_err(RuntimeError::driver("reading the SM clock probe"))?;
        Ok(cycles_per_ns_to_mhz(read[0], read[1]))
    }
}

fn cycles_per_ns_to_mhz(cycles: u64, ns: u64) -> f64 {
    if ns == 0 {
        return 0.0;
    }
    cycles as f64 * 1e3 / ns as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_over_nanoseconds_are_mhz() {
        assert_eq!(cycles_per_ns_to_mhz(98_000, 50_000), 1960.0);
        assert_eq!(cycles_per_ns_to_mhz(5, 0), 0.0);
    }

    #[test]
    fn the_probe_reads_both_counters_after_a_tick() {
        // The cycle count starts after the first tick and ends when the
        // span has passed; both stores are there.
        assert!(PROBE_PTX.contains("%globaltimer") && PROBE_PTX.contains("%clock64"));
        let (tick, count) = (PROBE_PTX.find("first_tick:"), PROBE_PTX.find("mov.u64 %c0, %clock64"));
        assert!(matches!((tick, count), (Some(t), Some(c)) if t < c), "{tick:?} {count:?}");
        assert!(PROBE_PTX.contains("st.global.u64 [%out], %c1") && PROBE_PTX.contains("st.global.u64 [%out+8], %d"));
    }
}
