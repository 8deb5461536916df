//! Where the pattern IR becomes LLVM: the element test (exact `eval.rs`
//! semantics per score) and the in-kernel tile classifier (the interval
//! domain of `interval.rs` / `analysis.rs::classify_tile`, evaluated on the
//! GPU from per-block summaries).
//!
//! Every node is evaluated once where its value is fixed: launch-uniform
//! nodes (b, h, scalars) once per CTA, row nodes (q, Q tensors) once per
//! query row, column nodes (k, K tensors) once per key column, and only the
//! rest per element. The classifier may be coarser than the host's (any
//! non-finite float endpoint widens to the full range) but never unsound.

use inkwell::values::PointerValue;
use inkwell::{FloatPredicate as FP, IntPredicate as IP};

use lacuna_ir::summary::RUN_WORDS;
use lacuna_ir::{BinaryOp, BucketJoin, Coord, InputId, InputKind, Node, NodeId, PatternIr, ScalarType, UnaryOp};

use crate::cx::{Cx, BV, FV, IV};
use crate::error::Result;

/// One pattern input as the kernel receives it.
#[derive(Clone, Copy)]
pub(crate) enum InputArg<'ctx> {
    /// `(B, H, N)` values and their `(B, H, nblocks, words)` per-block
    /// summary (`lacuna_ir::summary`: [min, max], then the bucket runs).
    Tensor { values: PointerValue<'ctx>, summary: PointerValue<'ctx>, words: u32 },
    /// `(H,)` values.
    HeadScalar(PointerValue<'ctx>),
    LaunchScalar(BV<'ctx>),
    /// `(B, H, ceil(Nq / block), width)` listed key blocks, -1 = unused,
    /// and where the CTA's rows of it are kept as bitmaps ([`ListBitmap`]).
    BlockList { list: PointerValue<'ctx>, width: IV<'ctx>, block: u32, bitmap: ListBitmap<'ctx> },
}

/// A block list's rows for this CTA's query tile, as bitmaps in shared
/// memory (`lacuna_ir::ListBitmap`): list row `lq` is row `lq % rows`, and
/// bit `j` of its `words` i32 words is set when key list-block `j` is
/// listed. Built once per CTA ([`Predicate::build_list_bitmaps`]), so the
/// classifier and the element test read two shared words where they
/// would otherwise loop over the list's width in global memory.
#[derive(Clone, Copy)]
pub(crate) struct ListBitmap<'ctx> {
    pub base: PointerValue<'ctx>,
    /// Words per row: `lacuna_ir::list_bitmap_words(kv_len, block)`.
    pub words: IV<'ctx>,
    pub rows: u32,
}

/// List rows a query tile of `block_q` rows (starting at a multiple of
/// `block_q`) can overlap with list blocks of `block` queries.
pub(crate) fn list_rows_per_tile(block_q: u32, block: u32) -> u32 {
    let block = block.max(1);
    (0..block).map(|m| (m * block_q + block_q - 1) / block - (m * block_q) / block + 1).max().unwrap_or(1)
}

/// `lacuna_ir::list_bitmap_words` in the kernel: `ceil(ceil(kv_len / block) / 32) + 1`.
pub(crate) fn list_bitmap_words<'ctx>(cx: &Cx<'_, 'ctx>, kv_len: IV<'ctx>, block: u32) -> Result<IV<'ctx>> {
    let blocks = cx.udiv(cx.add(kv_len, cx.i32(block as i32 - 1))?, cx.i32(block as i32))?;
    cx.add(cx.lshr(cx.add(blocks, cx.i32(31))?, cx.i32(5))?, cx.i32(1))
}

/// Launch values the predicate reads besides its inputs.
pub(crate) struct PredEnv<'ctx> {
    pub b: IV<'ctx>,
    pub h: IV<'ctx>,
    /// `b * heads + h` as i64: the row of every `(B, H, ...)` input.
    pub bh: IV<'ctx>,
    pub q_len: IV<'ctx>,
    pub kv_len: IV<'ctx>,
    /// Query blocks and key blocks of the kernel's tiling (summary row lengths).
    pub q_blocks: IV<'ctx>,
    pub k_blocks: IV<'ctx>,
    pub inputs: Vec<InputArg<'ctx>>,
}

/// A value of the predicate language, in registers.
#[derive(Clone, Copy)]
pub(crate) enum Val<'ctx> {
    I(IV<'ctx>),
    F(FV<'ctx>),
    B(IV<'ctx>),
}

impl<'ctx> Val<'ctx> {
    fn i(self) -> IV<'ctx> {
        match self {
            Val::I(v) | Val::B(v) => v,
            Val::F(_) => unreachable!("verified types: expected an integer"),
        }
    }
}

/// What a node's value depends on besides launch-uniform values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dep {
    row: bool,
    col: bool,
}

impl Dep {
    const UNIFORM: Dep = Dep { row: false, col: false };
    fn join(self, o: Dep) -> Dep {
        Dep { row: self.row || o.row, col: self.col || o.col }
    }
}

/// A tile's rows (or keys) `[lo, hi]`, clipped to the length, and its block index.
#[derive(Clone, Copy)]
pub(crate) struct TileRange<'ctx> {
    pub lo: IV<'ctx>,
    pub hi: IV<'ctx>,
    pub block: IV<'ctx>,
}

/// What the mask can be over a tile: `may_true` false ⇒ Empty, `undecided`
/// 0 ⇒ Full, else Partial.
#[derive(Clone, Copy)]
pub(crate) struct TileClass<'ctx> {
    pub may_true: IV<'ctx>,
    /// i32: bit i set when conjunct i (see [`Predicate::conjunct_count`]) may
    /// be false on the tile; 0 exactly when the whole predicate cannot be.
    /// The element test evaluates only the conjuncts set here.
    pub undecided: IV<'ctx>,
}

/// Where one row's (or key's) tensor-input values were staged in shared
/// memory: input i is the i32 word `word[i]` after `pad` (None: not staged).
pub(crate) struct Staged<'a, 'ctx> {
    pub pad: PointerValue<'ctx>,
    pub word: &'a [Option<usize>],
}

/// Values of the row-dependent nodes for one query row.
pub(crate) struct RowVals<'ctx> {
    vals: Vec<Option<Val<'ctx>>>,
    /// Per input: for block lists, the bitmask of listed key list-blocks of this tile.
    list_mask: Vec<Option<IV<'ctx>>>,
}

/// Values of the column-dependent nodes for one key column.
pub(crate) struct ColVals<'ctx> {
    vals: Vec<Option<Val<'ctx>>>,
    /// Per input: for block lists, the bit of this key's list-block in the row mask.
    list_bit: Vec<Option<IV<'ctx>>>,
}

pub(crate) struct Predicate<'p, 'ctx> {
    p: &'p PatternIr,
    /// The operands of the root's top-level `and`s (the root itself when it
    /// is no `and`, or has more than [`MAX_CONJUNCTS`] of them).
    conjuncts: Vec<NodeId>,
    /// The bucket join the classifier splits on, if the pattern has one.
    join: Option<BucketJoin>,
    dep: Vec<Dep>,
    /// Exact values of the launch-uniform nodes (computed once, in the entry block).
    uniform: Vec<Option<Val<'ctx>>>,
    env: PredEnv<'ctx>,
    /// Replaces `env.bh` while set (see [`Predicate::with_bh`]).
    bh_override: std::cell::Cell<Option<IV<'ctx>>>,
}

