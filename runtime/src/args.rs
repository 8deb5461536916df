//! `PatternArgs`: the values of a pattern's named inputs for one launch,
//! bound by name. The builder cannot fail; everything is checked against the
//! kernel's manifest and the problem shape at launch (in `validate`), where
//! the expected shapes are known, so a mistake is reported once, in full.

use crate::tensor::DeviceTensor;
use crate::validate::ArgDesc;

/// One bound value.
pub(crate) enum ArgValue<'a> {
    Tensor(&'a DeviceTensor),
    HeadI32(Vec<i32>),
    HeadF32(Vec<f32>),
    I32(i32),
    F32(f32),
    BlockList(&'a DeviceTensor),
}

/// Values for a pattern's inputs, by name:
/// `PatternArgs::new().tensor("q_pos", &qp).tensor("k_pos", &kp).i32("W", 1024)`.
#[derive(Default)]
pub struct PatternArgs<'a> {
    pub(crate) entries: Vec<(String, ArgValue<'a>)>,
}

impl std::fmt::Debug for PatternArgs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_map();
        for (name, v) in &self.entries {
            match v {
                ArgValue::Tensor(t) | ArgValue::BlockList(t) => l.entry(name, t),
                ArgValue::HeadI32(x) => l.entry(name, x),
                ArgValue::HeadF32(x) => l.entry(name, x),
                ArgValue::I32(x) => l.entry(name, x),
                ArgValue::F32(x) => l.entry(name, x),
            };
        }
        l.finish()
    }
}

impl<'a> PatternArgs<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    fn with(mut self, name: &str, v: ArgValue<'a>) -> Self {
        self.entries.push((name.to_string(), v));
        self
    }

    /// A per-token input (`Q<i32>` or `K<i32>`): an i32 tensor (B, H, N), contiguous.
    pub fn tensor(self, name: &str, t: &'a DeviceTensor) -> Self {
        self.with(name, ArgValue::Tensor(t))
    }

    /// A per-head i32 input (`H<i32>`): one value per query head.
    pub fn head_i32(self, name: &str, values: &[i32]) -> Self {
        self.with(name, ArgValue::HeadI32(values.to_vec()))
    }

    /// A per-head f32 input (`H<f32>`): one value per query head.
    pub fn head_f32(self, name: &str, values: &[f32]) -> Self {
        self.with(name, ArgValue::HeadF32(values.to_vec()))
    }

    /// A launch scalar of type i32 (or bool, as 0/1).
    pub fn i32(self, name: &str, value: i32) -> Self {
        self.with(name, ArgValue::I32(value))
    }

    /// A launch scalar of type f32.
    pub fn f32(self, name: &str, value: f32) -> Self {
        self.with(name, ArgValue::F32(value))
    }

    /// A block list (`Blocks<n>`): i32 (B, H, ceil(Nq/n), W), -1 for unused slots.
    pub fn block_list(self, name: &str, t: &'a DeviceTensor) -> Self {
        self.with(name, ArgValue::BlockList(t))
    }

    /// The bound values without device data, for validation.
    pub(crate) fn describe(&self) -> Vec<(String, ArgDesc)> {
        self.entries
            .iter()
            .map(|(name, v)| {
                let d = match v {
                    ArgValue::Tensor(t) => ArgDesc::Tensor(t.desc(&format!("input `{name}`"))),
                    ArgValue::BlockList(t) => ArgDesc::BlockList(t.desc(&format!("input `{name}`"))),
                    ArgValue::HeadI32(x) => ArgDesc::HeadI32(x.len()),
                    ArgValue::HeadF32(x) => ArgDesc::HeadF32(x.len()),
                    ArgValue::I32(_) => ArgDesc::I32,
                    ArgValue::F32(_) => ArgDesc::F32,
                };
                (name.clone(), d)
            })
            .collect()
    }
}
