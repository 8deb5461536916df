//! One pattern compiled for several key-length classes, the kernel picked
//! per launch by its key length: for callers whose lengths vary from call
//! to call (the SCFA pipelines), where one kernel compiled for one length
//! would run the wrong tiles at the others. The classes come from the code
//! generator's `KernelPlan::length_classes` (under the `jit` feature,
//! [`KernelByLength::compile`]) or from PTX compiled per class ahead of time
//! (`lacuna compile --kv-len N`; `--emit plan` lists the classes).

use crate::error::{Result, RuntimeError};
use crate::kernel::AttentionKernel;
use crate::validate::validate_length_classes;

/// What a method's pipeline launches for `kv_len` keys: one kernel for
/// every length ([`AttentionKernel`]), or one per length class
/// ([`KernelByLength`]).
pub trait KernelForKeys {
    /// The kernel to launch on rows of `kv_len` keys.
    fn for_keys(&self, kv_len: usize) -> &AttentionKernel;
}

impl KernelForKeys for AttentionKernel {
    fn for_keys(&self, _kv_len: usize) -> &AttentionKernel {
        self
    }
}

/// Kernels of one pattern, head dim, dtype and row mode, each serving the
/// key lengths up to its bound (ascending; the last takes every length).
#[derive(Debug)]
pub struct KernelByLength {
    /// Every class but the last, with its bound.
    bounded: Vec<(usize, AttentionKernel)>,
    /// The last class: every longer length.
    longest: (usize, AttentionKernel),
}

impl KernelByLength {
    /// Kernels with the largest key length each serves, in ascending order;
    /// the last serves every longer length too, whatever its bound says.
    /// They must implement the same pattern for the same head dim, dtype
    /// and row mode on the same GPU: only their tiles may differ.
    pub fn new(mut classes: Vec<(usize, AttentionKernel)>) -> Result<Self> {
        let described: Vec<_> = classes.iter().map(|(bound, k)| (*bound, k.manifest(), k.gpu().ordinal())).collect();
        validate_length_classes(&described)?;
        match classes.pop() {
            Some(longest) => Ok(Self { bounded: classes, longest }),
            None => Err(RuntimeError::Internal { what: "validate_length_classes passed an empty list".into() }),
        }
    }

    /// The classes: the largest key length each serves, and its kernel.
    pub fn classes(&self) -> impl Iterator<Item = (usize, &AttentionKernel)> {
        self.bounded.iter().chain(std::iter::once(&self.longest)).map(|(bound, kernel)| (*bound, kernel))
    }
}

impl KernelForKeys for KernelByLength {
    fn for_keys(&self, kv_len: usize) -> &AttentionKernel {
        self.bounded.iter().find(|(bound, _)| kv_len <= *bound).map_or(&self.longest.1, |(_, kernel)| kernel)
    }
}