impl<'p, 'ctx> Predicate<'p, 'ctx> {
    /// Computes every launch-uniform node at the builder's position. With
    /// `split_conjuncts` the classifier reports the root's top-level `and`s
    /// separately ([`TileClass::undecided`]); without, the root is one conjunct.
    pub fn new(cx: &Cx<'_, 'ctx>, p: &'p PatternIr, env: PredEnv<'ctx>, split_conjuncts: bool) -> Result<Self> {
        let mut dep = Vec::with_capacity(p.nodes().len());
        for (_, node) in p.nodes() {
            let d = match *node {
                Node::Coord(Coord::Q) => Dep { row: true, col: false },
                Node::Coord(Coord::K) => Dep { row: false, col: true },
                Node::Coord(_) | Node::ConstI32(_) | Node::ConstF32(_) | Node::ConstBool(_) => Dep::UNIFORM,
                Node::Input(id) => match p.input(id).kind {
                    InputKind::QueryTensor => Dep { row: true, col: false },
                    InputKind::KeyTensor => Dep { row: false, col: true },
                    InputKind::HeadScalar(_) | InputKind::LaunchScalar(_) => Dep::UNIFORM,
                    InputKind::BlockList { .. } => Dep { row: true, col: true },
                },
                Node::Unary(_, a) | Node::Cast(_, a) => dep[a.index()],
                Node::Binary(_, a, b) => dep[a.index()].join(dep[b.index()]),
                Node::Select(c, a, b) => dep[c.index()].join(dep[a.index()]).join(dep[b.index()]),
            };
            dep.push(d);
        }
        let conjuncts = if split_conjuncts { conjuncts(p) } else { vec![p.root()] };
        let join = BucketJoin::find(p);
        let mut this = Self { p, conjuncts, join, dep, uniform: Vec::new(), env, bh_override: std::cell::Cell::new(None) };
        let mut uniform: Vec<Option<Val<'ctx>>> = Vec::with_capacity(this.dep.len());
        for (id, node) in p.nodes() {
            let v = if this.dep[id.index()] == Dep::UNIFORM {
                Some(match *node {
                    Node::Coord(Coord::B) => Val::I(this.env.b),
                    Node::Coord(Coord::H) => Val::I(this.env.h),
                    Node::Input(input) => this.scalar_input(cx, input.index(), p.ty(id))?,
                    _ => this.op(cx, node, &|n: NodeId| uniform[n.index()].expect("operand is uniform"))?,
                })
            } else {
                None
            };
            uniform.push(v);
        }
        this.uniform = uniform;
        Ok(this)
    }

