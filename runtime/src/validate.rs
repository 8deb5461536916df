//! Every check made before a launch, as pure functions over shapes, strides
//! and the manifest: no CUDA here, so all of it is unit-tested on machines
//! without a GPU. Also the pure parts of launching (grid sizes, the exact
//! kernel parameter list), so the ABI order is tested too. A kernel launched
//! with a bad shape reads out of bounds silently; everything that could make
//! it do so must be refused here.

use lacuna_ir::summary::{RANGE_WORDS, RUN_WORDS};
use lacuna_ir::{GridOrder, InputKind, KernelManifest, KernelParam, PatternIr, ScalarType, SplitKvEntries};

use crate::error::{Result, RuntimeError};
use crate::tensor::ElemType;

/// What validation needs to know about a device tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDesc {
    /// How error messages call it: `q`, `o`, input `q_pos`.
    pub name: String,
    pub dtype: ElemType,
    pub shape: Vec<usize>,
    /// In elements; unsigned, so negative strides cannot be expressed.
    pub strides: Vec<usize>,
    /// Of the first element, in elements from the start of the buffer.
    pub offset: usize,
    /// Elements in the underlying allocation.
    pub buffer_len: usize,
    /// Device address of the allocation (identifies shared buffers).
    pub buffer: u64,
    /// CUDA device ordinal.
    pub device: usize,
}

/// The problem one launch solves, taken from q and k: the CPU reference's
/// shape type, so a launch and its reference check name the same six numbers.
pub type Problem = lacuna_ir::reference::AttentionShape;

/// The kernel's i32 parameters (and the summary kernel's) must hold every length.
pub const MAX_LEN: usize = i32::MAX as usize;
/// CUDA's limit on grid dimensions y and z (query blocks of the forward
/// grid; rows of the summary grid).
pub const MAX_GRID_YZ: usize = 65_535;
/// CUDA's limit on grid dimension x (B·H of the forward grid).
pub const MAX_GRID_X: usize = i32::MAX as usize;

/// Row-major strides of a contiguous tensor.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

pub fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// One past the largest element index the view touches (0 when it has no elements).
pub fn extent(shape: &[usize], strides: &[usize], offset: usize) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    let mut last = offset;
    for (&d, &s) in shape.iter().zip(strides) {
        last = last.checked_add((d - 1).checked_mul(s)?)?;
    }
    last.checked_add(1)
}

/// Why `shape`/`strides`/`offset` do not describe a view inside a buffer of
/// `buffer_len` elements, or `None` when they do.
pub fn layout_problem(shape: &[usize], strides: &[usize], offset: usize, buffer_len: usize) -> Option<String> {
    if shape.len() != strides.len() {
        return Some(format!("{} dimensions but {} strides; give one stride per dimension", shape.len(), strides.len()));
    }
    // The kernel takes strides as i64.
    if let Some(s) = strides.iter().find(|&&s| s > i64::MAX as usize) {
        return Some(format!("stride {s} does not fit the kernel's i64 stride parameters"));
    }
    match extent(shape, strides, offset) {
        None => Some("the largest element index overflows; the strides are far too large".into()),
        Some(end) if end > buffer_len => Some(format!(
            "the view (offset {offset}) reaches element {}, past the end of its buffer of {buffer_len} elements; \
             fix the strides or the shape",
            end - 1
        )),
        Some(_) => None,
    }
}

/// True when no two elements of the view share an address (a sufficient
/// test: sorted by stride, each dimension steps over all inner ones).
pub fn non_overlapping(shape: &[usize], strides: &[usize]) -> bool {
    let mut dims: Vec<(usize, usize)> =
        shape.iter().zip(strides).filter(|(&d, _)| d > 1).map(|(&d, &s)| (s, d)).collect();
    dims.sort_unstable();
    let mut span = 1usize;
    for (s, d) in dims {
        if s < span {
            return false;
        }
        span = match s.checked_mul(d - 1).and_then(|x| x.checked_add(1)) {
            Some(x) => x,
            None => return false,
        };
    }
    true
}

/// Contiguous ignoring size-1 dimensions, whose stride never matters.
pub fn is_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    let want = contiguous_strides(shape);
    shape.len() == strides.len() && shape.iter().zip(strides).zip(&want).all(|((&d, &s), &w)| d <= 1 || s == w)
}

fn layout_err(t: &TensorDesc, problem: String) -> RuntimeError {
    RuntimeError::Layout { tensor: t.name.clone(), shape: t.shape.clone(), strides: t.strides.clone(), problem }
}

fn check_in_bounds(t: &TensorDesc) -> Result<()> {
    match layout_problem(&t.shape, &t.strides, t.offset, t.buffer_len) {
        Some(p) => Err(layout_err(t, p)),
        None => Ok(()),
    }
}

fn check_contiguous(t: &TensorDesc, why: &str) -> Result<()> {
    check_in_bounds(t)?;
    if !is_contiguous(&t.shape, &t.strides) {
        return Err(layout_err(
            t,
            format!("{why} must be contiguous (strides {:?}); make a contiguous copy", contiguous_strides(&t.shape)),
        ));
    }
    Ok(())
}

/// Rows of q, k, v and o are copied 16 bytes at a time (cp.async, TMA,
/// vector stores): every row must start on a 16-byte boundary, so the view's
/// first element and its b, h, n strides must be multiples of 16 bytes.
/// Allocations themselves are 256-byte aligned.
// `%` rather than is_multiple_of: the workspace supports Rust 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn check_rows_aligned(t: &TensorDesc) -> Result<()> {
    let bytes = t.dtype.size_bytes();
    if (t.offset * bytes) % 16 != 0 {
        return Err(layout_err(
            t,
            format!(
                "its first element is {} bytes into its buffer (offset {}); rows are copied 16 bytes at a time, \
                 so the view must start at a multiple of 16 bytes; make a contiguous copy",
                t.offset * bytes,
                t.offset
            ),
        ));
    }
    for (dim, name) in ["b", "h", "n"].iter().enumerate() {
        if t.shape.len() > dim && t.shape[dim] > 1 && (t.strides[dim] * bytes) % 16 != 0 {
            return Err(layout_err(
                t,
                format!(
                    "the stride of dimension {dim} ({name}) is {} bytes; rows are copied 16 bytes at a time, \
                     so the b, h and n strides must be multiples of 16 bytes; make a contiguous copy",
                    t.strides[dim] * bytes
                ),
            ));
        }
    }
    Ok(())
}

fn check_device(t: &TensorDesc, device: usize) -> Result<()> {
    if t.device != device {
        return Err(RuntimeError::WrongDevice { tensor: t.name.clone(), expected: device, got: t.device });
    }
    Ok(())
}

fn check_dtype(t: &TensorDesc, expected: ElemType, hint: &str) -> Result<()> {
    if t.dtype != expected {
        return Err(RuntimeError::Dtype { tensor: t.name.clone(), expected, got: t.dtype, hint: hint.into() });
    }
    Ok(())
}

fn check_len(what: &str, value: usize, max: usize, why: &'static str) -> Result<()> {
    if value > max {
        return Err(RuntimeError::TooLarge { what: what.into(), value, max, why });
    }
    Ok(())
}

