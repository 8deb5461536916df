//! What the GPU subcommands (`run`, `selftest`, `bench`) share: compiling a
//! standard pattern for the GPU at hand, uploading its inputs, random data.
//! Everything here needs a GPU at run time but builds anywhere.

pub mod bench;
pub mod methods_bench;
pub mod selftest;

use std::collections::BTreeMap;

use half::{bf16, f16};
use lacuna_codegen::{KernelPlan, Mma, RowLength};
use lacuna_ir::{Dtype, InputKind, InputValue, PatternIr};
use lacuna_runtime::methods::MethodPattern;
use lacuna_runtime::{AttentionKernel, DeviceTensor, Gpu, KernelByLength, PatternArgs};

use crate::commands::compile::PlanOverrides;
use crate::error::CliError;

/// The kernel a seed method's pipeline runs, shaped as
/// `MethodPattern::compile` shapes it (row indices where `regroups_rows`,
/// long-row tiles where `long_rows`); `rows` overrides the row length.
pub fn load_method_kernel(gpu: &Gpu, method: MethodPattern, head_dim: u32, dtype: Dtype, mma: Option<Mma>, rows: Option<RowLength>) -> Result<(KernelPlan, AttentionKernel), CliError> {
    let rows = rows.or(method.long_rows().then_some(RowLength::Long));
    load_kernel_with(gpu, &method.ir(), head_dim, dtype, &PlanOverrides { mma, rows, row_index: method.regroups_rows(), ..PlanOverrides::default() })
}

/// [`load_method_kernel`] for every key-length class of the method's plan
/// (`KernelPlan::length_classes`), as `MethodPattern::compile_by_length`
/// builds them; with `rows` given, that one plan serves every length.
pub fn load_method_kernels(gpu: &Gpu, method: MethodPattern, head_dim: u32, dtype: Dtype, mma: Option<Mma>, rows: Option<RowLength>) -> Result<KernelByLength, CliError> {
    load_method_kernels_with(gpu, method, head_dim, dtype, mma, rows, method.regroups_rows())
}

/// [`load_method_kernels`] with or without row indices: without, the SCFA
/// pipelines gather the regrouped rows, run the kernel and scatter O back.
pub fn load_method_kernels_with(
    gpu: &Gpu,
    method: MethodPattern,
    head_dim: u32,
    dtype: Dtype,
    mma: Option<Mma>,
    rows: Option<RowLength>,
    row_index: bool,
) -> Result<KernelByLength, CliError> {
    let ir = method.ir();
    let long_rows = rows.is_none() && method.long_rows();
    let plan = plan_for(gpu, &ir, head_dim, dtype, &PlanOverrides { mma, rows, long_rows, row_index, ..PlanOverrides::default() })?;
    let classes = if rows.is_some() { vec![(usize::MAX, plan)] } else { plan.length_classes() };
    let kernels = classes.into_iter().map(|(bound, plan)| Ok((bound, load_plan(gpu, &ir, &plan)?))).collect::<Result<_, CliError>>()?;
    Ok(KernelByLength::new(kernels)?)
}

/// [`load_kernel`] with any plan overrides (as `lacuna compile` takes them);
/// a tensor-core path this GPU or head dim cannot take is dropped, so one
/// `--mma` serves a run over many head dims.
pub fn load_kernel_with(gpu: &Gpu, ir: &PatternIr, head_dim: u32, dtype: Dtype, overrides: &PlanOverrides) -> Result<(KernelPlan, AttentionKernel), CliError> {
    let plan = plan_for(gpu, ir, head_dim, dtype, overrides)?;
    let kernel = load_plan(gpu, ir, &plan)?;
    Ok((plan, kernel))
}

/// The plan [`load_kernel_with`] compiles.
fn plan_for(gpu: &Gpu, ir: &PatternIr, head_dim: u32, dtype: Dtype, overrides: &PlanOverrides) -> Result<KernelPlan, CliError> {
    let arch = gpu.arch()?;
    let codegen = |source| CliError::Codegen { pattern: ir.name().into(), head_dim, source };
    let overrides = PlanOverrides { mma: overrides.mma.filter(|m| m.supports(arch, head_dim)), ..*overrides };
    Ok(overrides.apply(KernelPlan::for_pattern(ir, head_dim, dtype, arch).map_err(codegen)?))
}