    /// `b * heads + h` (i64): the entry's value, or the one `with_bh` set.
    fn bh(&self) -> IV<'ctx> {
        self.bh_override.get().unwrap_or(self.env.bh)
    }

    /// Runs `f` with `bh` standing for `b * heads + h`: code in a rarely taken
    /// path can recompute it instead of keeping the entry's value (and every
    /// address derived from it) alive across the key-block loop.
    pub fn with_bh<T>(&self, bh: IV<'ctx>, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let old = self.bh_override.replace(Some(bh));
        let out = f();
        self.bh_override.set(old);
        out
    }

    /// The i32 value of a launch-uniform node (closed-form key-range terms).
    pub fn uniform_i32(&self, id: NodeId) -> Option<IV<'ctx>> {
        match self.uniform.get(id.index()).copied().flatten() {
            Some(Val::I(v)) => Some(v),
            _ => None,
        }
    }

    /// Whether the predicate reads a block list (a row mask word per row and
    /// a bit per column in its element test).
    pub fn reads_block_lists(&self) -> bool {
        self.block_lists().next().is_some()
    }

    /// The block-list inputs: (input index, list, width, list block size, bitmap).
    fn block_lists(&self) -> impl Iterator<Item = (usize, PointerValue<'ctx>, IV<'ctx>, u32, ListBitmap<'ctx>)> + '_ {
        self.env.inputs.iter().enumerate().filter_map(|(i, a)| match *a {
            InputArg::BlockList { list, width, block, bitmap } => Some((i, list, width, block, bitmap)),
            _ => None,
        })
    }

    /// Fills every block list's bitmaps with the rows that query rows
    /// `q0..=q1` (clipped to `q_len`) read: zero them, a barrier, each
    /// thread ORs in some list entries, a barrier. Every thread of the CTA
    /// calls it once, before the first tile is classified.
    pub fn build_list_bitmaps(&self, cx: &Cx<'_, 'ctx>, tid: IV<'ctx>, threads: u32, q0: IV<'ctx>, q1: IV<'ctx>) -> Result<()> {
        let lists: Vec<_> = self.block_lists().collect();
        if lists.is_empty() {
            return Ok(());
        }
        let step = cx.i32(threads as i32);
        for &(_, _, _, _, bm) in &lists {
            let n = cx.mul(bm.words, cx.i32(bm.rows as i32))?;
            cx.for_range_step(tid, n, step, "bitmap.zero", |cx, w| cx.store(cx.gep(cx.i32t(), bm.base, w)?, cx.i32(0)))?;
        }
        cx.barrier()?;
        for &(_, list, width, block, bm) in &lists {
            let lb = cx.i32(block as i32);
            let n_lq = cx.udiv(cx.add(self.env.q_len, cx.i32(block as i32 - 1))?, lb)?;
            let lq0 = cx.udiv(q0, lb)?;
            let rows = cx.add(cx.sub(cx.udiv(cx.smin(q1, cx.sub(self.env.q_len, cx.i32(1))?)?, lb)?, lq0)?, cx.i32(1))?;
            let n_lk = cx.udiv(cx.add(self.env.kv_len, cx.i32(block as i32 - 1))?, lb)?;
            let entries = cx.mul(rows, width)?;
            cx.for_range_step(tid, entries, step, "bitmap.set", |cx, i| {
                let r = cx.udiv(i, width)?;
                let lq = cx.add(lq0, r)?;
                let at = cx.add(cx.mul(cx.add(cx.mul(self.bh(), cx.sext64(n_lq)?)?, cx.sext64(lq)?)?, cx.sext64(width)?)?, cx.sext64(cx.sub(i, cx.mul(r, width)?)?)?)?;
                let entry = cx.load_i32(cx.gep(cx.i32t(), list, at)?)?;
                // Unused slots (-1) and blocks past the keys set nothing.
                let listed = cx.and(cx.icmp(IP::SGE, entry, cx.i32(0))?, cx.icmp(IP::SLT, entry, n_lk)?)?;
                cx.if_then(listed, "bitmap.or", |cx| {
                    let row = cx.urem(lq, cx.i32(bm.rows as i32))?;
                    let word = cx.add(cx.mul(row, bm.words)?, cx.lshr(entry, cx.i32(5))?)?;
                    let bit = cx.shl(cx.i32(1), cx.and(entry, cx.i32(31))?)?;
                    cx.atomic_or(cx.gep(cx.i32t(), bm.base, word)?, bit)
                })
            })?;
        }
        cx.barrier()
    }

    fn scalar_input(&self, cx: &Cx<'_, 'ctx>, input: usize, ty: ScalarType) -> Result<Val<'ctx>> {
        let raw = match self.env.inputs[input] {
            InputArg::HeadScalar(ptr) => {
                let elem: inkwell::types::BasicTypeEnum = if ty == ScalarType::F32 { cx.f32t().into() } else { cx.i32t().into() };
                let at = cx.gep(elem, ptr, self.env.h)?;
                cx.load(elem, at)?
            }
            InputArg::LaunchScalar(v) => v,
            _ => unreachable!("only scalars are launch-uniform"),
        };
        Ok(match ty {
            ScalarType::F32 => Val::F(raw.into_float_value()),
            ScalarType::I32 => Val::I(raw.into_int_value()),
            // A bool scalar arrives as an i32; non-zero is true.
            ScalarType::Bool => Val::B(cx.icmp(IP::NE, raw.into_int_value(), cx.i32(0))?),
        })
    }

    // ------------------------------------------------------------------
    // Element semantics (eval.rs): one op on exact values.
    // ------------------------------------------------------------------

    /// Applies a non-leaf node to exact operand values.
    fn op(&self, cx: &Cx<'_, 'ctx>, node: &Node, get: &dyn Fn(NodeId) -> Val<'ctx>) -> Result<Val<'ctx>> {
        Ok(match *node {
            Node::ConstI32(v) => Val::I(cx.i32(v)),
            Node::ConstF32(v) => Val::F(cx.f32(v)),
            Node::ConstBool(v) => Val::B(cx.bool(v)),
            Node::Unary(op, a) => elem_unary(cx, op, get(a))?,
            Node::Binary(op, a, b) => elem_binary(cx, op, get(a), get(b))?,
            Node::Cast(to, a) => elem_cast(cx, to, get(a))?,
            Node::Select(c, a, b) => {
                let (x, y) = (get(a), get(b));
                let c = get(c).i();
                match (x, y) {
                    (Val::F(x), Val::F(y)) => Val::F(cx.select_f32(c, x, y)?),
                    (Val::B(x), Val::B(y)) => Val::B(cx.select_int(c, x, y)?),
                    (x, y) => Val::I(cx.select_int(c, x.i(), y.i())?),
                }
            }
            Node::Coord(_) | Node::Input(_) => unreachable!("leaves are handled by the caller"),
        })
    }

    /// The tensor inputs of `kind` (query or key tensors), in input order:
    /// (input index, this (b, h)'s row of values). `bh` replaces the entry's
    /// `b * heads + h` (a value recomputed where it is used).
    pub fn tensor_rows(&self, cx: &Cx<'_, 'ctx>, kind: InputKind, bh: Option<IV<'ctx>>) -> Result<Vec<(usize, PointerValue<'ctx>)>> {
        let bh = bh.unwrap_or(self.bh());
        let mut out = Vec::new();
        for (i, d) in self.p.inputs().iter().enumerate() {
            if d.kind != kind {
                continue;
            }
            let InputArg::Tensor { values, .. } = self.env.inputs[i] else { unreachable!("a tensor input") };
            let len = if kind == InputKind::QueryTensor { self.env.q_len } else { self.env.kv_len };
            out.push((i, cx.gep(cx.i32t(), values, cx.mul(bh, cx.sext64(len)?)?)?));
        }
        Ok(out)
    }

    /// A tensor value: from its staged word when there is one, else from global memory.
    fn staged_or_global(&self, cx: &Cx<'_, 'ctx>, staged: Option<&Staged<'_, 'ctx>>, input: usize, idx: IV<'ctx>, len: IV<'ctx>) -> Result<IV<'ctx>> {
        if let Some(st) = staged {
            if let Some(w) = st.word.get(input).copied().flatten() {
                return cx.load_i32(cx.byte_gep(st.pad, cx.i32(4 * w as i32))?);
            }
        }
        self.tensor_value(cx, input, idx, len)
    }

    /// The nodes that depend on one side only (`Coord::Q`: the query row,
    /// `Coord::K`: the key column) at position `pos` (`clamped` for reading
    /// inputs, whose length is `len`); uniform nodes are shared, the rest None.
    fn one_side(
        &self,
        cx: &Cx<'_, 'ctx>,
        side: Coord,
        pos: IV<'ctx>,
        clamped: IV<'ctx>,
        len: IV<'ctx>,
        staged: Option<&Staged<'_, 'ctx>>,
    ) -> Result<Vec<Option<Val<'ctx>>>> {
        let want = |d: Dep| if side == Coord::Q { d.row && !d.col } else { d.col && !d.row };
        let mut vals: Vec<Option<Val<'ctx>>> = Vec::with_capacity(self.dep.len());
        for (id, node) in self.p.nodes() {
            let d = self.dep[id.index()];
            let v = if d == Dep::UNIFORM {
                self.uniform[id.index()]
            } else if want(d) {
                Some(match *node {
                    Node::Coord(c) if c == side => Val::I(pos),
                    Node::Input(input) => Val::I(self.staged_or_global(cx, staged, input.index(), clamped, len)?),
                    _ => self.op(cx, node, &|n: NodeId| vals[n.index()].expect("one-side operand"))?,
                })
            } else {
                None
            };
            vals.push(v);
        }
        Ok(vals)
    }

    /// Row-dependent nodes for query row `q` of a tile whose keys are `k`.
    pub fn row_side(&self, cx: &Cx<'_, 'ctx>, q: IV<'ctx>, k: &TileRange<'ctx>, staged: Option<&Staged<'_, 'ctx>>) -> Result<RowVals<'ctx>> {
        let q_clamped = cx.smin(q, cx.sub(self.env.q_len, cx.i32(1))?)?;
        let vals = self.one_side(cx, Coord::Q, q, q_clamped, self.env.q_len, staged)?;
        let mut list_mask = vec![None; self.env.inputs.len()];
        for (i, _, _, block, bitmap) in self.block_lists() {
            let lq = cx.udiv(q_clamped, cx.i32(block as i32))?;
            let (lk0, nk) = list_key_span(cx, k, block)?;
            list_mask[i] = Some(list_row_mask(cx, bitmap, lq, lk0, nk)?);
        }
        Ok(RowVals { vals, list_mask })
    }

    /// Column-dependent nodes for key `k` of the tile `tile`.
    pub fn col_side(&self, cx: &Cx<'_, 'ctx>, k: IV<'ctx>, tile: &TileRange<'ctx>, staged: Option<&Staged<'_, 'ctx>>) -> Result<ColVals<'ctx>> {
        let k_clamped = cx.smin(k, cx.sub(self.env.kv_len, cx.i32(1))?)?;
        let vals = self.one_side(cx, Coord::K, k, k_clamped, self.env.kv_len, staged)?;
        let mut list_bit = vec![None; self.env.inputs.len()];
        for (i, _, _, block, _) in self.block_lists() {
            let (lk0, _) = list_key_span(cx, tile, block)?;
            let lk = cx.udiv(k, cx.i32(block as i32))?;
            list_bit[i] = Some(cx.sub(lk, lk0)?);
        }
        Ok(ColVals { vals, list_bit })
    }

    /// How many conjuncts the tile classifier reports on separately
    /// ([`TileClass::undecided`]); 1 when the predicate is not split.
    pub fn conjunct_count(&self) -> usize {
        self.conjuncts.len()
    }

    /// The mask at one element (i1), from its row and column values: the
    /// whole predicate, or only conjunct `i` when `conjunct` is `Some(i)`
    /// (exact where the tile's other conjuncts are all true; the nodes only
    /// the others need are dead code LLVM drops).
    pub fn element(&self, cx: &Cx<'_, 'ctx>, row: &RowVals<'ctx>, col: &ColVals<'ctx>, conjunct: Option<usize>) -> Result<IV<'ctx>> {
        let mut vals: Vec<Option<Val<'ctx>>> = Vec::with_capacity(self.dep.len());
        for (id, node) in self.p.nodes() {
            let d = self.dep[id.index()];
            let v = match (d.row, d.col) {
                (false, false) => self.uniform[id.index()],
                (true, false) => row.vals[id.index()],
                (false, true) => col.vals[id.index()],
                (true, true) => Some(match *node {
                    Node::Input(input) => {
                        let (mask, bit) = (row.list_mask[input.index()], col.list_bit[input.index()]);
                        let (Some(mask), Some(bit)) = (mask, bit) else { unreachable!("block lists have row masks") };
                        let shifted = cx.lshr(mask, bit)?;
                        let one = cx.and(shifted, cx.i32(1))?;
                        Val::B(cx.icmp(IP::NE, one, cx.i32(0))?)
                    }
                    Node::Binary(BinaryOp::And, a, b) => {
                        let get = |n: NodeId| vals[n.index()].expect("element operand");
                        match self.int_compare_operand(b, &vals).map(|c| (c, a)).or_else(|| self.int_compare_operand(a, &vals).map(|c| (c, b))) {
                            // `other && (x CMP y)` as one compare with a predicate input:
                            // per score an ISETP, an ISETP.AND and one select where ptxas
                            // made two compares and two selects of the `and` (hash's
                            // element test on bucket-edge tiles, perf log v5.0).
                            Some(((cmp, x, y), other)) => Val::B(cx.setp_and_s32(cmp, x, y, get(other).i())?),
                            None => self.op(cx, node, &get)?,
                        }
                    }
                    _ => self.op(cx, node, &|n: NodeId| vals[n.index()].expect("element operand"))?,
                }),
            };
            vals.push(v);
        }
        let at = conjunct.map_or(self.p.root(), |i| self.conjuncts[i]);
        Ok(vals[at.index()].expect("evaluated").i())
    }

    /// Node `n` as a signed i32 comparison (PTX name, operands) when it is
    /// one whose operands have values here.
    fn int_compare_operand(&self, n: NodeId, vals: &[Option<Val<'ctx>>]) -> Option<(&'static str, IV<'ctx>, IV<'ctx>)> {
        let Node::Binary(op, x, y) = *self.p.node(n) else { return None };
        let cmp = match op {
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            _ => return None,
        };
        match (vals[x.index()]?, vals[y.index()]?) {
            (Val::I(x), Val::I(y)) => Some((cmp, x, y)),
            _ => None,
        }
    }

    /// `values[b, h, idx]` of a tensor input (idx already clamped into range).
    fn tensor_value(&self, cx: &Cx<'_, 'ctx>, input: usize, idx: IV<'ctx>, len: IV<'ctx>) -> Result<IV<'ctx>> {
        let InputArg::Tensor { values, .. } = self.env.inputs[input] else { unreachable!("a tensor input") };
        let row = cx.mul(self.bh(), cx.sext64(len)?)?;
        let at = cx.add(row, cx.sext64(idx)?)?;
        cx.load_i32(cx.gep(cx.i32t(), values, at)?)
    }

    // ------------------------------------------------------------------
    // The tile classifier: interval evaluation (interval.rs) on the GPU.
    // ------------------------------------------------------------------

    /// Classifies the tile (query rows `q`, keys `k`); block indices select the summaries.
    pub fn classify(&self, cx: &Cx<'_, 'ctx>, q: &TileRange<'ctx>, k: &TileRange<'ctx>) -> Result<TileClass<'ctx>> {
        // Every tensor input's summary words for its block, and every block
        // list's value over the tile, read once: a bucket join evaluates the
        // predicate again per shared bucket.
        let mut summaries: Vec<Option<Vec<IV<'ctx>>>> = Vec::with_capacity(self.env.inputs.len());
        let mut lists: Vec<Option<Abs<'ctx>>> = Vec::with_capacity(self.env.inputs.len());
        for (i, arg) in self.env.inputs.iter().enumerate() {
            let (mut words, mut list) = (None, None);
            match *arg {
                InputArg::Tensor { summary, words: n, .. } => {
                    let is_q = self.p.input(InputId(i as u32)).kind == InputKind::QueryTensor;
                    let (tile, blocks) = if is_q { (q, self.env.q_blocks) } else { (k, self.env.k_blocks) };
                    let rowb = cx.mul(self.bh(), cx.sext64(blocks)?)?;
                    let at = cx.mul(cx.add(rowb, cx.sext64(tile.block)?)?, cx.i64(n as i64))?;
                    let read = |w: i64| -> Result<IV<'ctx>> { cx.load_i32(cx.gep(cx.i32t(), summary, cx.add(at, cx.i64(w))?)?) };
                    words = Some((0..n as i64).map(read).collect::<Result<Vec<_>>>()?);
                }
                InputArg::BlockList { block, bitmap, .. } => list = Some(list_tile(cx, bitmap, block, q, k)?),
                InputArg::HeadScalar(_) | InputArg::LaunchScalar(_) => {}
            }
            summaries.push(words);
            lists.push(list);
        }
        let range = |i: usize| -> (IV<'ctx>, IV<'ctx>) {
            let w = summaries[i].as_ref().expect("a tensor input");
            (w[0], w[1])
        };
        let vals = self.eval_tile(cx, q, k, &lists, &|i| Ok(range(i)))?;
        let (mut may_true, f) = vals[self.p.root().index()].tri(cx)?;
        // The root is the conjuncts' three-valued AND, so it may be false
        // exactly when some conjunct may be; the fallback to every bit only
        // guards that invariant (every bit set: the whole predicate runs).
        let all = cx.i32((1 << self.conjuncts.len()) - 1);
        let mut mask = cx.i32(0);
        for (i, c) in self.conjuncts.iter().enumerate() {
            let (_, fc) = vals[c.index()].tri(cx)?;
            mask = cx.or(mask, cx.shl(cx.zext(fc, cx.i32t())?, cx.i32(i as i32))?)?;
        }
        let mask = cx.select_int(cx.icmp(IP::EQ, mask, cx.i32(0))?, all, mask)?;
        let undecided = cx.select_int(f, mask, cx.i32(0))?;

        // A bucket join (`lacuna_ir::summary`, `analysis.rs::bucket_may_meet`):
        // split on the bucket the query and the key share. The smallest and
        // largest buckets both blocks hold are evaluated with the other
        // tensors' run ranges; a bucket strictly between them keeps the tile.
        if let Some(join) = self.join {
            let (qb, kb) = (range(join.query.index()), range(join.key.index()));
            let lo = cx.smax(qb.0, kb.0)?;
            let hi = cx.smin(qb.1, kb.1)?;
            let gap = cx.sub(cx.sext64(hi)?, cx.sext64(lo)?)?;
            let mut meet = cx.icmp(IP::SGE, gap, cx.i64(2))?;
            for bucket in [lo, hi] {
                let in_bucket = |i: usize| -> Result<(IV<'ctx>, IV<'ctx>)> {
                    let id = InputId(i as u32);
                    if id == join.query || id == join.key {
                        return Ok((bucket, bucket));
                    }
                    let w = summaries[i].as_ref().expect("a tensor input");
                    if w.len() < RUN_WORDS {
                        return Ok((w[0], w[1]));
                    }
                    // This side's buckets: the run at its smallest, at its largest, else the block.
                    let side = range(join.bucket_of(self.p, id).index());
                    let (at_first, at_last) = (cx.icmp(IP::EQ, bucket, side.0)?, cx.icmp(IP::EQ, bucket, side.1)?);
                    let pick = |first: IV<'ctx>, last: IV<'ctx>, block: IV<'ctx>| -> Result<IV<'ctx>> {
                        cx.select_int(at_first, first, cx.select_int(at_last, last, block)?)
                    };
                    Ok((pick(w[2], w[4], w[0])?, pick(w[3], w[5], w[1])?))
                };
                let vals = self.eval_tile(cx, q, k, &lists, &in_bucket)?;
                meet = cx.or(meet, vals[self.p.root().index()].tri(cx)?.0)?;
            }
            may_true = cx.and(may_true, meet)?;
        }
        Ok(TileClass { may_true, undecided })
    }

    /// Every node's abstract value over the tile, tensor input `i` ranging
    /// over `tensor(i)` (in i32) and block lists taking their `lists` value.
    fn eval_tile(
        &self,
        cx: &Cx<'_, 'ctx>,
        q: &TileRange<'ctx>,
        k: &TileRange<'ctx>,
        lists: &[Option<Abs<'ctx>>],
        tensor: &dyn Fn(usize) -> Result<(IV<'ctx>, IV<'ctx>)>,
    ) -> Result<Vec<Abs<'ctx>>> {
        let mut vals: Vec<Abs<'ctx>> = Vec::with_capacity(self.dep.len());
        for (id, node) in self.p.nodes() {
            let v = if let Some(u) = self.uniform[id.index()] {
                Abs::Point(u)
            } else {
                match *node {
                    Node::Coord(Coord::Q) => Abs::int_range(cx, q.lo, q.hi)?,
                    Node::Coord(Coord::K) => Abs::int_range(cx, k.lo, k.hi)?,
                    Node::Input(input) => match self.env.inputs[input.index()] {
                        InputArg::Tensor { .. } => {
                            let (lo, hi) = tensor(input.index())?;
                            Abs::int_range(cx, lo, hi)?
                        }
                        InputArg::BlockList { .. } => lists[input.index()].expect("read above"),
                        _ => unreachable!("scalars are uniform"),
                    },
                    Node::Unary(op, a) => abs_unary(cx, op, vals[a.index()])?,
                    Node::Binary(op, a, b) => abs_binary(cx, op, vals[a.index()], vals[b.index()])?,
                    Node::Cast(to, a) => abs_cast(cx, to, vals[a.index()])?,
                    Node::Select(c, a, b) => abs_select(cx, vals[c.index()], vals[a.index()], vals[b.index()])?,
                    Node::Coord(_) | Node::ConstI32(_) | Node::ConstF32(_) | Node::ConstBool(_) => {
                        unreachable!("uniform nodes are points")
                    }
                }
            };
            vals.push(v);
        }
        Ok(vals)
    }
}