/// Checks q, k, v (and o, lse when the caller provides them) against the
/// kernel and each other, and returns the problem they describe.
pub fn validate_forward(
    m: &KernelManifest,
    device: usize,
    q: &TensorDesc,
    k: &TensorDesc,
    v: &TensorDesc,
    out: Option<(&TensorDesc, &TensorDesc)>,
) -> Result<Problem> {
    let outs: Vec<&TensorDesc> = out.map(|(o, l)| vec![o, l]).unwrap_or_default();
    for t in [q, k, v].into_iter().chain(outs.iter().copied()) {
        check_device(t, device)?;
    }
    let dtype = ElemType::from(m.dtype);
    for t in [q, k, v] {
        let hint = format!(
            " (the kernel was compiled for {dtype}; convert the tensor, or compile a kernel for {} with `lacuna compile --dtype {}`)",
            t.dtype, t.dtype
        );
        check_dtype(t, dtype, &hint)?;
    }
    for t in [q, k, v] {
        if t.shape.len() != 4 {
            let expected = if t.name == "q" { "(B, H, Nq, D)" } else { "(B, Hkv, Nk, D)" };
            return Err(RuntimeError::Shape {
                tensor: t.name.clone(),
                got: t.shape.clone(),
                expected: format!("it must be 4-d {expected}; for a (B, N, H, D) buffer use `.transpose(1, 2)`"),
            });
        }
    }
    for t in [q, k, v] {
        if t.shape[3] != m.head_dim as usize {
            return Err(RuntimeError::HeadDim { tensor: t.name.clone(), expected: m.head_dim, got: t.shape[3] });
        }
    }
    if v.shape != k.shape {
        return Err(RuntimeError::Shape {
            tensor: v.name.clone(),
            got: v.shape.clone(),
            expected: format!("it must have the shape of k {:?} (B, Hkv, Nk, D)", k.shape),
        });
    }
    let p = Problem {
        batch: q.shape[0],
        heads: q.shape[1],
        kv_heads: k.shape[1],
        q_len: q.shape[2],
        kv_len: k.shape[2],
        head_dim: q.shape[3],
    };
    if k.shape[0] != p.batch {
        return Err(RuntimeError::Shape {
            tensor: k.name.clone(),
            got: k.shape.clone(),
            expected: format!("its batch size must be q's ({})", p.batch),
        });
    }
    for t in [q, k] {
        if t.shape.contains(&0) {
            return Err(RuntimeError::Shape {
                tensor: t.name.clone(),
                got: t.shape.clone(),
                expected: "every dimension must be at least 1".into(),
            });
        }
    }
    // `%` rather than is_multiple_of: the workspace supports Rust 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    if p.heads % p.kv_heads != 0 {
        return Err(RuntimeError::HeadsNotMultiple { heads: p.heads, kv_heads: p.kv_heads });
    }
    check_len("q_len (Nq)", p.q_len, MAX_LEN, "lengths are i32 kernel parameters")?;
    check_len("kv_len (Nk)", p.kv_len, MAX_LEN, "lengths are i32 kernel parameters")?;
    let q_blocks = p.q_len.div_ceil(m.block_q.max(1) as usize);
    match m.grid {
        GridOrder::HeadMajor => {
            check_len("the number of heads", p.heads, MAX_GRID_YZ, "heads are the grid's y dimension")?;
            check_len("the batch size", p.batch, MAX_GRID_YZ, "the batch is the grid's z dimension")?;
        }
        GridOrder::HeaviestFirst => {
            check_len("B·H (batch times heads)", p.batch.saturating_mul(p.heads), MAX_GRID_X, "B·H is the grid's x dimension")?;
            check_len(
                &format!("the number of query blocks (Nq / {} rounded up)", m.block_q),
                q_blocks,
                MAX_GRID_YZ,
                "query blocks are the grid's y dimension; split the queries over several launches",
            )?;
        }
        GridOrder::RankMajor => {
            check_len("the number of heads", p.heads, MAX_GRID_X, "heads are the grid's x dimension")?;
            check_len("the batch size", p.batch, MAX_GRID_YZ, "the batch is the grid's y dimension")?;
            check_len(
                &format!("the number of query blocks (Nq / {} rounded up)", m.block_q),
                q_blocks,
                MAX_GRID_YZ,
                "query blocks are the grid's z dimension; split the queries over several launches",
            )?;
        }
    }
    for t in [q, k, v] {
        if t.strides.len() == 4 && t.strides[3] != 1 {
            return Err(layout_err(t, "the last (head_dim) dimension must have stride 1; make a contiguous copy".into()));
        }
        check_in_bounds(t)?;
        check_rows_aligned(t)?;
    }
    if let Some((o, lse)) = out {
        check_dtype(o, dtype, " (o must have the dtype of q)")?;
        if o.shape != q.shape {
            return Err(RuntimeError::Shape {
                tensor: o.name.clone(),
                got: o.shape.clone(),
                expected: format!("it must have the shape of q {:?}", q.shape),
            });
        }
        if o.strides.len() == 4 && o.strides[3] != 1 {
            return Err(layout_err(o, "the last (head_dim) dimension must have stride 1".into()));
        }
        check_in_bounds(o)?;
        check_rows_aligned(o)?;
        if !non_overlapping(&o.shape, &o.strides) {
            return Err(layout_err(o, "elements overlap, so the kernel's writes would race; use distinct strides".into()));
        }
        check_dtype(lse, ElemType::F32, " (the log-sum-exp is always f32)")?;
        let want = [p.batch, p.heads, p.q_len];
        if lse.shape != want {
            return Err(RuntimeError::Shape {
                tensor: lse.name.clone(),
                got: lse.shape.clone(),
                expected: format!("it must be {want:?} (B, H, Nq)"),
            });
        }
        check_contiguous(lse, "the log-sum-exp")?;
        for (w, r) in [(o, q), (o, k), (o, v), (lse, q), (lse, k), (lse, v), (lse, o)] {
            if w.buffer == r.buffer {
                return Err(RuntimeError::Aliased { a: w.name.clone(), b: r.name.clone() });
            }
        }
    }
    Ok(p)
}

/// Checks a launch's head order: one entry per query head, each head once.
pub fn validate_head_order<'a>(entry: &str, order: &'a [i32], heads: usize) -> Result<&'a [i32]> {
    let bad = |problem: String| Err(RuntimeError::HeadOrder { entry: entry.to_string(), problem });
    if order.len() != heads {
        return bad(format!("has {} entries for {heads} query heads: give each head once", order.len()));
    }
    let mut seen = vec![false; heads];
    for (i, &h) in order.iter().enumerate() {
        match usize::try_from(h).ok().filter(|&h| h < heads) {
            None => return bad(format!("entry {i} is {h}, not a head in 0..{heads}")),
            Some(h) if seen[h] => return bad(format!("head {h} appears twice (again at entry {i}): it must be a permutation of 0..{heads}")),
            Some(h) => seen[h] = true,
        }
    }
    Ok(order)
}

/// Checks the row-index arrays of a `row_index` kernel against the source
/// problem `src` (read off q, k, v) and returns the problem the kernel runs:
/// the same batch and heads, with `q_len` / `kv_len` the index lengths.
/// `q_rows` is i32 (B, H, M), `kv_rows` i32 (B, H, Mk), both contiguous and
/// indexed by the query head; entries outside the source rows are padding.
pub fn validate_row_index(device: usize, q_rows: &TensorDesc, kv_rows: &TensorDesc, src: &Problem) -> Result<Problem> {
    for (t, what) in [(q_rows, "Nq'"), (kv_rows, "Nk'")] {
        check_device(t, device)?;
        check_dtype(t, ElemType::I32, " (row indices are i32)")?;
        if t.shape.len() != 3 || t.shape[0] != src.batch || t.shape[1] != src.heads || t.shape[2] == 0 {
            return Err(RuntimeError::Shape {
                tensor: t.name.clone(),
                got: t.shape.clone(),
                expected: format!("it must be ({}, {}, {what}) (B, H, rows of the regrouped sequence), {what} >= 1", src.batch, src.heads),
            });
        }
        check_contiguous(t, "a row index")?;
        check_in_bounds(t)?;
    }
    let p = Problem { q_len: q_rows.shape[2], kv_len: kv_rows.shape[2], ..*src };
    check_len("the rows of q_rows", p.q_len, MAX_LEN, "lengths are i32 kernel parameters")?;
    check_len("the rows of kv_rows", p.kv_len, MAX_LEN, "lengths are i32 kernel parameters")?;
    Ok(p)
}

/// A softmax scale, or the default 1/sqrt(D), in the exp2 form the kernel takes.
///
/// The kernels fold the scale into the exponent (2^(s·c − max·c), one FMA per
/// score, as FlashAttention does), which takes row maxima of the raw scores:
/// that is right only for a positive scale, so zero, negative, NaN and
/// infinite scales are refused here rather than giving wrong rows.
pub fn scale_log2(scale: Option<f32>, head_dim: usize) -> Result<f32> {
    let s = scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
    let c = s * std::f32::consts::LOG2_E;
    if !(c.is_finite() && c > 0.0) {
        return Err(RuntimeError::InputType {
            name: "scale".into(),
            expected: "a positive finite number (or None for 1/sqrt(head_dim)); to flip the scores' sign, negate Q".into(),
            got: format!("{s}"),
        });
    }
    Ok(c)
}

/// Checks the manifest read from a PTX file against the pattern the caller
/// says it implements, and the manifest's own sanity (it sizes the grid).
pub fn check_manifest(m: &KernelManifest, pattern: &PatternIr) -> Result<()> {
    if m.pattern != pattern.name() {
        return Err(RuntimeError::WrongPattern { ptx_pattern: m.pattern.clone(), pattern: pattern.name().into() });
    }
    let hash = pattern.content_hash();
    if m.ir_hash != hash {
        return Err(RuntimeError::StalePattern { pattern: m.pattern.clone(), ptx_hash: m.ir_hash, hash });
    }
    let decls = pattern.inputs();
    let mismatch = |detail: String| RuntimeError::ManifestParams { pattern: m.pattern.clone(), detail };
    if m.params.len() != decls.len() {
        return Err(mismatch(format!("the manifest lists {} inputs, the pattern declares {}", m.params.len(), decls.len())));
    }
    for (i, (KernelParam::Input { name, kind }, d)) in m.params.iter().zip(decls).enumerate() {
        if name != &d.name || *kind != d.kind {
            return Err(mismatch(format!(
                "input {i} is `{name}: {kind}` in the manifest but `{}: {}` in the pattern",
                d.name, d.kind
            )));
        }
        if let InputKind::BlockList { block: 0 } = kind {
            return Err(mismatch(format!("block list `{name}` has block size 0")));
        }
    }
    let bad = |problem: String| RuntimeError::BadPtx { problem };
    if m.block_q == 0 || m.block_k == 0 {
        return Err(bad(format!("has a manifest with tile {} x {} (a tile side of 0)", m.block_q, m.block_k)));
    }
    if m.threads == 0 || m.threads > 1024 {
        return Err(bad(format!("has a manifest asking for {} threads per block (1..=1024 possible)", m.threads)));
    }
    if m.head_dim == 0 {
        return Err(bad("has a manifest with head_dim 0".into()));
    }
    if let Some(runs) = &m.bucket_runs {
        // Every name must be a tensor input of the right side, or the
        // summaries would be made from the wrong buffers.
        let kind_of = |name: &str| decls.iter().find(|d| d.name == name).map(|d| d.kind);
        for (name, want) in [(&runs.query_bucket, Some(InputKind::QueryTensor)), (&runs.key_bucket, Some(InputKind::KeyTensor))] {
            if kind_of(name) != want {
                return Err(mismatch(format!("the manifest's bucket input `{name}` is not a {} of the pattern", if want == Some(InputKind::QueryTensor) { "query tensor" } else { "key tensor" })));
            }
        }
        for name in &runs.inputs {
            if !matches!(kind_of(name), Some(InputKind::QueryTensor | InputKind::KeyTensor)) {
                return Err(mismatch(format!("the manifest summarises `{name}` with bucket runs, but it is no tensor input of the pattern")));
            }
        }
    }
    Ok(())
}

/// What the caller bound for one input, without any device data.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgDesc {
    Tensor(TensorDesc),
    HeadI32(usize),
    HeadF32(usize),
    I32,
    F32,
    BlockList(TensorDesc),
}

impl ArgDesc {
    fn describe(&self) -> String {
        match self {
            ArgDesc::Tensor(t) => format!("a tensor ({}, shape {:?}) bound with `.tensor`", t.dtype, t.shape),
            ArgDesc::HeadI32(n) => format!("{n} per-head i32 values bound with `.head_i32`"),
            ArgDesc::HeadF32(n) => format!("{n} per-head f32 values bound with `.head_f32`"),
            ArgDesc::I32 => "an i32 scalar bound with `.i32`".into(),
            ArgDesc::F32 => "an f32 scalar bound with `.f32`".into(),
            ArgDesc::BlockList(t) => format!("a block list ({}, shape {:?}) bound with `.block_list`", t.dtype, t.shape),
        }
    }
}