/// Compiles `plan` for `ir` and loads it.
fn load_plan(gpu: &Gpu, ir: &PatternIr, plan: &KernelPlan) -> Result<AttentionKernel, CliError> {
    let compiled = lacuna_codegen::compile(ir, plan).map_err(|source| CliError::Codegen { pattern: ir.name().into(), head_dim: plan.head_dim, source })?;
    Ok(AttentionKernel::from_ptx(gpu, &compiled.manifest.attach_to_ptx(&compiled.ptx), ir)?)
}

/// The kernel of the last plan asked for, compiled again only when the plan
/// changes: for loops over lengths, whose plan follows the key length
/// (`KernelPlan::for_length`).
#[derive(Default)]
pub struct KernelForPlan(Option<(KernelPlan, AttentionKernel)>);

impl KernelForPlan {
    pub fn get(&mut self, gpu: &Gpu, ir: &PatternIr, head_dim: u32, dtype: Dtype, overrides: &PlanOverrides) -> Result<(&KernelPlan, &AttentionKernel), CliError> {
        let plan = plan_for(gpu, ir, head_dim, dtype, overrides)?;
        if self.0.as_ref().is_none_or(|(loaded, _)| *loaded != plan) {
            let kernel = load_plan(gpu, ir, &plan)?;
            self.0 = Some((plan, kernel));
        }
        let (plan, kernel) = self.0.as_ref().expect("loaded above");
        Ok((plan, kernel))
    }
}

/// Device copies of a pattern's array inputs; scalars stay on the host.
pub struct DeviceInputs {
    tensors: Vec<(String, DeviceTensor)>,
    values: BTreeMap<String, InputValue>,
}

impl DeviceInputs {
    pub fn upload(gpu: &Gpu, ir: &PatternIr, values: &BTreeMap<String, InputValue>) -> Result<Self, CliError> {
        let mut tensors = Vec::new();
        for d in ir.inputs() {
            if let (InputKind::QueryTensor | InputKind::KeyTensor | InputKind::BlockList { .. }, Some(InputValue::I32Array { shape, data })) =
                (d.kind, values.get(&d.name))
            {
                tensors.push((d.name.clone(), DeviceTensor::from_host_i32(gpu, data, shape)?));
            }
        }
        Ok(Self { tensors, values: values.clone() })
    }

    /// The launch arguments, by name.
    pub fn args(&self) -> PatternArgs<'_> {
        let mut args = PatternArgs::new();
        for (name, t) in &self.tensors {
            args = if t.shape().len() == 4 { args.block_list(name, t) } else { args.tensor(name, t) };
        }
        for (name, v) in &self.values {
            args = match v {
                InputValue::I32(x) => args.i32(name, *x),
                InputValue::F32(x) => args.f32(name, *x),
                InputValue::I32Array { shape, data } if shape.len() == 1 => args.head_i32(name, data),
                InputValue::F32Array { data, .. } => args.head_f32(name, data),
                InputValue::I32Array { .. } => args,
            };
        }
        args
    }
}

/// A small deterministic generator for test and benchmark data.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// The middle value, or the mean of the two middle ones (0 for none);
/// sorts `values`. Both benches report it for times and SM clocks.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let m = values.len();
    match m {
        0 => 0.0,
        _ if m % 2 == 1 => values[m / 2],
        _ => 0.5 * (values[m / 2 - 1] + values[m / 2]),
    }
}

/// Uploads `data` in `dtype`, returning the tensor and the values it really
/// holds (rounded), which is what the reference must see.
pub fn upload_rounded(gpu: &Gpu, data: &[f32], shape: &[usize], dtype: Dtype) -> Result<(DeviceTensor, Vec<f32>), CliError> {
    Ok(match dtype {
        Dtype::Bf16 => {
            let h: Vec<bf16> = data.iter().map(|&x| bf16::from_f32(x)).collect();
            let rounded = h.iter().map(|x| x.to_f32()).collect();
            (DeviceTensor::from_host_bf16(gpu, &h, shape)?, rounded)
        }
        Dtype::F16 => {
            let h: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
            let rounded = h.iter().map(|x| x.to_f32()).collect();
            (DeviceTensor::from_host_f16(gpu, &h, shape)?, rounded)
        }
    })
}