/// Bit `j` set when key list-block `lk0 + j` (j < nk) is listed for query
/// list-block `lq`: two shared words of its bitmap row, shifted.
fn list_row_mask<'ctx>(cx: &Cx<'_, 'ctx>, bm: ListBitmap<'ctx>, lq: IV<'ctx>, lk0: IV<'ctx>, nk: IV<'ctx>) -> Result<IV<'ctx>> {
    let row = cx.urem(lq, cx.i32(bm.rows as i32))?;
    let word = cx.add(cx.mul(row, bm.words)?, cx.lshr(lk0, cx.i32(5))?)?;
    let lo = cx.load_i32(cx.gep(cx.i32t(), bm.base, word)?)?;
    // The row's last word is a zero pad, so this read stays in the row.
    let hi = cx.load_i32(cx.gep(cx.i32t(), bm.base, cx.add(word, cx.i32(1))?)?)?;
    let pair = cx.or(cx.zext(lo, cx.i64t())?, cx.shl(cx.zext(hi, cx.i64t())?, cx.i64(32))?)?;
    let bits = cx.trunc(cx.lshr(pair, cx.zext(cx.and(lk0, cx.i32(31))?, cx.i64t())?)?, cx.i32t())?;
    cx.and(bits, cx.sub(cx.shl(cx.i32(1), nk)?, cx.i32(1))?)
}