/// The `PatternArgs` method that binds an input of this kind.
fn method_for(kind: InputKind) -> &'static str {
    match kind {
        InputKind::QueryTensor | InputKind::KeyTensor => "tensor",
        InputKind::HeadScalar(ScalarType::F32) => "head_f32",
        InputKind::HeadScalar(_) => "head_i32",
        InputKind::LaunchScalar(ScalarType::F32) => "f32",
        InputKind::LaunchScalar(_) => "i32",
        InputKind::BlockList { .. } => "block_list",
    }
}

/// Kernels by key length ([`crate::KernelByLength`]): each class's bound
/// (the largest key length it serves), manifest and GPU ordinal. The bounds
/// must ascend, and every class implement the same pattern for the same head
/// dim, dtype and row mode on the same GPU: only tiles may differ.
pub fn validate_length_classes(classes: &[(usize, &KernelManifest, usize)]) -> Result<()> {
    let bad = |problem: String| RuntimeError::LengthClasses { problem };
    let Some(&(_, m0, gpu0)) = classes.first() else {
        return Err(bad("no kernel was given; give at least one".into()));
    };
    for (i, &(bound, m, gpu)) in classes.iter().enumerate() {
        if i > 0 && bound <= classes[i - 1].0 {
            return Err(bad(format!(
                "class {i} ends at {bound} keys, not after class {} ({} keys); list the classes by ascending bound",
                i - 1,
                classes[i - 1].0
            )));
        }
        let same = m.pattern == m0.pattern
            && m.ir_hash == m0.ir_hash
            && m.head_dim == m0.head_dim
            && m.dtype == m0.dtype
            && m.row_index == m0.row_index
            && gpu == gpu0;
        if !same {
            let what = |m: &KernelManifest, gpu: usize| {
                format!("`{}` (D={}, {}, row_index {}, GPU {gpu})", m.pattern, m.head_dim, m.dtype.name(), m.row_index)
            };
            return Err(bad(format!(
                "class {i} is {} but class 0 is {}; compile every class from one pattern, head dim, dtype and row mode",
                what(m, gpu),
                what(m0, gpu0)
            )));
        }
    }
    Ok(())
}

/// The exact form an input must take for this problem, in words.
pub fn expected_input(kind: InputKind, p: &Problem) -> String {
    match kind {
        InputKind::QueryTensor => {
            format!("an i32 tensor of shape [{}, {}, {}] (B, H, Nq), contiguous", p.batch, p.heads, p.q_len)
        }
        InputKind::KeyTensor => {
            format!("an i32 tensor of shape [{}, {}, {}] (B, H, Nk), contiguous", p.batch, p.heads, p.kv_len)
        }
        InputKind::HeadScalar(ScalarType::F32) => format!("{} f32 values (H, one per query head)", p.heads),
        InputKind::HeadScalar(_) => format!("{} i32 values (H, one per query head)", p.heads),
        InputKind::LaunchScalar(ScalarType::F32) => "an f32 scalar".into(),
        InputKind::LaunchScalar(_) => "an i32 scalar".into(),
        InputKind::BlockList { block } => format!(
            "an i32 tensor of shape [{}, {}, {}, W] (B, H, ceil(Nq/{block}), W selected key blocks, -1 = unused), contiguous",
            p.batch,
            p.heads,
            p.q_len.div_ceil(block.max(1) as usize)
        ),
    }
}

/// Matches bound arguments to the manifest's inputs: returns, per manifest
/// parameter, the index of its argument in `args`.
pub fn validate_inputs(
    pattern: &str,
    params: &[KernelParam],
    args: &[(String, ArgDesc)],
    p: &Problem,
    device: usize,
) -> Result<Vec<usize>> {
    for (i, (name, _)) in args.iter().enumerate() {
        if args[..i].iter().any(|(n, _)| n == name) {
            return Err(RuntimeError::DuplicateInput { name: name.clone() });
        }
    }
    let names: Vec<&str> = params.iter().map(|KernelParam::Input { name, .. }| name.as_str()).collect();
    if let Some((name, _)) = args.iter().find(|(n, _)| !names.contains(&n.as_str())) {
        return Err(RuntimeError::UnknownInput {
            pattern: pattern.into(),
            name: name.clone(),
            known: if names.is_empty() { "(none)".into() } else { names.join(", ") },
        });
    }
    let mut order = Vec::with_capacity(params.len());
    for KernelParam::Input { name, kind } in params {
        let expected = expected_input(*kind, p);
        let Some(index) = args.iter().position(|(n, _)| n == name) else {
            return Err(RuntimeError::MissingInput {
                pattern: pattern.into(),
                name: name.clone(),
                expected,
                method: method_for(*kind),
            });
        };
        let arg = &args[index].1;
        let wrong_type = || RuntimeError::InputType { name: name.clone(), expected: expected.clone(), got: arg.describe() };
        let wrong_shape = || RuntimeError::InputShape { name: name.clone(), expected: expected.clone(), got: arg.describe() };
        match (*kind, arg) {
            (InputKind::QueryTensor | InputKind::KeyTensor, ArgDesc::Tensor(t)) => {
                let n = if *kind == InputKind::QueryTensor { p.q_len } else { p.kv_len };
                check_device(t, device)?;
                if t.dtype != ElemType::I32 {
                    return Err(wrong_type());
                }
                if t.shape != [p.batch, p.heads, n] {
                    return Err(wrong_shape());
                }
                check_contiguous(t, "a pattern tensor input")?;
            }
            (InputKind::HeadScalar(ty), ArgDesc::HeadI32(n) | ArgDesc::HeadF32(n)) => {
                let is_f32 = matches!(arg, ArgDesc::HeadF32(_));
                if is_f32 != (ty == ScalarType::F32) {
                    return Err(wrong_type());
                }
                if *n != p.heads {
                    return Err(wrong_shape());
                }
            }
            (InputKind::LaunchScalar(ScalarType::F32), ArgDesc::F32) => {}
            (InputKind::LaunchScalar(ty), ArgDesc::I32) if ty != ScalarType::F32 => {}
            (InputKind::BlockList { block }, ArgDesc::BlockList(t)) => {
                check_device(t, device)?;
                if t.dtype != ElemType::I32 {
                    return Err(wrong_type());
                }
                let qb = p.q_len.div_ceil(block.max(1) as usize);
                if t.shape.len() != 4 || t.shape[..3] != [p.batch, p.heads, qb] || t.shape[3] == 0 {
                    return Err(wrong_shape());
                }
                check_len(&format!("the width of block list `{name}`"), t.shape[3], MAX_LEN, "W is an i32 kernel parameter")?;
                check_contiguous(t, "a block list")?;
            }
            _ => return Err(wrong_type()),
        }
        order.push(index);
    }
    Ok(order)
}

/// One kernel parameter value, in ABI order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    Ptr(u64),
    I64(i64),
    I32(i32),
    F32(f32),
    /// A `CUtensorMap`, passed by value.
    TensorMap(TensorMapBytes),
}

/// The 128 opaque bytes of an encoded `CUtensorMap` (64-byte aligned, as
/// the kernel's parameter is).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMapBytes(pub [u64; 16]);

/// What `cuTensorMapEncodeTiled` is asked for one of Q, K and V
/// (`manifest.tensor_maps`): 4-D, innermost first, over the tensor's
/// (B, H, N, D) view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMapRequest {
    /// (D, N, H, B).
    pub dims: [u64; 4],
    /// Byte strides of dims 1..4 (n, h, b); dim 0 is contiguous.
    pub strides: [u64; 3],
    /// The box one load fills: 64 columns (128 bytes, the swizzle's span)
    /// of `block_q` (Q) or `block_k` (K, V) rows of one (b, h).
    pub box_dims: [u32; 4],
}

/// TMA's limit on global strides (bytes).
pub const TMA_MAX_STRIDE: u64 = 1 << 40;

/// The tensor map Q, K or V (already validated by [`validate_forward`])
/// is loaded through, in boxes of `box_rows` rows. A dimension of size 1 is never stepped over, so its
/// stride (which the caller may have left at anything) is replaced by one
/// TMA accepts.
pub fn tensor_map_request(t: &TensorDesc, box_rows: u32) -> Result<TensorMapRequest> {
    let bytes = t.dtype.size_bytes() as u64;
    let [b, h, n, d] = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]].map(|x| x as u64);
    let mut strides = [0u64; 3];
    let mut below = d * bytes;
    for (i, (size, stride)) in [(n, t.strides[2]), (h, t.strides[1]), (b, t.strides[0])].into_iter().enumerate() {
        strides[i] = if size > 1 { stride as u64 * bytes } else { below.next_multiple_of(16) };
        below = strides[i] * size;
        if strides[i] >= TMA_MAX_STRIDE {
            return Err(layout_err(
                t,
                format!("a stride of {} bytes is beyond TMA's limit of 2^40 bytes; make a contiguous copy", strides[i]),
            ));
        }
    }
    Ok(TensorMapRequest { dims: [d, n, h, b], strides, box_dims: [64, box_rows, 1, 1] })
}

/// Device addresses of the fixed tensors (of their first elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardPointers {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    pub lse: u64,
}

/// The forward kernel's full parameter list. `strides` are q, k, v, o's
/// (validated to fit i64); `inputs` the pattern inputs, already expanded.
pub fn forward_args(
    ptrs: ForwardPointers,
    strides: [&[usize]; 4],
    p: &Problem,
    scale_log2: f32,
    inputs: &[KernelArg],
) -> Vec<KernelArg> {
    let mut a = vec![
        KernelArg::Ptr(ptrs.q),
        KernelArg::Ptr(ptrs.k),
        KernelArg::Ptr(ptrs.v),
        KernelArg::Ptr(ptrs.o),
        KernelArg::Ptr(ptrs.lse),
    ];
    for s in strides {
        // (b, h, n); the last dimension is contiguous by validation.
        a.extend(s.iter().take(3).map(|&x| KernelArg::I64(x as i64)));
    }
    a.extend([p.batch, p.heads, p.kv_heads, p.q_len, p.kv_len].map(|x| KernelArg::I32(x as i32)));
    a.push(KernelArg::F32(scale_log2));
    a.extend_from_slice(inputs);
    a
}

