//! `DeviceTensor`: a typed, shaped, strided view of a device allocation, and
//! the copies between host and device. Views share their allocation (like
//! PyTorch views), so a (B, N, H, D) buffer can be handed to the kernel as
//! (B, H, N, D) without a copy. Layout rules live in `validate`; this module
//! only moves bytes and never launches a Lacuna kernel.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr};
use half::{bf16, f16};

use crate::error::{Result, RuntimeError};
use crate::gpu::Gpu;
use crate::validate::{contiguous_strides, extent, is_contiguous, layout_problem, non_overlapping, numel, TensorDesc};

/// Element type of a device tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElemType {
    Bf16,
    F16,
    F32,
    I32,
}

impl ElemType {
    pub fn name(self) -> &'static str {
        match self {
            ElemType::Bf16 => "bf16",
            ElemType::F16 => "fp16",
            ElemType::F32 => "f32",
            ElemType::I32 => "i32",
        }
    }

    pub fn size_bytes(self) -> usize {
        match self {
            ElemType::Bf16 | ElemType::F16 => 2,
            ElemType::F32 | ElemType::I32 => 4,
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<lacuna_ir::Dtype> for ElemType {
    fn from(d: lacuna_ir::Dtype) -> Self {
        match d {
            lacuna_ir::Dtype::Bf16 => ElemType::Bf16,
            lacuna_ir::Dtype::F16 => ElemType::F16,
        }
    }
}

/// The allocation. 16-bit floats are kept as raw bits so cudarc needs no
/// `f16` feature; the element type lives in the tensor.
enum Storage {
    Bits16(CudaSlice<u16>),
    F32(CudaSlice<f32>),
    I32(CudaSlice<i32>),
}

impl Storage {
    fn len(&self) -> usize {
        match self {
            Storage::Bits16(s) => s.len(),
            Storage::F32(s) => s.len(),
            Storage::I32(s) => s.len(),
        }
    }
}

/// A tensor in device memory: element type, shape, strides (in elements) and
/// offset over a shared allocation. Invariant: every element of the view lies
/// inside the allocation (checked wherever a view is made).
pub struct DeviceTensor {
    gpu: Gpu,
    storage: Arc<Storage>,
    dtype: ElemType,
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

impl fmt::Debug for DeviceTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceTensor({} {:?}, strides {:?}", self.dtype, self.shape, self.strides)?;
        if self.offset != 0 {
            write!(f, ", offset {}", self.offset)?;
        }
        write!(f, ", device {})", self.gpu.ordinal())
    }
}

fn count(what: &str, shape: &[usize]) -> Result<usize> {
    numel(shape).ok_or_else(|| RuntimeError::TooLarge {
        what: format!("the element count of {what} {shape:?}"),
        value: usize::MAX,
        max: usize::MAX,
        why: "it overflows usize",
    })
}

fn check_host_len(what: &str, len: usize, shape: &[usize]) -> Result<()> {
    let expected = count(what, shape)?;
    if len != expected {
        return Err(RuntimeError::HostLength { what: what.into(), len, shape: shape.to_vec(), expected });
    }
    Ok(())
}

impl DeviceTensor {
    fn contiguous(gpu: &Gpu, storage: Storage, dtype: ElemType, shape: &[usize]) -> Self {
        DeviceTensor {
            gpu: gpu.clone(),
            storage: Arc::new(storage),
            dtype,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// A new contiguous tensor of zeros.
    pub fn zeros(gpu: &Gpu, dtype: ElemType, shape: &[usize]) -> Result<Self> {
        Self::alloc(gpu, dtype, shape, true)
    }

    /// A new contiguous tensor whose contents are unspecified, for an output
    /// every element of which the next kernel writes (skips the memset).
    pub(crate) fn uninit(gpu: &Gpu, dtype: ElemType, shape: &[usize]) -> Result<Self> {
        Self::alloc(gpu, dtype, shape, false)
    }

    fn alloc(gpu: &Gpu, dtype: ElemType, shape: &[usize], zeroed: bool) -> Result<Self> {
        // cuMemAlloc refuses 0 bytes; an empty tensor still gets one element.
        let n = count("a new tensor", shape)?.max(1);
        let stream = gpu.stream();
        let action = || format!("allocating a {dtype} tensor of shape {shape:?} on device {}", gpu.ordinal());
        fn slice<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(stream: &std::sync::Arc<cudarc::driver::CudaStream>, n: usize, zeroed: bool) -> Result<CudaSlice<T>, cudarc::driver::DriverError> {
            if zeroed {
                stream.alloc_zeros(n)
            } else {
                // SAFETY: the elements are plain bits on the device (bf16/f16/f32/i32);
                // any pattern is a valid value, and callers overwrite all of them.
                unsafe { stream.alloc(n) }
            }
        }
        let storage = match dtype {
            ElemType::Bf16 | ElemType::F16 => Storage::Bits16(slice(stream, n, zeroed).map_err(RuntimeError::driver(action()))?),
            ElemType::F32 => Storage::F32(slice(stream, n, zeroed).map_err(RuntimeError::driver(action()))?),
            ElemType::I32 => Storage::I32(slice(stream, n, zeroed).map_err(RuntimeError::driver(action()))?),
        };
        Ok(Self::contiguous(gpu, storage, dtype, shape))
    }

    fn upload<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, data: &[T], what: &str) -> Result<CudaSlice<T>> {
        gpu.stream().clone_htod(data).map_err(RuntimeError::driver(format!("copying {what} to device {}", gpu.ordinal())))
    }

    /// Uploads row-major bf16 values as a contiguous tensor of `shape`.
    pub fn from_host_bf16(gpu: &Gpu, data: &[bf16], shape: &[usize]) -> Result<Self> {
        check_host_len("from_host_bf16", data.len(), shape)?;
        let bits: Vec<u16> = data.iter().map(|x| x.to_bits()).collect();
        Self::from_bits(gpu, ElemType::Bf16, bits, shape)
    }

    /// Uploads row-major fp16 values as a contiguous tensor of `shape`.
    pub fn from_host_f16(gpu: &Gpu, data: &[f16], shape: &[usize]) -> Result<Self> {
        check_host_len("from_host_f16", data.len(), shape)?;
        let bits: Vec<u16> = data.iter().map(|x| x.to_bits()).collect();
        Self::from_bits(gpu, ElemType::F16, bits, shape)
    }

    fn from_bits(gpu: &Gpu, dtype: ElemType, mut bits: Vec<u16>, shape: &[usize]) -> Result<Self> {
        if bits.is_empty() {
            bits.push(0);
        }
        let s = Self::upload(gpu, &bits, &format!("{dtype} data"))?;
        Ok(Self::contiguous(gpu, Storage::Bits16(s), dtype, shape))
    }

    /// Uploads row-major f32 values as a contiguous tensor of `shape`.
    pub fn from_host_f32(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Self> {
        check_host_len("from_host_f32", data.len(), shape)?;
        let s = if data.is_empty() { Self::upload(gpu, &[0f32], "f32 data")? } else { Self::upload(gpu, data, "f32 data")? };
        Ok(Self::contiguous(gpu, Storage::F32(s), ElemType::F32, shape))
    }

    /// Uploads row-major i32 values as a contiguous tensor of `shape`.
    pub fn from_host_i32(gpu: &Gpu, data: &[i32], shape: &[usize]) -> Result<Self> {
        check_host_len("from_host_i32", data.len(), shape)?;
        let s = if data.is_empty() { Self::upload(gpu, &[0i32], "i32 data")? } else { Self::upload(gpu, data, "i32 data")? };
        Ok(Self::contiguous(gpu, Storage::I32(s), ElemType::I32, shape))
    }

    pub fn dtype(&self) -> ElemType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// In elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Of the first element, in elements from the start of the allocation.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape).unwrap_or(usize::MAX)
    }

    pub fn is_contiguous(&self) -> bool {
        is_contiguous(&self.shape, &self.strides)
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Another view of the same allocation, starting at this view's offset.
    pub fn view(&self, shape: &[usize], strides: &[usize]) -> Result<DeviceTensor> {
        self.view_at(self.offset, shape, strides)
    }

    /// Another view of the same allocation with an explicit element offset.
    pub fn view_at(&self, offset: usize, shape: &[usize], strides: &[usize]) -> Result<DeviceTensor> {
        if let Some(problem) = layout_problem(shape, strides, offset, self.storage.len()) {
            return Err(RuntimeError::Layout {
                tensor: "the requested view".into(),
                shape: shape.to_vec(),
                strides: strides.to_vec(),
                problem,
            });
        }
        Ok(DeviceTensor {
            gpu: self.gpu.clone(),
            storage: Arc::clone(&self.storage),
            dtype: self.dtype,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            offset,
        })
    }

    /// The view with dimensions `a` and `b` swapped; `transpose(1, 2)` turns
    /// a contiguous (B, N, H, D) tensor into the (B, H, N, D) view the kernel
    /// takes (strides (N·H·D, D, H·D, 1)).
    pub fn transpose(&self, a: usize, b: usize) -> Result<DeviceTensor> {
        let rank = self.shape.len();
        if a >= rank || b >= rank {
            return Err(RuntimeError::Shape {
                tensor: "the tensor to transpose".into(),
                got: self.shape.clone(),
                expected: format!("dimensions {a} and {b} must both be below its rank {rank}"),
            });
        }
        let mut shape = self.shape.clone();
        let mut strides = self.strides.clone();
        shape.swap(a, b);
        strides.swap(a, b);
        self.view(&shape, &strides)
    }

    /// Device address of the view's first element.
    pub(crate) fn device_ptr(&self) -> u64 {
        let stream = self.gpu.stream();
        // The guard records a read event only when cudarc tracks several
        // streams; the runtime uses one, so dropping it at once is right.
        let base = match &*self.storage {
            Storage::Bits16(s) => s.device_ptr(stream).0,
            Storage::F32(s) => s.device_ptr(stream).0,
            Storage::I32(s) => s.device_ptr(stream).0,
        };
        base + (self.offset * self.dtype.size_bytes()) as u64
    }

    /// What validation needs, under the name errors will use.
    pub(crate) fn desc(&self, name: &str) -> TensorDesc {
        let stream = self.gpu.stream();
        let buffer = match &*self.storage {
            Storage::Bits16(s) => s.device_ptr(stream).0,
            Storage::F32(s) => s.device_ptr(stream).0,
            Storage::I32(s) => s.device_ptr(stream).0,
        };
        TensorDesc {
            name: name.into(),
            dtype: self.dtype,
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            offset: self.offset,
            buffer_len: self.storage.len(),
            buffer,
            device: self.gpu.ordinal(),
        }
    }

    /// Positions (in elements from the view's offset) of every element in
    /// row-major order of the view.
    fn element_positions(&self) -> Vec<usize> {
        let n = self.numel();
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let rank = self.shape.len();
        let mut idx = vec![0usize; rank];
        let mut pos = 0usize;
        for _ in 0..n {
            out.push(pos);
            // Odometer increment, keeping `pos` in step.
            for d in (0..rank).rev() {
                // Wrapping: a size-1 dimension may carry any stride, and the
                // detour through it is undone right away.
                idx[d] += 1;
                pos = pos.wrapping_add(self.strides[d]);
                if idx[d] < self.shape[d] {
                    break;
                }
                pos = pos.wrapping_sub(self.strides[d].wrapping_mul(self.shape[d]));
                idx[d] = 0;
            }
        }
        out
    }

    /// Elements from `offset` to one past the last element of the view.
    fn span(&self) -> usize {
        extent(&self.shape, &self.strides, self.offset).map_or(0, |e| e.saturating_sub(self.offset))
    }

    fn download<T: cudarc::driver::DeviceRepr + Copy + Default>(&self, s: &CudaSlice<T>) -> Result<Vec<T>> {
        let span = self.span();
        if span == 0 {
            return Ok(Vec::new());
        }
        let view = s.try_slice(self.offset..self.offset + span).ok_or_else(|| RuntimeError::Layout {
            tensor: "the tensor to download".into(),
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            problem: "the view runs past its allocation".into(),
        })?;
        let raw = self
            .gpu
            .stream()
            .clone_dtoh(&view)
            .map_err(RuntimeError::driver("copying a tensor to the host (an earlier kernel may have faulted)"))?;
        if self.is_contiguous() && raw.len() == self.numel() {
            return Ok(raw);
        }
        Ok(self.element_positions().into_iter().map(|p| raw[p]).collect())
    }

    fn wrong_dtype(&self, what: &'static str, only: &'static str) -> RuntimeError {
        RuntimeError::UnsupportedDtype { what, only, got: self.dtype }
    }

    /// The view's elements in row-major order (waits for the copy).
    pub fn to_host_bf16(&self) -> Result<Vec<bf16>> {
        match (&*self.storage, self.dtype) {
            (Storage::Bits16(s), ElemType::Bf16) => Ok(self.download(s)?.into_iter().map(bf16::from_bits).collect()),
            _ => Err(self.wrong_dtype("to_host_bf16", "bf16 tensors")),
        }
    }

    pub fn to_host_f16(&self) -> Result<Vec<f16>> {
        match (&*self.storage, self.dtype) {
            (Storage::Bits16(s), ElemType::F16) => Ok(self.download(s)?.into_iter().map(f16::from_bits).collect()),
            _ => Err(self.wrong_dtype("to_host_f16", "fp16 tensors")),
        }
    }

    pub fn to_host_f32(&self) -> Result<Vec<f32>> {
        match &*self.storage {
            Storage::F32(s) => self.download(s),
            _ => Err(self.wrong_dtype("to_host_f32", "f32 tensors")),
        }
    }

    pub fn to_host_i32(&self) -> Result<Vec<i32>> {
        match &*self.storage {
            Storage::I32(s) => self.download(s),
            _ => Err(self.wrong_dtype("to_host_i32", "i32 tensors")),
        }
    }

    /// Any floating-point tensor, widened to f32 (for comparisons in tests).
    pub fn to_host_as_f32(&self) -> Result<Vec<f32>> {
        match self.dtype {
            ElemType::Bf16 => Ok(self.to_host_bf16()?.into_iter().map(f32::from).collect()),
            ElemType::F16 => Ok(self.to_host_f16()?.into_iter().map(f32::from).collect()),
            ElemType::F32 => self.to_host_f32(),
            ElemType::I32 => Err(self.wrong_dtype("to_host_as_f32", "floating-point tensors")),
        }
    }

    /// Sets every element of a floating-point view to `value` (rounded to the dtype).
    pub fn fill_f32(&mut self, value: f32) -> Result<()> {
        match self.dtype {
            ElemType::Bf16 => self.fill_bits(u32::from(bf16::from_f32(value).to_bits())),
            ElemType::F16 => self.fill_bits(u32::from(f16::from_f32(value).to_bits())),
            ElemType::F32 => self.fill_bits(value.to_bits()),
            ElemType::I32 => Err(self.wrong_dtype("fill_f32", "floating-point tensors (use fill_i32)")),
        }
    }

    pub fn fill_i32(&mut self, value: i32) -> Result<()> {
        match self.dtype {
            ElemType::I32 => self.fill_bits(value as u32),
            _ => Err(self.wrong_dtype("fill_i32", "i32 tensors (use fill_f32)")),
        }
    }

    /// Fills with NaN (floats) or i32::MIN, so a test sees every element the
    /// kernel failed to write.
    pub fn poison(&mut self) -> Result<()> {
        match self.dtype {
            ElemType::Bf16 => self.fill_bits(0x7fc0),
            ElemType::F16 => self.fill_bits(0x7e00),
            ElemType::F32 => self.fill_bits(0x7fc0_0000),
            ElemType::I32 => self.fill_bits(i32::MIN as u32),
        }
    }

    /// Writes the bit pattern `bits` (low 16 bits for 16-bit types) into
    /// every element of the view.
    fn fill_bits(&mut self, bits: u32) -> Result<()> {
        let span = self.span();
        if span == 0 {
            return Ok(());
        }
        // A dense view (any dimension order) is one memset over its span; a
        // view with holes must not touch the elements between its own.
        if non_overlapping(&self.shape, &self.strides) && span == self.numel() {
            return self.memset(self.device_ptr(), bits, span);
        }
        match &*self.storage {
            Storage::Bits16(s) => {
                let mut raw = self.download_span(s, span)?;
                for p in self.element_positions() {
                    raw[p] = bits as u16;
                }
                self.upload_span(&raw)
            }
            Storage::F32(s) => {
                let mut raw = self.download_span(s, span)?;
                for p in self.element_positions() {
                    raw[p] = f32::from_bits(bits);
                }
                self.upload_span(&raw)
            }
            Storage::I32(s) => {
                let mut raw = self.download_span(s, span)?;
                for p in self.element_positions() {
                    raw[p] = bits as i32;
                }
                self.upload_span(&raw)
            }
        }
    }

    fn download_span<T: cudarc::driver::DeviceRepr>(&self, s: &CudaSlice<T>, span: usize) -> Result<Vec<T>> {
        let view = s.try_slice(self.offset..self.offset + span).ok_or_else(|| RuntimeError::Layout {
            tensor: "the tensor to fill".into(),
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            problem: "the view runs past its allocation".into(),
        })?;
        self.gpu.stream().clone_dtoh(&view).map_err(RuntimeError::driver("reading a strided view to fill it"))
    }

    /// Copies `raw` (the view's span) back to the device. Uses the raw
    /// driver call because the allocation is shared between views.
    fn upload_span<T>(&self, raw: &[T]) -> Result<()> {
        let gpu = &self.gpu;
        gpu.context().bind_to_thread().map_err(RuntimeError::driver("binding the CUDA context"))?;
        // SAFETY: `raw` covers exactly the view's span, which lies inside the
        // allocation (view invariant); the copy is synchronous with respect
        // to `raw`, which outlives the call.
        unsafe {
            cudarc::driver::sys::cuMemcpyHtoDAsync_v2(
                self.device_ptr(),
                raw.as_ptr().cast(),
                std::mem::size_of_val(raw),
                gpu.stream().cu_stream(),
            )
            .result()
            .map_err(RuntimeError::driver("writing a filled strided view back"))?;
        }
        gpu.stream().synchronize().map_err(RuntimeError::driver("writing a filled strided view back"))
    }

    fn memset(&self, ptr: u64, bits: u32, count: usize) -> Result<()> {
        let gpu = &self.gpu;
        gpu.context().bind_to_thread().map_err(RuntimeError::driver("binding the CUDA context"))?;
        let stream = gpu.stream().cu_stream();
        // SAFETY: [ptr, ptr + count elements) is the view's span, inside the
        // allocation; alignment is the element size, as memset requires.
        let r = unsafe {
            match self.dtype.size_bytes() {
                2 => cudarc::driver::sys::cuMemsetD16Async(ptr, bits as u16, count, stream),
                _ => cudarc::driver::sys::cuMemsetD32Async(ptr, bits, count, stream),
            }
        };
        r.result().map_err(RuntimeError::driver(format!("filling a {} tensor of shape {:?}", self.dtype, self.shape)))
    }
}