/// `sel[q, k]` over a tile: True when every (list q-block, list k-block)
/// pair under it is listed, False when none is, else Unknown. The tile's
/// list rows are at most `bm.rows`, so the walk over them is unrolled.
fn list_tile<'ctx>(cx: &Cx<'_, 'ctx>, bm: ListBitmap<'ctx>, block: u32, q: &TileRange<'ctx>, k: &TileRange<'ctx>) -> Result<Abs<'ctx>> {
    let lb = cx.i32(block as i32);
    let (lq0, lq1) = (cx.udiv(q.lo, lb)?, cx.udiv(q.hi, lb)?);
    let (lk0, nk) = list_key_span(cx, k, block)?;
    let all_bits = cx.sub(cx.shl(cx.i32(1), nk)?, cx.i32(1))?;
    let (mut any, mut all) = (cx.bool(false), cx.bool(true));
    for r in 0..bm.rows {
        let lq = cx.add(lq0, cx.i32(r as i32))?;
        let mask = list_row_mask(cx, bm, lq, lk0, nk)?;
        let inside = cx.icmp(IP::ULE, lq, lq1)?;
        any = cx.or(any, cx.and(inside, cx.icmp(IP::NE, mask, cx.i32(0))?)?)?;
        all = cx.and(all, cx.or(cx.not(inside)?, cx.icmp(IP::EQ, mask, all_bits)?)?)?;
    }
    // True: (1, 0); False: (0, 1); Unknown: (1, 1).
    Ok(Abs::Tri { t: any, f: cx.not(all)? })
}

/// Conjuncts the classifier reports on separately, at most: each adds an
/// element-test variant to the kernel and a bit to each key-list entry.
pub(crate) const MAX_CONJUNCTS: usize = 4;

/// The operands of `p`'s top-level `and`s, or the root alone when there are
/// more than [`MAX_CONJUNCTS`].
fn conjuncts(p: &PatternIr) -> Vec<NodeId> {
    let out = p.conjuncts();
    if out.len() > MAX_CONJUNCTS {
        return vec![p.root()];
    }
    out
}

/// The key list-blocks a key tile touches: first one and how many (≤ 17 < 32 bits).
fn list_key_span<'ctx>(cx: &Cx<'_, 'ctx>, k: &TileRange<'ctx>, block: u32) -> Result<(IV<'ctx>, IV<'ctx>)> {
    let lb = cx.i32(block as i32);
    let lk0 = cx.udiv(k.lo, lb)?;
    let lk1 = cx.udiv(k.hi, lb)?;
    Ok((lk0, cx.add(cx.sub(lk1, lk0)?, cx.i32(1))?))
}

// ----------------------------------------------------------------------
// Exact element operations (eval.rs).
// ----------------------------------------------------------------------

fn elem_unary<'ctx>(cx: &Cx<'_, 'ctx>, op: UnaryOp, a: Val<'ctx>) -> Result<Val<'ctx>> {
    Ok(match (op, a) {
        (UnaryOp::Not, Val::B(x)) => Val::B(cx.not(x)?),
        (UnaryOp::Neg, Val::I(x)) => Val::I(cx.sub(cx.i32(0), x)?),
        (UnaryOp::Neg, Val::F(x)) => Val::F(cx.fneg(x)?),
        // wrapping_abs: |MIN| = MIN.
        (UnaryOp::Abs, Val::I(x)) => Val::I(cx.select_int(cx.icmp(IP::SLT, x, cx.i32(0))?, cx.sub(cx.i32(0), x)?, x)?),
        (UnaryOp::Abs, Val::F(x)) => Val::F(cx.fabs(x)?),
        _ => unreachable!("verified types"),
    })
}

fn elem_binary<'ctx>(cx: &Cx<'_, 'ctx>, op: BinaryOp, a: Val<'ctx>, b: Val<'ctx>) -> Result<Val<'ctx>> {
    use BinaryOp::*;
    Ok(match (a, b) {
        (Val::B(x), Val::B(y)) => Val::B(match op {
            And => cx.and(x, y)?,
            Or => cx.or(x, y)?,
            Eq => cx.icmp(IP::EQ, x, y)?,
            Ne => cx.icmp(IP::NE, x, y)?,
            _ => unreachable!("verified types"),
        }),
        (Val::I(x), Val::I(y)) => match op {
            Eq | Ne | Lt | Le | Gt | Ge => Val::B(cx.icmp(int_pred(op), x, y)?),
            Add => Val::I(cx.add(x, y)?),
            Sub => Val::I(cx.sub(x, y)?),
            Mul => Val::I(cx.mul(x, y)?),
            Min => Val::I(cx.smin(x, y)?),
            Max => Val::I(cx.smax(x, y)?),
            Div | Rem => {
                // x / 0 = x % 0 = 0, and MIN / -1 wraps to MIN (MIN % -1 = 0): divide
                // by 1 in both cases so the hardware never sees them.
                let zero = cx.icmp(IP::EQ, y, cx.i32(0))?;
                let overflow = cx.and(cx.icmp(IP::EQ, x, cx.i32(i32::MIN))?, cx.icmp(IP::EQ, y, cx.i32(-1))?)?;
                let safe = cx.select_int(cx.or(zero, overflow)?, cx.i32(1), y)?;
                if op == Div {
                    Val::I(cx.select_int(zero, cx.i32(0), cx.sdiv(x, safe)?)?)
                } else {
                    Val::I(cx.srem(x, safe)?)
                }
            }
            And | Or => unreachable!("verified types"),
        },
        (Val::F(x), Val::F(y)) => match op {
            Eq | Ne | Lt | Le | Gt | Ge => Val::B(cx.fcmp(float_pred(op), x, y)?),
            Add => Val::F(cx.fadd(x, y)?),
            Sub => Val::F(cx.fsub(x, y)?),
            Mul => Val::F(cx.fmul(x, y)?),
            Div => Val::F(cx.fdiv(x, y)?),
            Min => Val::F(cx.fmin(x, y)?),
            Max => Val::F(cx.fmax(x, y)?),
            Rem | And | Or => unreachable!("verified types"),
        },
        _ => unreachable!("verified types"),
    })
}

fn elem_cast<'ctx>(cx: &Cx<'_, 'ctx>, to: ScalarType, a: Val<'ctx>) -> Result<Val<'ctx>> {
    Ok(match (to, a) {
        (ScalarType::F32, Val::I(x)) => Val::F(cx.sitofp(x)?),
        (ScalarType::F32, Val::B(x)) => Val::F(cx.sitofp(cx.zext(x, cx.i32t())?)?),
        (ScalarType::I32, Val::F(x)) => Val::I(cx.fptosi_sat(x)?),
        (ScalarType::I32, Val::B(x)) => Val::I(cx.zext(x, cx.i32t())?),
        (_, v) => v,
    })
}

fn int_pred(op: BinaryOp) -> IP {
    match op {
        BinaryOp::Eq => IP::EQ,
        BinaryOp::Ne => IP::NE,
        BinaryOp::Lt => IP::SLT,
        BinaryOp::Le => IP::SLE,
        BinaryOp::Gt => IP::SGT,
        BinaryOp::Ge => IP::SGE,
        _ => unreachable!("{op:?} is not a comparison"),
    }
}

/// Rust's float comparisons: ordered, except `!=`, which is true on NaN.
fn float_pred(op: BinaryOp) -> FP {
    match op {
        BinaryOp::Eq => FP::OEQ,
        BinaryOp::Ne => FP::UNE,
        BinaryOp::Lt => FP::OLT,
        BinaryOp::Le => FP::OLE,
        BinaryOp::Gt => FP::OGT,
        BinaryOp::Ge => FP::OGE,
        _ => unreachable!("{op:?} is not a comparison"),
    }
}

// ----------------------------------------------------------------------
// The interval domain, in registers.
// ----------------------------------------------------------------------