/// (grid, block, dynamic shared bytes) of the forward kernel, or with
/// `kv_splits` > 1 of its split-KV entry (the batch axis runs over
/// `batch · kv_splits`); the bytes grow with the key length when the
/// pattern has block lists.
pub fn forward_launch(m: &KernelManifest, p: &Problem, kv_splits: usize) -> ((u32, u32, u32), (u32, u32, u32), u32) {
    let q_blocks = p.q_len.div_ceil(m.block_q as usize) as u32;
    let shared = u32::try_from(m.shared_bytes_for(p.kv_len)).unwrap_or(u32::MAX);
    (m.grid.grid(q_blocks, p.heads as u32, (p.batch * kv_splits.max(1)) as u32), (m.threads, 1, 1), shared)
}

/// (grid, block) of the split-KV combine kernel: a warp per output row,
/// `combine_rows_per_cta` rows per CTA, over the B · H · Nq rows.
pub fn combine_launch(sp: &SplitKvEntries, p: &Problem) -> ((u32, u32, u32), (u32, u32, u32)) {
    let rows_per_cta = sp.combine_rows_per_cta.max(1);
    let rows = p.batch * p.heads * p.q_len;
    ((rows.div_ceil(rows_per_cta as usize) as u32, 1, 1), (32 * rows_per_cta, 1, 1))
}

/// Most CTAs one query block's key blocks may be split among.
pub const MAX_KV_SPLITS: usize = 64;
/// Candidate key blocks the automatic choice leaves each split at least.
const MIN_KEY_BLOCKS_PER_SPLIT: usize = 2;

/// The split count a launch gets when the caller names none: where the
/// grid's `ctas` (query blocks · H · B) fill less than the `resident` CTAs
/// the GPU holds at once (SMs × CTAs per SM), each query block's key blocks
/// go to as many CTAs as fill it (decoding: a handful of query rows over
/// thousands of keys), each with at least two of the `key_blocks` blocks.
/// A grid that fills the GPU is not split: splitting adds a CTA's fixed
/// work and a combine pass for no more parallelism.
pub fn auto_kv_splits(ctas: usize, resident: usize, key_blocks: usize) -> usize {
    if ctas == 0 || ctas >= resident {
        return 1;
    }
    (resident / ctas).min(key_blocks / MIN_KEY_BLOCKS_PER_SPLIT).clamp(1, MAX_KV_SPLITS)
}

/// Checks a split count the caller asked for (`ForwardOptions::kv_splits`)
/// against the kernel and the problem: 1 always works; more needs the
/// split-KV entry, at most [`MAX_KV_SPLITS`], and a batch axis of
/// `batch · kv_splits` within the grid's limit where batch is a y or z
/// dimension.
pub fn check_kv_splits(m: &KernelManifest, p: &Problem, kv_splits: usize) -> Result<usize> {
    let fail = |problem: String| Err(RuntimeError::KvSplits { entry: m.entry.clone(), problem });
    if kv_splits == 0 {
        return fail("0 splits; use 1 for the plain kernel, or leave it out for the automatic choice".into());
    }
    if kv_splits == 1 {
        return Ok(1);
    }
    if m.split_kv.is_none() {
        let why = if m.row_index { "kernels with row indices have no split-KV entry" } else { "this kernel was compiled without a split-KV entry (an older lacuna); recompile it" };
        return fail(format!("{kv_splits} splits asked for, but {why}; use 1"));
    }
    if kv_splits > MAX_KV_SPLITS {
        return fail(format!("{kv_splits} splits asked for; at most {MAX_KV_SPLITS}"));
    }
    if m.grid != GridOrder::HeaviestFirst && p.batch * kv_splits > MAX_GRID_YZ {
        return fail(format!("batch {} x {kv_splits} splits is past the grid's limit of {MAX_GRID_YZ}; use at most {} splits", p.batch, MAX_GRID_YZ / p.batch.max(1)));
    }
    Ok(kv_splits)
}

/// One launch of the summary kernel over a run of rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SummaryLaunch {
    pub first_row: usize,
    pub rows: usize,
    /// Elements from the start of src / dst to this launch's first row.
    pub src_offset: usize,
    pub dst_offset: usize,
    pub grid: (u32, u32, u32),
}

/// Threads per block of the summary kernel (ABI).
pub const SUMMARY_THREADS: u32 = 128;
/// Blocks the summary kernel's CTAs reduce per turn (codegen's
/// `BLOCKS_PER_CTA`). The kernel strides over a row's blocks by its grid
/// width, so any grid.x is correct; this one gives each warp one turn.
pub const SUMMARY_BLOCKS_PER_CTA: usize = 16;

/// Rows `[first, first + count)` of one summary launch: rows are the grid's
/// y dimension, so more than 65535 (B·H) are split.
pub fn row_chunks(rows: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rows).step_by(MAX_GRID_YZ).map(move |first| (first, (rows - first).min(MAX_GRID_YZ)))
}

/// Grid x of a summary launch over rows of `nblocks` blocks: one turn per warp.
pub fn summary_grid_x(nblocks: usize) -> u32 {
    nblocks.div_ceil(SUMMARY_BLOCKS_PER_CTA) as u32
}

/// The summary launches for `rows` rows of `n` values in blocks of `block`,
/// `words` per block out.
pub fn summary_launches(rows: usize, n: usize, block: u32, words: usize) -> Vec<SummaryLaunch> {
    let nblocks = n.div_ceil(block.max(1) as usize);
    row_chunks(rows)
        .map(|(first, count)| SummaryLaunch {
            first_row: first,
            rows: count,
            src_offset: first * n,
            dst_offset: first * nblocks * words,
            grid: (summary_grid_x(nblocks), count as u32, 1),
        })
        .collect()
}

/// i32 words per block of tensor input `name`'s summary: 2 ([min, max]),
/// 6 with bucket runs (`lacuna_ir::summary`).
pub fn summary_words(name: &str, kind: InputKind, m: &KernelManifest) -> usize {
    let runs = m.bucket_runs.as_ref().and_then(|r| r.bucket_for(name, kind)).is_some();
    if runs { RUN_WORDS } else { RANGE_WORDS }
}

/// Elements of the `(B, H, nblocks, words)` summary of tensor input `name`.
pub fn summary_len(p: &Problem, name: &str, kind: InputKind, m: &KernelManifest) -> usize {
    let (n, block) = if kind == InputKind::QueryTensor { (p.q_len, m.block_q) } else { (p.kv_len, m.block_k) };
    p.batch * p.heads * n.div_ceil(block.max(1) as usize) * summary_words(name, kind, m)
}

