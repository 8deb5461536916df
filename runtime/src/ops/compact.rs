//! SCFA QK-drop ops: keep masks (u8 or i32, on the device) and their stable
//! compaction into original positions, padded to the busiest (b, h).

use super::module::blocks_for;
use super::{check_index3, check_same_gpu, invalid, GpuOps, OpResult};
use crate::gpu::Gpu;
use crate::tensor::{DeviceTensor, ElemType};
use crate::validate::KernelArg::{I32, Ptr};

/// Which tokens of each (b, h) survive: nonzero = keep. Stored on the device
/// as i32 per token, or as bytes (u8 per token, packed four to a word).
#[derive(Debug)]
pub struct KeepMask {
    tensor: DeviceTensor,
    bytes: bool,
    shape: [usize; 3],
}

impl KeepMask {
    /// From an i32 tensor (B, H, N), contiguous; nonzero = keep.
    pub fn from_i32(t: DeviceTensor) -> super::OpResult<KeepMask> {
        let shape = check_index3("the keep mask", &t)?;
        Ok(KeepMask { tensor: t, bytes: false, shape })
    }

    /// Uploads a u8 mask (B, H, N), row-major; nonzero = keep. It stays one
    /// byte per token on the device.
    pub fn from_host_u8(gpu: &Gpu, data: &[u8], shape: [usize; 3]) -> OpResult<KeepMask> {
        let n: usize = shape.iter().product();
        if data.len() != n || n == 0 {
            return Err(invalid(
                "the keep mask",
                format!("has {} values for shape {shape:?} (B, H, N); give one byte per token", data.len()),
            ));
        }
        if shape[2] > i32::MAX as usize {
            return Err(invalid("the keep mask", format!("has N = {}, above i32::MAX", shape[2])));
        }
        let words: Vec<i32> = data
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                i32::from_le_bytes(w)
            })
            .collect();
        let len = words.len();
        Ok(KeepMask { tensor: DeviceTensor::from_host_i32(gpu, &words, &[len])?, bytes: true, shape })
    }

    /// Uploads a bool mask (B, H, N), row-major, as bytes.
    pub fn from_host_bool(gpu: &Gpu, data: &[bool], shape: [usize; 3]) -> OpResult<KeepMask> {
        let bytes: Vec<u8> = data.iter().map(|&k| k as u8).collect();
        Self::from_host_u8(gpu, &bytes, shape)
    }

    /// (B, H, N).
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// True for a byte mask, false for an i32 mask.
    pub fn is_bytes(&self) -> bool {
        self.bytes
    }
}

/// Kept tokens of every (b, h), in original order.
#[derive(Debug)]
pub struct Compacted {
    /// i32 (B, H, M): original positions of the kept tokens, increasing,
    /// then the padding value up to M = the busiest (b, h)'s count (at least 1).
    pub pos: DeviceTensor,
    /// Kept tokens per (b, h), row-major (B, H) (read back to size `pos`).
    pub counts: Vec<i32>,
}

impl Compacted {
    /// M: the padded length.
    pub fn padded_len(&self) -> usize {
        self.pos.shape()[2]
    }
}

impl GpuOps {
    /// Kept tokens per (b, h): i32 (B, H).
    pub fn keep_counts(&self, keep: &KeepMask) -> OpResult<DeviceTensor> {
        check_same_gpu("the keep mask", &keep.tensor, self.gpu().ordinal())?;
        let [b, h, n] = keep.shape;
        let counts = DeviceTensor::zeros(self.gpu(), ElemType::I32, &[b, h])?;
        let args = [Ptr(keep.tensor.device_ptr()), I32(keep.bytes as i32), I32(n as i32), Ptr(counts.device_ptr())];
        self.launch("lacuna_keep_count", &args, (blocks_for(b * h, 1)?, 1, 1), 256, 0)?;
        Ok(counts)
    }

    /// Stable compaction into `padded` slots per (b, h): original positions
    /// of the kept tokens, then `pad`. Kept tokens beyond `padded` are cut.
    pub fn compact_into(&self, keep: &KeepMask, padded: usize, pad: i32) -> OpResult<DeviceTensor> {
        check_same_gpu("the keep mask", &keep.tensor, self.gpu().ordinal())?;
        let [b, h, n] = keep.shape;
        if padded == 0 || padded > i32::MAX as usize {
            return Err(invalid("the padded length", format!("is {padded}; it must be in 1..=i32::MAX")));
        }
        // Every entry is written: a kept token's position or the padding.
        let pos = DeviceTensor::uninit(self.gpu(), ElemType::I32, &[b, h, padded])?;
        let args = [
            Ptr(keep.tensor.device_ptr()),
            I32(keep.bytes as i32),
            I32(n as i32),
            I32(padded as i32),
            I32(pad),
            Ptr(pos.device_ptr()),
        ];
        self.launch("lacuna_keep_compact", &args, (blocks_for(b * h, 1)?, 1, 1), 1024, 0)?;
        Ok(pos)
    }

    /// Counts on the GPU, reads the counts back (one small copy, to size the
    /// output), and compacts into the busiest (b, h)'s count.
    pub fn compact(&self, keep: &KeepMask, pad: i32) -> OpResult<Compacted> {
        let counts = self.keep_counts(keep)?.to_host_i32()?;
        let busiest = counts.iter().copied().max().unwrap_or(0).max(1) as usize;
        let pos = self.compact_into(keep, busiest, pad)?;
        Ok(Compacted { pos, counts })
    }
}