/// An abstract value over a tile.
#[derive(Clone, Copy)]
enum Abs<'ctx> {
    /// Launch-uniform: the exact value.
    Point(Val<'ctx>),
    /// `[lo, hi]` in i64, always inside the i32 range.
    Int { lo: IV<'ctx>, hi: IV<'ctx> },
    /// `[lo, hi]`, and whether NaN is possible too.
    Float { lo: FV<'ctx>, hi: FV<'ctx>, nan: IV<'ctx> },
    /// `t`: may be true; `f`: may be false.
    Tri { t: IV<'ctx>, f: IV<'ctx> },
}

impl<'ctx> Abs<'ctx> {
    fn int_range(cx: &Cx<'_, 'ctx>, lo: IV<'ctx>, hi: IV<'ctx>) -> Result<Self> {
        Ok(Abs::Int { lo: cx.sext64(lo)?, hi: cx.sext64(hi)? })
    }

    fn full_int(cx: &Cx<'_, 'ctx>) -> (IV<'ctx>, IV<'ctx>) {
        (cx.i64(i32::MIN as i64), cx.i64(i32::MAX as i64))
    }

    fn ints(self, cx: &Cx<'_, 'ctx>) -> Result<(IV<'ctx>, IV<'ctx>)> {
        match self {
            Abs::Int { lo, hi } => Ok((lo, hi)),
            Abs::Point(Val::I(v)) => {
                let w = cx.sext64(v)?;
                Ok((w, w))
            }
            _ => unreachable!("verified types: expected an integer"),
        }
    }

    fn floats(self, cx: &Cx<'_, 'ctx>) -> Result<(FV<'ctx>, FV<'ctx>, IV<'ctx>)> {
        match self {
            Abs::Float { lo, hi, nan } => Ok((lo, hi, nan)),
            Abs::Point(Val::F(v)) => Ok((v, v, cx.fcmp(FP::UNO, v, v)?)),
            _ => unreachable!("verified types: expected f32"),
        }
    }

    fn tri(self, cx: &Cx<'_, 'ctx>) -> Result<(IV<'ctx>, IV<'ctx>)> {
        match self {
            Abs::Tri { t, f } => Ok((t, f)),
            Abs::Point(Val::B(v)) => Ok((v, cx.not(v)?)),
            _ => unreachable!("verified types: expected bool"),
        }
    }
}

/// A wrapped i32 result: if the exact range leaves i32, any i32 is possible.
fn wrap<'ctx>(cx: &Cx<'_, 'ctx>, lo: IV<'ctx>, hi: IV<'ctx>) -> Result<Abs<'ctx>> {
    let (min, max) = Abs::full_int(cx);
    let out = cx.or(cx.icmp(IP::SLT, lo, min)?, cx.icmp(IP::SGT, hi, max)?)?;
    Ok(Abs::Int { lo: cx.select_int(out, min, lo)?, hi: cx.select_int(out, max, hi)? })
}

/// A float range; any NaN endpoint (or `widen`) gives the full range with NaN.
fn float_range<'ctx>(cx: &Cx<'_, 'ctx>, lo: FV<'ctx>, hi: FV<'ctx>, nan: IV<'ctx>, widen: IV<'ctx>) -> Result<Abs<'ctx>> {
    let bad = cx.or(widen, cx.or(cx.fcmp(FP::UNO, lo, lo)?, cx.fcmp(FP::UNO, hi, hi)?)?)?;
    Ok(Abs::Float {
        lo: cx.select_f32(bad, cx.f32(f32::NEG_INFINITY), lo)?,
        hi: cx.select_f32(bad, cx.f32(f32::INFINITY), hi)?,
        nan: cx.or(bad, nan)?,
    })
}

fn finite<'ctx>(cx: &Cx<'_, 'ctx>, x: FV<'ctx>) -> Result<IV<'ctx>> {
    cx.fcmp(FP::OLT, cx.fabs(x)?, cx.f32(f32::INFINITY))
}

fn abs_unary<'ctx>(cx: &Cx<'_, 'ctx>, op: UnaryOp, a: Abs<'ctx>) -> Result<Abs<'ctx>> {
    if let Abs::Point(v) = a {
        return Ok(Abs::Point(elem_unary(cx, op, v)?));
    }
    Ok(match (op, a) {
        (UnaryOp::Not, _) => {
            let (t, f) = a.tri(cx)?;
            Abs::Tri { t: f, f: t }
        }
        (UnaryOp::Neg, Abs::Int { lo, hi }) => wrap(cx, cx.sub(cx.i64(0), hi)?, cx.sub(cx.i64(0), lo)?)?,
        (UnaryOp::Abs, Abs::Int { lo, hi }) => {
            // lo >= 0: [lo, hi]; hi <= 0: [-hi, -lo]; else [0, max(-lo, hi)].
            let (nlo, nhi) = (cx.sub(cx.i64(0), hi)?, cx.sub(cx.i64(0), lo)?);
            let nonneg = cx.icmp(IP::SGE, lo, cx.i64(0))?;
            let nonpos = cx.icmp(IP::SLE, hi, cx.i64(0))?;
            let l = cx.select_int(nonneg, lo, cx.select_int(nonpos, nlo, cx.i64(0))?)?;
            let h = cx.select_int(nonneg, hi, cx.select_int(nonpos, nhi, cx.smax(nhi, hi)?)?)?;
            wrap(cx, l, h)?
        }
        (UnaryOp::Neg, Abs::Float { lo, hi, nan }) => Abs::Float { lo: cx.fneg(hi)?, hi: cx.fneg(lo)?, nan },
        (UnaryOp::Abs, Abs::Float { lo, hi, nan }) => {
            let nonneg = cx.fcmp(FP::OGE, lo, cx.f32(0.0))?;
            let nonpos = cx.fcmp(FP::OLE, hi, cx.f32(0.0))?;
            let (nlo, nhi) = (cx.fneg(hi)?, cx.fneg(lo)?);
            let l = cx.select_f32(nonneg, lo, cx.select_f32(nonpos, nlo, cx.f32(0.0))?)?;
            let h = cx.select_f32(nonneg, hi, cx.select_f32(nonpos, nhi, cx.fmax(nhi, hi)?)?)?;
            float_range(cx, l, h, nan, cx.bool(false))?
        }
        _ => unreachable!("verified types"),
    })
}

fn abs_cast<'ctx>(cx: &Cx<'_, 'ctx>, to: ScalarType, a: Abs<'ctx>) -> Result<Abs<'ctx>> {
    if let Abs::Point(v) = a {
        return Ok(Abs::Point(elem_cast(cx, to, v)?));
    }
    Ok(match (to, a) {
        (ScalarType::F32, Abs::Int { lo, hi }) => Abs::Float {
            lo: cx.sitofp(cx.trunc(lo, cx.i32t())?)?,
            hi: cx.sitofp(cx.trunc(hi, cx.i32t())?)?,
            nan: cx.bool(false),
        },
        (ScalarType::F32, Abs::Tri { t, f }) => Abs::Float {
            lo: cx.select_f32(f, cx.f32(0.0), cx.f32(1.0))?,
            hi: cx.select_f32(t, cx.f32(1.0), cx.f32(0.0))?,
            nan: cx.bool(false),
        },
        (ScalarType::I32, Abs::Float { lo, hi, nan }) => {
            // Truncation with saturation is monotone; NaN converts to 0.
            let (l, h) = (cx.sext64(cx.fptosi_sat(lo)?)?, cx.sext64(cx.fptosi_sat(hi)?)?);
            let zero = cx.i64(0);
            Abs::Int {
                lo: cx.select_int(nan, cx.smin(l, zero)?, l)?,
                hi: cx.select_int(nan, cx.smax(h, zero)?, h)?,
            }
        }
        (ScalarType::I32, Abs::Tri { t, f }) => Abs::Int {
            lo: cx.select_int(f, cx.i64(0), cx.i64(1))?,
            hi: cx.select_int(t, cx.i64(1), cx.i64(0))?,
        },
        (_, v) => v,
    })
}