/// Checks a tensor given to [`crate::AttentionKernel::block_summary`];
/// returns (B, H, N).
pub fn validate_summary_input(t: &TensorDesc, block: u32, device: usize) -> Result<(usize, usize, usize)> {
    check_device(t, device)?;
    check_dtype(t, ElemType::I32, " (summaries are of i32 pattern inputs)")?;
    if t.shape.len() != 3 || t.shape.contains(&0) {
        return Err(RuntimeError::Shape {
            tensor: t.name.clone(),
            got: t.shape.clone(),
            expected: "it must be 3-d (B, H, N) with every dimension at least 1".into(),
        });
    }
    if block == 0 {
        return Err(RuntimeError::InputShape { name: "block".into(), expected: "at least 1".into(), got: "0".into() });
    }
    check_len("N", t.shape[2], MAX_LEN, "lengths are i32 kernel parameters")?;
    check_contiguous(t, "a summarised tensor")?;
    Ok((t.shape[0], t.shape[1], t.shape[2]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lacuna_ir::{pattern, Arch, Dtype, KeySource, Pattern};

    pattern! {
        /// Every kind of input, for the ABI and binding tests.
        pub AllKinds(q_pos: Q<i32>, k_pos: K<i32>, alpha: H<i32>, beta: H<f32>, W: i32, sel: Blocks<64>) =
            q_pos[q] >= k_pos[k] && (q - k < alpha[h] + (beta[h] * W as f32) as i32 || sel[q, k]);

        /// Plain causal.
        pub Causal() = q >= k;

        /// A bucket join: its positions are summarised with bucket runs.
        pub Bucketed(qb: Q<i32>, kb: K<i32>, qp: Q<i32>, kp: K<i32>) = qb[q] == kb[k] && qp[q] >= kp[k];
    }

    fn manifest_for(p: &PatternIr) -> KernelManifest {
        KernelManifest {
            entry: "lacuna_fwd".into(),
            summary_entry: "block_minmax".into(),
            pattern: p.name().into(),
            ir_hash: p.content_hash(),
            head_dim: 128,
            dtype: Dtype::Bf16,
            arch: Arch::Sm90a,
            block_q: 128,
            block_k: 64,
            threads: 256,
            shared_bytes: 96 * 1024,
            key_source: KeySource::Scan,
            params: p.inputs().iter().map(|d| KernelParam::Input { name: d.name.clone(), kind: d.kind }).collect(),
            row_index: false,
            head_order: false,
            grid: GridOrder::HeaviestFirst,
            bucket_runs: None,
            summaries_entry: None,
            tensor_maps: false,
            dependent_launch: false,
            list_bitmaps: Vec::new(),
            split_kv: None,
        }
    }

    fn contiguous(name: &str, dtype: ElemType, shape: &[usize], buffer: u64) -> TensorDesc {
        let n = numel(shape).unwrap_or(0);
        TensorDesc {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
            buffer_len: n,
            buffer,
            device: 0,
        }
    }

    #[test]
    fn row_indices_set_the_kernel_lengths_and_are_checked() {
        let src = Problem { batch: 2, heads: 8, kv_heads: 2, q_len: 300, kv_len: 500, head_dim: 64 };
        let qr = contiguous("q_rows", ElemType::I32, &[2, 8, 320], 1);
        let kr = contiguous("kv_rows", ElemType::I32, &[2, 8, 512], 2);
        let p = validate_row_index(0, &qr, &kr, &src).expect("good indices");
        assert_eq!((p.q_len, p.kv_len, p.heads, p.kv_heads), (320, 512, 8, 2));
        // Per key/value head instead of per query head: the shape error says what is needed.
        let bad = contiguous("kv_rows", ElemType::I32, &[2, 2, 512], 2);
        let msg = validate_row_index(0, &qr, &bad, &src).expect_err("per key head").to_string();
        assert!(msg.contains("kv_rows") && msg.contains("(2, 8, Nk')"), "{msg}");
        let bad = contiguous("q_rows", ElemType::F32, &[2, 8, 320], 1);
        let msg = validate_row_index(0, &bad, &kr, &src).expect_err("f32 indices").to_string();
        assert!(msg.contains("q_rows") && msg.contains("i32"), "{msg}");
        let mut strided = contiguous("q_rows", ElemType::I32, &[2, 8, 320], 1);
        strided.strides = vec![8 * 640, 640, 2];
        strided.buffer_len = 2 * 8 * 640;
        assert!(validate_row_index(0, &strided, &kr, &src).is_err());
    }

    struct Fwd {
        m: KernelManifest,
        q: TensorDesc,
        k: TensorDesc,
        v: TensorDesc,
        o: TensorDesc,
        lse: TensorDesc,
    }

    /// B=2, H=8, Hkv=2, Nq=300, Nk=500, D=128, bf16.
    fn fwd() -> Fwd {
        Fwd {
            m: manifest_for(&AllKinds::ir()),
            q: contiguous("q", ElemType::Bf16, &[2, 8, 300, 128], 1),
            k: contiguous("k", ElemType::Bf16, &[2, 2, 500, 128], 2),
            v: contiguous("v", ElemType::Bf16, &[2, 2, 500, 128], 3),
            o: contiguous("o", ElemType::Bf16, &[2, 8, 300, 128], 4),
            lse: contiguous("lse", ElemType::F32, &[2, 8, 300], 5),
        }
    }

    impl Fwd {
        fn run(&self) -> Result<Problem> {
            validate_forward(&self.m, 0, &self.q, &self.k, &self.v, Some((&self.o, &self.lse)))
        }
    }

    fn err(r: Result<Problem>) -> (RuntimeError, String) {
        let e = r.expect_err("validation must refuse this");
        let s = e.to_string();
        (e, s)
    }

    #[test]
    fn a_good_problem_passes_and_is_read_off_q_and_k() {
        let f = fwd();
        let p = f.run().expect("valid");
        assert_eq!(p, Problem { batch: 2, heads: 8, kv_heads: 2, q_len: 300, kv_len: 500, head_dim: 128 });
        assert_eq!(validate_forward(&f.m, 0, &f.q, &f.k, &f.v, None).expect("valid"), p);
    }

    #[test]
    fn wrong_dtype() {
        let mut f = fwd();
        f.k.dtype = ElemType::F16;
        let (e, s) = err(f.run());
        assert!(matches!(e, RuntimeError::Dtype { ref tensor, expected: ElemType::Bf16, got: ElemType::F16, .. } if tensor == "k"));
        assert!(s.contains("k is fp16, but bf16 is needed"), "{s}");
        let mut f = fwd();
        f.lse.dtype = ElemType::Bf16;
        assert!(matches!(f.run(), Err(RuntimeError::Dtype { expected: ElemType::F32, .. })));
        let mut f = fwd();
        f.o.dtype = ElemType::F16;
        assert!(matches!(f.run(), Err(RuntimeError::Dtype { ref tensor, .. }) if tensor == "o"));
    }

    #[test]
    fn wrong_head_dim_names_both_and_says_how_to_fix() {
        let mut f = fwd();
        for t in [&mut f.q, &mut f.o] {
            *t = contiguous(&t.name.clone(), ElemType::Bf16, &[2, 8, 300, 64], t.buffer);
        }
        let (e, s) = err(f.run());
        assert!(matches!(e, RuntimeError::HeadDim { expected: 128, got: 64, .. }));
        assert!(s.starts_with("kernel compiled for head_dim 128, got 64: compile one for 64 with"), "{s}");
    }

    #[test]
    fn not_4d() {
        let mut f = fwd();
        f.q = contiguous("q", ElemType::Bf16, &[16, 300, 128], 1);
        let (e, s) = err(f.run());
        assert!(matches!(e, RuntimeError::Shape { ref tensor, .. } if tensor == "q"));
        assert!(s.contains("4-d (B, H, Nq, D)"), "{s}");
    }

    #[test]
    fn nk_mismatch_between_k_and_v() {
        let mut f = fwd();
        f.v = contiguous("v", ElemType::Bf16, &[2, 2, 499, 128], 3);
        let (e, s) = err(f.run());
        assert!(matches!(e, RuntimeError::Shape { ref tensor, ref got, .. } if tensor == "v" && got[2] == 499));
        assert!(s.contains("shape of k [2, 2, 500, 128]"), "{s}");
    }

    #[test]
    fn batch_mismatch_between_q_and_k() {
        let mut f = fwd();
        f.k = contiguous("k", ElemType::Bf16, &[3, 2, 500, 128], 2);
        f.v = contiguous("v", ElemType::Bf16, &[3, 2, 500, 128], 3);
        let (_, s) = err(f.run());
        assert!(s.contains("batch size must be q's (2)"), "{s}");
    }

    #[test]
    fn heads_not_a_multiple_of_kv_heads() {
        let mut f = fwd();
        f.k = contiguous("k", ElemType::Bf16, &[2, 3, 500, 128], 2);
        f.v = contiguous("v", ElemType::Bf16, &[2, 3, 500, 128], 3);
        let (e, s) = err(f.run());
        assert!(matches!(e, RuntimeError::HeadsNotMultiple { heads: 8, kv_heads: 3 }));
        assert!(s.contains("multiple"), "{s}");
    }

    #[test]
    fn empty_and_too_large_dimensions() {
        let mut f = fwd();
        f.q = contiguous("q", ElemType::Bf16, &[2, 8, 0, 128], 1);
        let (_, s) = err(validate_forward(&f.m, 0, &f.q, &f.k, &f.v, None));
        assert!(s.contains("at least 1"), "{s}");
        // A batch past 65535: too large for a head-major grid (batch is z) ...
        let mut f = fwd();
        f.q = contiguous("q", ElemType::Bf16, &[70_000, 8, 1, 128], 1);
        f.k = contiguous("k", ElemType::Bf16, &[70_000, 2, 1, 128], 2);
        f.v = contiguous("v", ElemType::Bf16, &[70_000, 2, 1, 128], 3);
        f.m.grid = GridOrder::HeadMajor;
        let (e, _) = err(validate_forward(&f.m, 0, &f.q, &f.k, &f.v, None));
        assert!(matches!(e, RuntimeError::TooLarge { value: 70_000, max: 65_535, .. }));
        // ... fine for a heaviest-first one (B·H is x) ...
        f.m.grid = GridOrder::HeaviestFirst;
        validate_forward(&f.m, 0, &f.q, &f.k, &f.v, None).expect("B·H = 560,000 fits the grid");
        // ... too large for a rank-major one (batch is y) ...
        f.m.grid = GridOrder::RankMajor;
        let (e, _) = err(validate_forward(&f.m, 0, &f.q, &f.k, &f.v, None));
        assert!(matches!(e, RuntimeError::TooLarge { value: 70_000, max: 65_535, .. }));
        f.m.grid = GridOrder::HeaviestFirst;
        // ... B·H past 2^31 - 1 is not ...
        f.q = contiguous("q", ElemType::Bf16, &[70_000, 40_000, 1, 128], 1);
        f.k = contiguous("k", ElemType::Bf16, &[70_000, 40_000, 1, 128], 2);
        f.v = contiguous("v", ElemType::Bf16, &[70_000, 40_000, 1, 128], 3);
        let (e, s) = err(validate_forward(&f.m, 0, &f.q, &f.k, &f.v, None));
        assert!(matches!(e, RuntimeError::TooLarge { value: 2_800_000_000, .. }), "{s}");
        // ... nor more than 65535 query blocks (block_q 128 here).
        let mut f = fwd();
        f.q = contiguous("q", ElemType::Bf16, &[1, 8, 65_536 * 128, 128], 1);
        f.k = contiguous("k", ElemType::Bf16, &[1, 2, 1, 128], 2);
        f.v = contiguous("v", ElemType::Bf16, &[1, 2, 1, 128], 3);
        let (e, s) = err(validate_forward(&f.m, 0, &f.q, &f.k, &f.v, None));
        assert!(matches!(e, RuntimeError::TooLarge { value: 65_536, max: 65_535, .. }), "{s}");
        f.m.grid = GridOrder::RankMajor;
        let (e, s) = err(validate_forward(&f.m, 0, &f.q, &f.k, &f.v, None));
        assert!(matches!(e, RuntimeError::TooLarge { value: 65_536, max: 65_535, .. }), "{s}");
        assert!(s.contains("split the queries"), "{s}");
        // Lengths past i32: checked before strides, which would also fail.
        let mut f = fwd();
        f.k = contiguous("k", ElemType::Bf16, &[1, 1, 1 << 31, 128], 2);
        f.v = f.k.clone();
        f.v.name = "v".into();
        f.q = contiguous("q", ElemType::Bf16, &[1, 1, 1, 128], 1);
        let (e, _) = err(validate_forward(&f.m, 0, &f.q, &f.k, &f.v, None));
        assert!(matches!(e, RuntimeError::TooLarge { value, .. } if value == 1 << 31));
    }

    #[test]
    fn bad_strides() {
        // Last dimension not contiguous.
        let mut f = fwd();
        f.q.strides = vec![8 * 300 * 256, 300 * 256, 256, 2];
        f.q.buffer_len = 2 * 8 * 300 * 256;
        let (e, s) = err(f.run());
        assert!(matches!(e, RuntimeError::Layout { ref tensor, .. } if tensor == "q"));
        assert!(s.contains("stride 1"), "{s}");
        // Strides that run past the buffer.
        let mut f = fwd();
        f.k.strides[2] = 129;
        let (_, s) = err(f.run());
        assert!(s.contains("past the end of its buffer"), "{s}");
        // An offset that runs past the buffer.
        let mut f = fwd();
        f.v.offset = 1;
        assert!(matches!(f.run(), Err(RuntimeError::Layout { ref tensor, .. }) if tensor == "v"));
        // A stride that cannot be an i64 kernel parameter (size-1 dim, so in bounds otherwise).
        let mut f = fwd();
        f.q = contiguous("q", ElemType::Bf16, &[2, 1, 300, 128], 1);
        f.q.strides[1] = usize::MAX;
        f.k = contiguous("k", ElemType::Bf16, &[2, 1, 500, 128], 2);
        f.v = contiguous("v", ElemType::Bf16, &[2, 1, 500, 128], 3);
        let (_, s) = err(validate_forward(&f.m, 0, &f.q, &f.k, &f.v, None));
        assert!(s.contains("i64"), "{s}");
        // Wrong number of strides.
        let mut f = fwd();
        f.q.strides.pop();
        let (_, s) = err(f.run());
        assert!(s.contains("4 dimensions but 3 strides"), "{s}");
    }

    #[test]
    fn bnhd_views_are_accepted() {
        // A (B, N, H, D) buffer seen as (B, H, N, D): strides (N*H*D, D, H*D, 1).
        let (b, n, h, d) = (2, 300, 8, 128);
        let mut f = fwd();
        f.q.strides = vec![n * h * d, d, h * d, 1];
        f.o.strides = vec![n * h * d, d, h * d, 1];
        assert!(f.run().is_ok());
        assert_eq!(extent(&f.q.shape, &f.q.strides, 0), Some(b * n * h * d));
    }

    #[test]
    fn overlapping_or_aliased_outputs() {
        let mut f = fwd();
        f.o.strides = vec![0, 300 * 128, 128, 1];
        let (_, s) = err(f.run());
        assert!(s.contains("overlap"), "{s}");
        let mut f = fwd();
        f.o.buffer = f.q.buffer;
        let (e, _) = err(f.run());
        assert!(matches!(e, RuntimeError::Aliased { ref a, ref b } if a == "o" && b == "q"));
        let mut f = fwd();
        f.lse.buffer = f.o.buffer;
        assert!(matches!(f.run(), Err(RuntimeError::Aliased { .. })));
    }

    #[test]
    fn output_shapes() {
        let mut f = fwd();
        f.o = contiguous("o", ElemType::Bf16, &[2, 8, 301, 128], 4);
        assert!(matches!(f.run(), Err(RuntimeError::Shape { ref tensor, .. }) if tensor == "o"));
        let mut f = fwd();
        f.lse = contiguous("lse", ElemType::F32, &[2, 2, 300], 5);
        let (_, s) = err(f.run());
        assert!(s.contains("[2, 8, 300] (B, H, Nq)"), "{s}");
        let mut f = fwd();
        f.lse.strides = vec![300, 2 * 300, 1];
        let (_, s) = err(f.run());
        assert!(s.contains("must be contiguous"), "{s}");
    }

    #[test]
    fn wrong_device() {
        let mut f = fwd();
        f.v.device = 1;
        assert!(matches!(f.run(), Err(RuntimeError::WrongDevice { expected: 0, got: 1, .. })));
    }

    #[test]
    fn layout_helpers() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert!(is_contiguous(&[2, 1, 4], &[4, 999, 1]));
        assert!(!is_contiguous(&[2, 3, 4], &[12, 1, 3]));
        assert!(non_overlapping(&[2, 3, 4], &[12, 1, 3]));
        assert!(!non_overlapping(&[2, 2], &[0, 3]));
        assert!(!non_overlapping(&[4, 4], &[2, 1]));
        assert_eq!(extent(&[2, 0], &[1, 1], 7), Some(0));
        assert_eq!(layout_problem(&[4], &[usize::MAX / 2], 0, 10).map(|s| s.contains("overflow")), Some(true));
    }

    #[test]
    fn scale_defaults_to_inverse_sqrt_d_in_exp2_form() {
        let s = scale_log2(None, 64).expect("finite");
        assert!((s - 0.125 * std::f32::consts::LOG2_E).abs() < 1e-7);
        assert_eq!(scale_log2(Some(2.0), 64).expect("finite"), 2.0 * std::f32::consts::LOG2_E);
        assert!(scale_log2(Some(f32::NAN), 64).is_err());
        for refused in [0.0, -0.125, f32::INFINITY] {
            let e = scale_log2(Some(refused), 64).expect_err("the kernel's folded exponent needs a positive scale");
            assert!(e.to_string().contains("positive"), "{e}");
        }
    }

    // ---- manifest against pattern -------------------------------------------------

    #[test]
    fn length_classes_ascend_and_share_everything_but_tiles() {
        let causal = manifest_for(&Causal::ir());
        let wide = KernelManifest { block_q: 64, block_k: 48, ..causal.clone() };
        assert!(validate_length_classes(&[(4096, &wide, 0), (usize::MAX, &causal, 0)]).is_ok());
        let err = |classes: &[(usize, &KernelManifest, usize)]| validate_length_classes(classes).expect_err("refused").to_string();
        assert!(err(&[]).contains("no kernel"));
        let e = err(&[(4096, &wide, 0), (4096, &causal, 0)]);
        assert!(e.contains("class 1 ends at 4096 keys") && e.contains("ascending"), "{e}");
        let other = manifest_for(&Bucketed::ir());
        let e = err(&[(4096, &wide, 0), (usize::MAX, &other, 0)]);
        assert!(e.contains("`Bucketed`") && e.contains("`Causal`"), "{e}");
        let rows = KernelManifest { row_index: true, ..causal.clone() };
        assert!(err(&[(4096, &wide, 0), (usize::MAX, &rows, 0)]).contains("row_index true"));
        let fp16 = KernelManifest { dtype: Dtype::F16, ..causal.clone() };
        assert!(err(&[(4096, &wide, 0), (usize::MAX, &fp16, 0)]).contains("fp16"));
        assert!(err(&[(4096, &wide, 0), (usize::MAX, &causal, 1)]).contains("GPU 1"));
    }

    #[test]
    fn manifest_matching_its_pattern_passes() {
        let p = AllKinds::ir();
        check_manifest(&manifest_for(&p), &p).expect("same pattern");
    }

    #[test]
    fn manifest_for_another_pattern() {
        let m = manifest_for(&Causal::ir());
        let e = check_manifest(&m, &AllKinds::ir()).expect_err("other pattern");
        assert!(matches!(e, RuntimeError::WrongPattern { ref ptx_pattern, ref pattern } if ptx_pattern == "Causal" && pattern == "AllKinds"));
        assert!(e.to_string().contains("this PTX was compiled for pattern `Causal`"), "{e}");
    }

    #[test]
    fn manifest_hash_mismatch_means_an_older_pattern() {
        let p = AllKinds::ir();
        let mut m = manifest_for(&p);
        m.ir_hash ^= 1;
        let e = check_manifest(&m, &p).expect_err("stale");
        assert!(matches!(e, RuntimeError::StalePattern { .. }));
        let s = e.to_string();
        assert!(s.contains("older version of pattern `AllKinds`") && s.contains("lacuna compile"), "{s}");
    }

    #[test]
    fn manifest_params_must_match_the_inputs() {
        let p = AllKinds::ir();
        let mut m = manifest_for(&p);
        m.params.swap(0, 1);
        let s = check_manifest(&m, &p).expect_err("reordered").to_string();
        assert!(s.contains("input 0 is `k_pos: K<i32>` in the manifest but `q_pos: Q<i32>` in the pattern"), "{s}");
        let mut m = manifest_for(&p);
        m.params.pop();
        let s = check_manifest(&m, &p).expect_err("short").to_string();
        assert!(s.contains("lists 5 inputs, the pattern declares 6"), "{s}");
    }

    #[test]
    fn manifest_roundtrip_through_ptx_then_check() {
        let p = Causal::ir();
        let text = manifest_for(&p).attach_to_ptx(".version 8.0\n.target sm_90a\n");
        let m = KernelManifest::from_ptx(&text).expect("has a manifest");
        check_manifest(&m, &p).expect("matches");
        assert!(KernelManifest::from_ptx(".version 8.0\n").is_err());
    }

    #[test]
    fn insane_manifests_are_refused() {
        let p = Causal::ir();
        let mut m = manifest_for(&p);
        m.block_q = 0;
        assert!(matches!(check_manifest(&m, &p), Err(RuntimeError::BadPtx { .. })));
        let mut m = manifest_for(&p);
        m.threads = 2048;
        assert!(matches!(check_manifest(&m, &p), Err(RuntimeError::BadPtx { .. })));
    }

    // ---- pattern inputs -----------------------------------------------------------------

    fn problem() -> Problem {
        Problem { batch: 2, heads: 8, kv_heads: 2, q_len: 300, kv_len: 500, head_dim: 128 }
    }

    fn good_args() -> Vec<(String, ArgDesc)> {
        vec![
            ("k_pos".into(), ArgDesc::Tensor(contiguous("input `k_pos`", ElemType::I32, &[2, 8, 500], 11))),
            ("q_pos".into(), ArgDesc::Tensor(contiguous("input `q_pos`", ElemType::I32, &[2, 8, 300], 10))),
            ("alpha".into(), ArgDesc::HeadI32(8)),
            ("beta".into(), ArgDesc::HeadF32(8)),
            ("W".into(), ArgDesc::I32),
            ("sel".into(), ArgDesc::BlockList(contiguous("input `sel`", ElemType::I32, &[2, 8, 5, 16], 12))),
        ]
    }

    fn bind(args: &[(String, ArgDesc)]) -> Result<Vec<usize>> {
        let m = manifest_for(&AllKinds::ir());
        validate_inputs("AllKinds", &m.params, args, &problem(), 0)
    }

    fn set(args: &mut [(String, ArgDesc)], name: &str, v: ArgDesc) {
        if let Some(slot) = args.iter_mut().find(|(n, _)| n == name) {
            slot.1 = v;
        }
    }

    #[test]
    fn inputs_are_matched_by_name_into_declaration_order() {
        assert_eq!(bind(&good_args()).expect("all bound"), vec![1, 0, 2, 3, 4, 5]);
    }

    #[test]
    fn missing_input_names_it_and_its_shape() {
        let mut a = good_args();
        a.remove(1);
        let e = bind(&a).expect_err("q_pos missing");
        assert!(matches!(e, RuntimeError::MissingInput { ref name, method: "tensor", .. } if name == "q_pos"));
        let s = e.to_string();
        assert!(s.contains("needs input `q_pos`, an i32 tensor of shape [2, 8, 300] (B, H, Nq)"), "{s}");
        assert!(s.contains("PatternArgs::tensor(\"q_pos\""), "{s}");
    }

    #[test]
    fn unknown_input_lists_the_known_ones() {
        let mut a = good_args();
        a.push(("window".into(), ArgDesc::I32));
        let e = bind(&a).expect_err("unknown");
        let s = e.to_string();
        assert!(matches!(e, RuntimeError::UnknownInput { .. }));
        assert!(s.contains("no input `window`; its inputs are: q_pos, k_pos, alpha, beta, W, sel"), "{s}");
    }

    #[test]
    fn duplicate_input() {
        let mut a = good_args();
        a.push(("W".into(), ArgDesc::I32));
        assert!(matches!(bind(&a), Err(RuntimeError::DuplicateInput { ref name }) if name == "W"));
    }

    #[test]
    fn mistyped_inputs() {
        let mut a = good_args();
        set(&mut a, "W", ArgDesc::F32);
        let s = bind(&a).expect_err("f32 for i32").to_string();
        assert_eq!(s, "input `W` must be an i32 scalar, got an f32 scalar bound with `.f32`");

        let mut a = good_args();
        set(&mut a, "beta", ArgDesc::HeadI32(8));
        assert!(matches!(bind(&a), Err(RuntimeError::InputType { ref name, .. }) if name == "beta"));

        let mut a = good_args();
        set(&mut a, "q_pos", ArgDesc::Tensor(contiguous("input `q_pos`", ElemType::F32, &[2, 8, 300], 10)));
        let s = bind(&a).expect_err("f32 tensor").to_string();
        assert!(s.contains("got a tensor (f32, shape [2, 8, 300])"), "{s}");

        let mut a = good_args();
        set(&mut a, "alpha", ArgDesc::I32);
        assert!(matches!(bind(&a), Err(RuntimeError::InputType { ref name, .. }) if name == "alpha"));

        let mut a = good_args();
        set(&mut a, "sel", ArgDesc::Tensor(contiguous("input `sel`", ElemType::I32, &[2, 8, 5, 16], 12)));
        assert!(matches!(bind(&a), Err(RuntimeError::InputType { ref name, .. }) if name == "sel"));
    }

    #[test]
    fn misshaped_inputs() {
        // A key tensor sized like the queries.
        let mut a = good_args();
        set(&mut a, "k_pos", ArgDesc::Tensor(contiguous("input `k_pos`", ElemType::I32, &[2, 8, 300], 11)));
        let s = bind(&a).expect_err("Nq for Nk").to_string();
        assert_eq!(
            s,
            "input `k_pos` must be an i32 tensor of shape [2, 8, 500] (B, H, Nk), contiguous, \
             got a tensor (i32, shape [2, 8, 300]) bound with `.tensor`"
        );
        // Per-head values for the kv heads instead of the query heads.
        let mut a = good_args();
        set(&mut a, "alpha", ArgDesc::HeadI32(2));
        let s = bind(&a).expect_err("2 heads").to_string();
        assert!(s.contains("must be 8 i32 values"), "{s}");
        // Block list with the wrong number of query blocks (ceil(300/64) = 5).
        let mut a = good_args();
        set(&mut a, "sel", ArgDesc::BlockList(contiguous("input `sel`", ElemType::I32, &[2, 8, 3, 16], 12)));
        let s = bind(&a).expect_err("3 query blocks").to_string();
        assert!(s.contains("[2, 8, 5, W]"), "{s}");
        // Block list with no slots.
        let mut a = good_args();
        set(&mut a, "sel", ArgDesc::BlockList(contiguous("input `sel`", ElemType::I32, &[2, 8, 5, 0], 12)));
        assert!(matches!(bind(&a), Err(RuntimeError::InputShape { .. })));
        // A transposed (non-contiguous) tensor input.
        let mut t = contiguous("input `q_pos`", ElemType::I32, &[2, 8, 300], 10);
        t.strides = vec![2400, 1, 8];
        let mut a = good_args();
        set(&mut a, "q_pos", ArgDesc::Tensor(t));
        let s = bind(&a).expect_err("strided").to_string();
        assert!(s.contains("must be contiguous"), "{s}");
    }

    #[test]
    fn patterns_without_inputs_take_no_arguments() {
        let m = manifest_for(&Causal::ir());
        assert_eq!(validate_inputs("Causal", &m.params, &[], &problem(), 0).expect("none"), Vec::<usize>::new());
        let e = validate_inputs("Causal", &m.params, &[("W".into(), ArgDesc::I32)], &problem(), 0).expect_err("extra");
        assert!(e.to_string().contains("its inputs are: (none)"), "{e}");
    }

    // ---- launch ABI -------------------------------------------------------------------

    #[test]
    fn forward_parameter_list_follows_the_abi() {
        let p = problem();
        let ptrs = ForwardPointers { q: 0x100, k: 0x200, v: 0x300, o: 0x400, lse: 0x500 };
        let qs = [1000, 100, 10, 1];
        let ks = [2000, 200, 20, 1];
        let vs = [3000, 300, 30, 1];
        let os = [4000, 400, 40, 1];
        let inputs = [KernelArg::Ptr(0x600), KernelArg::Ptr(0x700), KernelArg::I32(5)];
        let a = forward_args(ptrs, [&qs, &ks, &vs, &os], &p, 0.5, &inputs);
        use KernelArg::*;
        assert_eq!(
            a,
            vec![
                Ptr(0x100), Ptr(0x200), Ptr(0x300), Ptr(0x400), Ptr(0x500),
                I64(1000), I64(100), I64(10),
                I64(2000), I64(200), I64(20),
                I64(3000), I64(300), I64(30),
                I64(4000), I64(400), I64(40),
                I32(2), I32(8), I32(2), I32(300), I32(500),
                F32(0.5),
                Ptr(0x600), Ptr(0x700), I32(5),
            ]
        );
    }

    #[test]
    fn rows_must_start_on_16_byte_boundaries() {
        // A view one row of 128 bf16 into its buffer is aligned...
        let mut f = fwd();
        f.k.buffer_len += 128;
        f.k.offset = 128;
        f.run().expect("aligned offset");
        // ... one 4 elements (8 bytes) in is not.
        let mut f = fwd();
        f.k.buffer_len += 8;
        f.k.offset = 4;
        let (e, s) = err(f.run());
        assert!(matches!(e, RuntimeError::Layout { ref tensor, .. } if tensor == "k"), "{s}");
        assert!(s.contains("8 bytes into its buffer") && s.contains("multiple of 16 bytes"), "{s}");
        // An n stride of 130 elements (260 bytes): rows of 128 with 2 of padding.
        let mut f = fwd();
        f.q.strides = vec![8 * 300 * 130, 300 * 130, 130, 1];
        f.q.buffer_len = 2 * 8 * 300 * 130;
        let (_, s) = err(f.run());
        assert!(s.contains("dimension 2 (n) is 260 bytes"), "{s}");
        // The output is copied the same way.
        let mut f = fwd();
        f.o.buffer_len += 4;
        f.o.offset = 4;
        assert!(matches!(f.run(), Err(RuntimeError::Layout { ref tensor, .. }) if tensor == "o"));
        // A size-1 dimension's stride never matters.
        let mut f = fwd();
        f.k = contiguous("k", ElemType::Bf16, &[2, 1, 500, 128], 2);
        f.v = contiguous("v", ElemType::Bf16, &[2, 1, 500, 128], 3);
        f.k.strides[1] = 3;
        f.run().expect("size-1 head dimension with an odd stride");
    }

    #[test]
    fn tensor_maps_describe_the_view_innermost_first() {
        // (B, Hkv, Nk, D) = (2, 4, 1000, 64), contiguous bf16.
        let k = contiguous("k", ElemType::Bf16, &[2, 4, 1000, 64], 1);
        let r = tensor_map_request(&k, 48).expect("valid");
        assert_eq!(r.dims, [64, 1000, 4, 2]);
        assert_eq!(r.strides, [128, 128 * 1000, 128 * 1000 * 4]);
        assert_eq!(r.box_dims, [64, 48, 1, 1]);
        // A (B, N, H, D) buffer seen as (B, H, N, D): n steps over the heads.
        let mut t = contiguous("v", ElemType::Bf16, &[2, 4, 1000, 64], 1);
        t.strides = vec![1000 * 4 * 64, 64, 4 * 64, 1];
        let r = tensor_map_request(&t, 64).expect("valid");
        assert_eq!(r.strides, [4 * 128, 128, 1000 * 4 * 128]);
        // Size-1 dimensions get a stride TMA takes (a multiple of 16 bytes),
        // whatever the view says.
        let mut one = contiguous("k", ElemType::Bf16, &[1, 1, 1, 64], 1);
        one.strides = vec![7, 5, 3, 1];
        let r = tensor_map_request(&one, 64).expect("valid");
        assert_eq!(r.dims, [64, 1, 1, 1]);
        assert!(r.strides.iter().all(|s| s % 16 == 0 && *s > 0), "{:?}", r.strides);
        // Strides TMA cannot take are refused with the reason.
        let mut far = contiguous("k", ElemType::Bf16, &[2, 1, 16, 64], 1);
        far.strides[0] = 1 << 40;
        let e = tensor_map_request(&far, 64).expect_err("beyond 2^40 bytes");
        assert!(e.to_string().contains("2^40"), "{e}");
    }

    #[test]
    fn summary_inputs_are_checked() {
        let t = contiguous("values", ElemType::I32, &[2, 3, 100], 1);
        assert_eq!(validate_summary_input(&t, 64, 0).expect("valid"), (2, 3, 100));
        assert!(matches!(validate_summary_input(&t, 0, 0), Err(RuntimeError::InputShape { .. })));
        let f = contiguous("values", ElemType::F32, &[2, 3, 100], 1);
        assert!(matches!(validate_summary_input(&f, 64, 0), Err(RuntimeError::Dtype { .. })));
        let d4 = contiguous("values", ElemType::I32, &[2, 3, 100, 1], 1);
        assert!(matches!(validate_summary_input(&d4, 64, 0), Err(RuntimeError::Shape { .. })));
    }

    #[test]
    fn forward_grid_follows_the_manifests_grid_order() {
        let mut m = manifest_for(&AllKinds::ir());
        m.grid = GridOrder::HeadMajor;
        let (grid, block, smem) = forward_launch(&m, &problem(), 1);
        assert_eq!(grid, (3, 8, 2)); // ceil(300 / 128) = 3 query blocks, 8 heads, batch 2
        m.grid = GridOrder::HeaviestFirst;
        assert_eq!(forward_launch(&m, &problem(), 1).0, (2 * 8, 3, 1));
        m.grid = GridOrder::RankMajor;
        assert_eq!(forward_launch(&m, &problem(), 1).0, (8, 2, 3));
        assert_eq!(block, (256, 1, 1));
        assert_eq!(smem, 96 * 1024);
    }

    #[test]
    fn split_kv_grids_run_the_batch_axis_over_the_splits() {
        let mut m = manifest_for(&AllKinds::ir());
        for (grid, split) in [(GridOrder::HeadMajor, (3, 8, 2 * 5)), (GridOrder::HeaviestFirst, (2 * 5 * 8, 3, 1)), (GridOrder::RankMajor, (8, 2 * 5, 3))] {
            m.grid = grid;
            assert_eq!(forward_launch(&m, &problem(), 5).0, split, "{grid:?}");
            assert_eq!(forward_launch(&m, &problem(), 1).0, forward_launch(&m, &problem(), 0).0, "{grid:?}");
        }
    }

    #[test]
    fn the_combine_runs_a_warp_per_output_row() {
        let sp = SplitKvEntries { entry: "f_split".into(), combine_entry: "f_combine".into(), combine_rows_per_cta: 4, combine_dependent: false };
        let p = problem();
        let rows = (p.batch * p.heads * p.q_len) as u32;
        assert_eq!(combine_launch(&sp, &p), ((rows.div_ceil(4), 1, 1), (128, 1, 1)));
        let eight = SplitKvEntries { combine_rows_per_cta: 8, ..sp };
        assert_eq!(combine_launch(&eight, &p), ((rows.div_ceil(8), 1, 1), (256, 1, 1)));
    }

    #[test]
    fn split_counts_are_checked_against_the_kernel() {
        let mut m = manifest_for(&AllKinds::ir());
        let p = problem();
        assert_eq!(check_kv_splits(&m, &p, 1).expect("1 always works"), 1);
        let err = check_kv_splits(&m, &p, 4).expect_err("no split entry").to_string();
        assert!(err.contains("without a split-KV entry") && err.contains("use 1"), "{err}");
        m.split_kv = Some(lacuna_ir::SplitKvEntries { entry: "f_split".into(), combine_entry: "f_combine".into(), combine_rows_per_cta: 4, combine_dependent: false });
        assert_eq!(check_kv_splits(&m, &p, 4).expect("has the entry"), 4);
        assert!(check_kv_splits(&m, &p, 0).expect_err("zero").to_string().contains("0 splits"));
        assert!(check_kv_splits(&m, &p, MAX_KV_SPLITS + 1).expect_err("too many").to_string().contains("at most"));
        m.grid = GridOrder::RankMajor;
        let big = Problem { batch: 30_000, ..p };
        let err = check_kv_splits(&m, &big, 4).expect_err("past the grid").to_string();
        assert!(err.contains("at most 2 splits"), "{err}");
        m.grid = GridOrder::HeaviestFirst;
        assert_eq!(check_kv_splits(&m, &big, 4).expect("batch folds into x"), 4);
    }

    #[test]
    fn automatic_splits_fill_one_wave_and_no_more() {
        // A grid that fills the GPU is never split.
        assert_eq!(auto_kv_splits(660, 660, 512), 1);
        assert_eq!(auto_kv_splits(5000, 660, 512), 1);
        // Decoding: 64 (b, h) rows of one query block over 32K keys.
        assert_eq!(auto_kv_splits(64, 660, 512), 10);
        // Short key rows cap the split at two blocks each.
        assert_eq!(auto_kv_splits(64, 660, 8), 4);
        assert_eq!(auto_kv_splits(64, 660, 1), 1);
        // One CTA on a big GPU: capped.
        assert_eq!(auto_kv_splits(1, 10_000, 100_000), MAX_KV_SPLITS);
        assert_eq!(auto_kv_splits(0, 660, 512), 1);
    }

    #[test]
    fn block_list_bitmaps_grow_the_launch_with_the_keys() {
        let mut m = manifest_for(&AllKinds::ir());
        m.list_bitmaps = vec![lacuna_ir::ListBitmap { block: 64, rows: 2 }];
        let p = problem();
        // ceil(Nk / 64) bits in words, plus the pad word, per row.
        let words = p.kv_len.div_ceil(64).div_ceil(32) + 1;
        assert_eq!(forward_launch(&m, &p, 1).2 as usize, 96 * 1024 + 4 * 2 * words);
        let longer = Problem { kv_len: 1 << 20, ..p };
        assert_eq!(forward_launch(&m, &longer, 1).2 as usize, 96 * 1024 + 4 * 2 * ((1 << 14) / 32 + 1));
    }

    #[test]
    fn bucket_runs_must_name_the_patterns_tensors() {
        let p = Bucketed::ir();
        let mut m = manifest_for(&p);
        m.bucket_runs = Some(lacuna_ir::BucketRunSummaries {
            entry: "block_minmax_runs".into(),
            query_bucket: "qb".into(),
            key_bucket: "kb".into(),
            inputs: vec!["qp".into(), "kp".into()],
        });
        check_manifest(&m, &p).expect("consistent");
        // Runs take 6 words per block; the buckets themselves keep 2.
        assert_eq!(summary_len(&problem(), "kp", InputKind::KeyTensor, &m), 2 * 8 * 8 * 6);
        assert_eq!(summary_len(&problem(), "kb", InputKind::KeyTensor, &m), 2 * 8 * 8 * 2);
        let mut swapped = m.clone();
        if let Some(r) = swapped.bucket_runs.as_mut() {
            std::mem::swap(&mut r.query_bucket, &mut r.key_bucket);
        }
        let err = check_manifest(&swapped, &p).expect_err("a key tensor as the query bucket").to_string();
        assert!(err.contains("bucket input `kb` is not a query tensor"), "{err}");
        let mut unknown = m;
        if let Some(r) = unknown.bucket_runs.as_mut() {
            r.inputs.push("pos".into());
        }
        let err = check_manifest(&unknown, &p).expect_err("an unknown input").to_string();
        assert!(err.contains("`pos`"), "{err}");
    }

    #[test]
    fn summary_launches_cover_all_rows_in_grid_sized_chunks() {
        let one = summary_launches(16, 500, 64, 2);
        assert_eq!(one, vec![SummaryLaunch { first_row: 0, rows: 16, src_offset: 0, dst_offset: 0, grid: (1, 16, 1) }]);
        assert_eq!(summary_launches(4, 16_384, 32, 2)[0].grid, (32, 4, 1));
        assert_eq!(summary_launches(70_000, 10, 4, 6)[1].dst_offset, 65_535 * 3 * 6);
        assert_eq!(row_chunks(70_000).collect::<Vec<_>>(), vec![(0, 65_535), (65_535, 4_465)]);
        assert_eq!(row_chunks(0).count(), 0);
        let many = summary_launches(150_000, 10, 4, 2);
        assert_eq!(many.len(), 3);
        assert_eq!(many.iter().map(|l| l.rows).sum::<usize>(), 150_000);
        assert!(many.iter().all(|l| l.grid.1 as usize <= MAX_GRID_YZ && l.grid.0 == 1));
        assert_eq!(many[1].first_row, 65_535);
        assert_eq!(many[1].src_offset, 65_535 * 10);
        assert_eq!(many[1].dst_offset, 65_535 * 3 * 2);
        let m = manifest_for(&AllKinds::ir());
        assert_eq!(summary_len(&problem(), "q_pos", InputKind::QueryTensor, &m), 2 * 8 * 3 * 2);
        assert_eq!(summary_len(&problem(), "k_pos", InputKind::KeyTensor, &m), 2 * 8 * 8 * 2);
    }

    #[test]
    fn head_order_must_be_a_permutation_of_the_heads() {
        assert_eq!(validate_head_order("k", &[2, 0, 1], 3).expect("a permutation"), &[2, 0, 1]);
        let msg = |o: &[i32], h| validate_head_order("k", o, h).expect_err("refused").to_string();
        assert!(msg(&[0, 1], 3).contains("2 entries for 3 query heads"), "{}", msg(&[0, 1], 3));
        assert!(msg(&[0, 3, 1], 3).contains("entry 1 is 3"), "{}", msg(&[0, 3, 1], 3));
        assert!(msg(&[0, -1, 1], 3).contains("entry 1 is -1"), "{}", msg(&[0, -1, 1], 3));
        assert!(msg(&[1, 0, 1], 3).contains("head 1 appears twice"), "{}", msg(&[1, 0, 1], 3));
    }

}