fn abs_select<'ctx>(cx: &Cx<'_, 'ctx>, c: Abs<'ctx>, a: Abs<'ctx>, b: Abs<'ctx>) -> Result<Abs<'ctx>> {
    if let (Abs::Point(c), Abs::Point(x), Abs::Point(y)) = (c, a, b) {
        let c = c.i();
        return Ok(Abs::Point(match (x, y) {
            (Val::F(x), Val::F(y)) => Val::F(cx.select_f32(c, x, y)?),
            (Val::B(x), Val::B(y)) => Val::B(cx.select_int(c, x, y)?),
            (x, y) => Val::I(cx.select_int(c, x.i(), y.i())?),
        }));
    }
    let (ct, cf) = c.tri(cx)?;
    // Only `a` possible: ct && !cf; only `b`: !ct; both: hull.
    let pick_int = |x: IV<'ctx>, y: IV<'ctx>, hull: IV<'ctx>| -> Result<IV<'ctx>> { cx.select_int(ct, cx.select_int(cf, hull, x)?, y) };
    let pick_f = |x: FV<'ctx>, y: FV<'ctx>, hull: FV<'ctx>| -> Result<FV<'ctx>> { cx.select_f32(ct, cx.select_f32(cf, hull, x)?, y) };
    Ok(match a {
        Abs::Tri { .. } | Abs::Point(Val::B(_)) => {
            let ((at, af), (bt, bf)) = (a.tri(cx)?, b.tri(cx)?);
            Abs::Tri {
                t: cx.or(cx.and(ct, at)?, cx.and(cf, bt)?)?,
                f: cx.or(cx.and(ct, af)?, cx.and(cf, bf)?)?,
            }
        }
        Abs::Int { .. } | Abs::Point(Val::I(_)) => {
            let ((al, ah), (bl, bh)) = (a.ints(cx)?, b.ints(cx)?);
            Abs::Int { lo: pick_int(al, bl, cx.smin(al, bl)?)?, hi: pick_int(ah, bh, cx.smax(ah, bh)?)? }
        }
        Abs::Float { .. } | Abs::Point(Val::F(_)) => {
            let ((al, ah, an), (bl, bh, bn)) = (a.floats(cx)?, b.floats(cx)?);
            let lo = pick_f(al, bl, cx.fmin(al, bl)?)?;
            let hi = pick_f(ah, bh, cx.fmax(ah, bh)?)?;
            let nan = cx.or(cx.and(ct, an)?, cx.and(cf, bn)?)?;
            float_range(cx, lo, hi, nan, cx.bool(false))?
        }
    })
}

fn abs_binary<'ctx>(cx: &Cx<'_, 'ctx>, op: BinaryOp, a: Abs<'ctx>, b: Abs<'ctx>) -> Result<Abs<'ctx>> {
    use BinaryOp::*;
    if let (Abs::Point(x), Abs::Point(y)) = (a, b) {
        return Ok(Abs::Point(elem_binary(cx, op, x, y)?));
    }
    if op.is_logical() {
        let ((at, af), (bt, bf)) = (a.tri(cx)?, b.tri(cx)?);
        return Ok(if op == And {
            Abs::Tri { t: cx.and(at, bt)?, f: cx.or(af, bf)? }
        } else {
            Abs::Tri { t: cx.or(at, bt)?, f: cx.and(af, bf)? }
        });
    }
    let is_int = matches!(a, Abs::Int { .. } | Abs::Point(Val::I(_)));
    let is_float = matches!(a, Abs::Float { .. } | Abs::Point(Val::F(_)));
    if op.is_comparison() {
        if is_int {
            let (x, y) = (a.ints(cx)?, b.ints(cx)?);
            let (t, f) = order(cx, op, x, y, IP::SLT, IP::SLE, IP::EQ)?;
            return Ok(Abs::Tri { t, f });
        }
        if is_float {
            let ((al, ah, an), (bl, bh, bn)) = (a.floats(cx)?, b.floats(cx)?);
            let (t, f) = order_f(cx, op, (al, ah), (bl, bh))?;
            // A possible NaN makes every comparison possibly false, and `!=` possibly true.
            let nan = cx.or(an, bn)?;
            return Ok(if op == Ne {
                Abs::Tri { t: cx.or(t, nan)?, f }
            } else {
                Abs::Tri { t, f: cx.or(f, nan)? }
            });
        }
        // Bool == / !=: exact when both sides are known, else unknown.
        let ((at, af), (bt, bf)) = (a.tri(cx)?, b.tri(cx)?);
        let known = cx.and(cx.xor(at, af)?, cx.xor(bt, bf)?)?;
        let same = cx.icmp(IP::EQ, at, bt)?;
        let unknown = cx.not(known)?;
        let (yes, no) = if op == Eq { (same, cx.not(same)?) } else { (cx.not(same)?, same) };
        return Ok(Abs::Tri { t: cx.or(unknown, yes)?, f: cx.or(unknown, no)? });
    }
    if is_int {
        let ((al, ah), (bl, bh)) = (a.ints(cx)?, b.ints(cx)?);
        return int_arith(cx, op, (al, ah), (bl, bh));
    }
    let ((al, ah, an), (bl, bh, bn)) = (a.floats(cx)?, b.floats(cx)?);
    float_arith(cx, op, (al, ah), (bl, bh), cx.or(an, bn)?)
}

/// `(may_true, may_false)` of `a op b` over integer ranges (order() in interval.rs).
fn order<'ctx>(cx: &Cx<'_, 'ctx>, op: BinaryOp, a: (IV<'ctx>, IV<'ctx>), b: (IV<'ctx>, IV<'ctx>), lt: IP, le: IP, eq: IP) -> Result<(IV<'ctx>, IV<'ctx>)> {
    let c = |p: IP, x: IV<'ctx>, y: IV<'ctx>| cx.icmp(p, x, y);
    let (always, never) = match op {
        BinaryOp::Lt => (c(lt, a.1, b.0)?, cx.not(c(lt, a.0, b.1)?)?),
        BinaryOp::Le => (c(le, a.1, b.0)?, cx.not(c(le, a.0, b.1)?)?),
        BinaryOp::Gt => (c(lt, b.1, a.0)?, cx.not(c(lt, b.0, a.1)?)?),
        BinaryOp::Ge => (c(le, b.1, a.0)?, cx.not(c(le, b.0, a.1)?)?),
        BinaryOp::Eq | BinaryOp::Ne => {
            let points = cx.and(cx.and(c(eq, a.0, a.1)?, c(eq, b.0, b.1)?)?, c(eq, a.0, b.0)?)?;
            let apart = cx.or(c(lt, a.1, b.0)?, c(lt, b.1, a.0)?)?;
            if op == BinaryOp::Eq { (points, apart) } else { (apart, points) }
        }
        _ => unreachable!("{op:?} is not a comparison"),
    };
    Ok((cx.not(never)?, cx.not(always)?))
}

/// Float comparison of ranges; ordered predicates, so NaN endpoints give Unknown.
fn order_f<'ctx>(cx: &Cx<'_, 'ctx>, op: BinaryOp, a: (FV<'ctx>, FV<'ctx>), b: (FV<'ctx>, FV<'ctx>)) -> Result<(IV<'ctx>, IV<'ctx>)> {
    let c = |p: FP, x: FV<'ctx>, y: FV<'ctx>| cx.fcmp(p, x, y);
    let (always, never) = match op {
        BinaryOp::Lt => (c(FP::OLT, a.1, b.0)?, c(FP::OGE, a.0, b.1)?),
        BinaryOp::Le => (c(FP::OLE, a.1, b.0)?, c(FP::OGT, a.0, b.1)?),
        BinaryOp::Gt => (c(FP::OGT, a.0, b.1)?, c(FP::OLE, a.1, b.0)?),
        BinaryOp::Ge => (c(FP::OGE, a.0, b.1)?, c(FP::OLT, a.1, b.0)?),
        BinaryOp::Eq | BinaryOp::Ne => {
            let points = cx.and(cx.and(c(FP::OEQ, a.0, a.1)?, c(FP::OEQ, b.0, b.1)?)?, c(FP::OEQ, a.0, b.0)?)?;
            let apart = cx.or(c(FP::OLT, a.1, b.0)?, c(FP::OLT, b.1, a.0)?)?;
            if op == BinaryOp::Eq { (points, apart) } else { (apart, points) }
        }
        _ => unreachable!("{op:?} is not a comparison"),
    };
    Ok((cx.not(never)?, cx.not(always)?))
}

fn int_arith<'ctx>(cx: &Cx<'_, 'ctx>, op: BinaryOp, a: (IV<'ctx>, IV<'ctx>), b: (IV<'ctx>, IV<'ctx>)) -> Result<Abs<'ctx>> {
    use BinaryOp::*;
    let corners = |f: &dyn Fn(IV<'ctx>, IV<'ctx>) -> Result<IV<'ctx>>| -> Result<(IV<'ctx>, IV<'ctx>)> {
        let v = [f(a.0, b.0)?, f(a.0, b.1)?, f(a.1, b.0)?, f(a.1, b.1)?];
        let lo = cx.smin(cx.smin(v[0], v[1])?, cx.smin(v[2], v[3])?)?;
        let hi = cx.smax(cx.smax(v[0], v[1])?, cx.smax(v[2], v[3])?)?;
        Ok((lo, hi))
    };
    match op {
        Add => wrap(cx, cx.add(a.0, b.0)?, cx.add(a.1, b.1)?),
        Sub => wrap(cx, cx.sub(a.0, b.1)?, cx.sub(a.1, b.0)?),
        Mul => {
            // Products of i32-range values fit in i64.
            let (lo, hi) = corners(&|x, y| cx.mul(x, y))?;
            wrap(cx, lo, hi)
        }
        Min => Ok(Abs::Int { lo: cx.smin(a.0, b.0)?, hi: cx.smin(a.1, b.1)? }),
        Max => Ok(Abs::Int { lo: cx.smax(a.0, b.0)?, hi: cx.smax(a.1, b.1)? }),
        Div => {
            let zero = cx.i64(0);
            let has_zero = cx.and(cx.icmp(IP::SLE, b.0, zero)?, cx.icmp(IP::SGE, b.1, zero)?)?;
            let has_m1 = cx.and(cx.icmp(IP::SLE, b.0, cx.i64(-1))?, cx.icmp(IP::SGE, b.1, cx.i64(-1))?)?;
            let overflow = cx.and(cx.icmp(IP::EQ, a.0, cx.i64(i32::MIN as i64))?, has_m1)?;
            // Divisors are made non-zero when the range holds 0 (that result is not used).
            let sb = (cx.select_int(has_zero, cx.i64(1), b.0)?, cx.select_int(has_zero, cx.i64(1), b.1)?);
            let v = [cx.sdiv(a.0, sb.0)?, cx.sdiv(a.0, sb.1)?, cx.sdiv(a.1, sb.0)?, cx.sdiv(a.1, sb.1)?];
            let lo = cx.smin(cx.smin(v[0], v[1])?, cx.smin(v[2], v[3])?)?;
            let hi = cx.smax(cx.smax(v[0], v[1])?, cx.smax(v[2], v[3])?)?;
            // Dividing by 0 gives 0, and |x / y| <= |x| otherwise.
            let m = cx.smax(iabs(cx, a.0)?, iabs(cx, a.1)?)?;
            let Abs::Int { lo: zl, hi: zh } = wrap(cx, cx.sub(zero, m)?, m)? else { unreachable!() };
            let (fl, fh) = Abs::full_int(cx);
            let lo = cx.select_int(overflow, fl, cx.select_int(has_zero, zl, lo)?)?;
            let hi = cx.select_int(overflow, fh, cx.select_int(has_zero, zh, hi)?)?;
            Ok(Abs::Int { lo, hi })
        }
        Rem => {
            // |x % y| <= |x| and < |y|; the sign follows x; x % 0 == 0.
            let zero = cx.i64(0);
            let m = cx.smax(iabs(cx, b.0)?, iabs(cx, b.1)?)?;
            let lo = cx.smin(a.0, zero)?;
            let hi = cx.smax(a.1, zero)?;
            let m1 = cx.sub(m, cx.i64(1))?;
            let pos = cx.icmp(IP::SGT, m, zero)?;
            let lo = cx.select_int(pos, cx.smax(lo, cx.sub(zero, m1)?)?, zero)?;
            let hi = cx.select_int(pos, cx.smin(hi, m1)?, zero)?;
            Ok(Abs::Int { lo, hi })
        }
        _ => unreachable!("{op:?} is not arithmetic"),
    }
}

fn iabs<'ctx>(cx: &Cx<'_, 'ctx>, x: IV<'ctx>) -> Result<IV<'ctx>> {
    cx.smax(x, cx.sub(cx.i64(0), x)?)
}

/// Float ranges: exact corner arithmetic when every endpoint is finite (IEEE
/// rounding is monotone); any infinite endpoint widens to the full range.
fn float_arith<'ctx>(cx: &Cx<'_, 'ctx>, op: BinaryOp, a: (FV<'ctx>, FV<'ctx>), b: (FV<'ctx>, FV<'ctx>), nan: IV<'ctx>) -> Result<Abs<'ctx>> {
    use BinaryOp::*;
    let all_finite = cx.and(cx.and(finite(cx, a.0)?, finite(cx, a.1)?)?, cx.and(finite(cx, b.0)?, finite(cx, b.1)?)?)?;
    let not_finite = cx.not(all_finite)?;
    let corners = |f: &dyn Fn(FV<'ctx>, FV<'ctx>) -> Result<FV<'ctx>>| -> Result<(FV<'ctx>, FV<'ctx>)> {
        let v = [f(a.0, b.0)?, f(a.0, b.1)?, f(a.1, b.0)?, f(a.1, b.1)?];
        let lo = cx.fmin(cx.fmin(v[0], v[1])?, cx.fmin(v[2], v[3])?)?;
        let hi = cx.fmax(cx.fmax(v[0], v[1])?, cx.fmax(v[2], v[3])?)?;
        Ok((lo, hi))
    };
    match op {
        Add => float_range(cx, cx.fadd(a.0, b.0)?, cx.fadd(a.1, b.1)?, nan, not_finite),
        Sub => float_range(cx, cx.fsub(a.0, b.1)?, cx.fsub(a.1, b.0)?, nan, not_finite),
        Mul => {
            let (lo, hi) = corners(&|x, y| cx.fmul(x, y))?;
            float_range(cx, lo, hi, nan, not_finite)
        }
        Div => {
            let zero = cx.f32(0.0);
            let has_zero = cx.and(cx.fcmp(FP::OLE, b.0, zero)?, cx.fcmp(FP::OGE, b.1, zero)?)?;
            let (lo, hi) = corners(&|x, y| cx.fdiv(x, y))?;
            float_range(cx, lo, hi, nan, cx.or(not_finite, has_zero)?)
        }
        Min | Max => {
            // With a possible NaN, min/max may return the other operand's whole range: widen.
            let (lo, hi) = if op == Min {
                (cx.fmin(a.0, b.0)?, cx.fmin(a.1, b.1)?)
            } else {
                (cx.fmax(a.0, b.0)?, cx.fmax(a.1, b.1)?)
            };
            float_range(cx, lo, hi, nan, nan)
        }
        _ => unreachable!("{op:?} is not float arithmetic"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_rows_per_tile_counts_every_list_row_a_tile_can_touch() {
        assert_eq!(list_rows_per_tile(64, 64), 1);
        assert_eq!(list_rows_per_tile(128, 64), 2);
        assert_eq!(list_rows_per_tile(64, 128), 1, "a 64-row tile sits inside one 128-row list block");
        // 48-row tiles against 64-row list blocks: rows 48..=95 span two.
        assert_eq!(list_rows_per_tile(48, 64), 2);
        assert_eq!(list_rows_per_tile(64, 48), 2, "rows 64..=127 hit list rows 1 and 2");
        // Brute force: the most distinct list rows over any tile's rows.
        for (bq, b) in [(64u32, 64u32), (128, 64), (64, 32), (64, 48), (96, 64), (16, 64), (128, 48)] {
            let rows = |t: u32| (t * bq..(t + 1) * bq).map(|r| r / b).collect::<std::collections::BTreeSet<_>>().len() as u32;
            let most = (0..4 * b).map(rows).max().unwrap_or(0);
            assert_eq!(list_rows_per_tile(bq, b), most, "block_q {bq}, list block {b}");
        }
    }

    fn split(name: &str) -> Vec<String> {
        let ir = (lacuna_patterns::find(name).expect("standard pattern").ir)();
        conjuncts(&ir).into_iter().map(|id| format!("{:?}", ir.node(id))).collect()
    }

    #[test]
    fn top_level_ands_split_into_conjuncts_in_order() {
        // Window: `k <= q` and (inside the window or a sink).
        let w = split("sliding-window");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("Le") && w[1].contains("Or"), "{w:?}");
        // Hash: same bucket and causal on positions.
        let h = split("hash-bucket");
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h[0].contains("Eq") && h[1].contains("Ge"), "{h:?}");
    }

    #[test]
    fn a_predicate_without_a_top_level_and_is_one_conjunct() {
        for name in ["causal", "qk-drop"] {
            let ir = (lacuna_patterns::find(name).expect("standard pattern").ir)();
            assert_eq!(conjuncts(&ir), vec![ir.root()], "{name}");
        }
    }
}
