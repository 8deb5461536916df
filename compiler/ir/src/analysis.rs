//! Block analysis: where a pattern becomes a tile list. Each tile of the
//! attention matrix is classified Empty / Partial / Full by interval
//! evaluation over per-block input summaries; no N×N mask is ever built.

use std::fmt;

use crate::bindings::{Bindings, Dims};
use crate::eval::ElementEvaluator;
use crate::expr::{Coord, InputId, Node};
use crate::interval::{Interval, Tri};
use crate::pattern::PatternIr;
use crate::summary::{BlockSummaries, BucketJoin};
use crate::types::{InputKind, ScalarType};

/// What a tile costs the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockClass {
    /// Every element masked: never loaded.
    Empty,
    /// Some elements masked: loaded, and the element test runs.
    Partial,
    /// No element masked: loaded, no element test.
    Full,
}

impl BlockClass {
    pub fn from_tri(t: Tri) -> Self {
        match t {
            Tri::False => BlockClass::Empty,
            Tri::True => BlockClass::Full,
            Tri::Unknown => BlockClass::Partial,
        }
    }

    /// One character per tile in pictures: `.` empty, `+` partial, `#` full.
    pub fn symbol(self) -> char {
        match self {
            BlockClass::Empty => '.',
            BlockClass::Partial => '+',
            BlockClass::Full => '#',
        }
    }

    /// One letter, as in `lacuna mask --json`.
    pub fn letter(self) -> &'static str {
        match self {
            BlockClass::Empty => "E",
            BlockClass::Partial => "P",
            BlockClass::Full => "F",
        }
    }
}

/// Tile shape: query rows × key rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileShape {
    pub block_q: usize,
    pub block_k: usize,
}

impl TileShape {
    pub fn new(block_q: usize, block_k: usize) -> Self {
        Self { block_q, block_k }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    #[error("block sizes must be positive, got block_q={block_q}, block_k={block_k}")]
    ZeroBlock { block_q: usize, block_k: usize },
}

/// The classification of every tile for every (b, h).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMask {
    pub dims: Dims,
    pub tiles: TileShape,
    pub q_blocks: usize,
    pub k_blocks: usize,
    /// `[(b * heads + h) * q_blocks * k_blocks + qb * k_blocks + kb]`.
    pub classes: Vec<BlockClass>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounts {
    pub empty: usize,
    pub partial: usize,
    pub full: usize,
}

impl BlockMask {
    pub fn class(&self, b: usize, h: usize, qb: usize, kb: usize) -> BlockClass {
        self.classes[((b * self.dims.heads + h) * self.q_blocks + qb) * self.k_blocks + kb]
    }

    /// The tiles of one (b, h), row by row.
    pub fn head(&self, b: usize, h: usize) -> &[BlockClass] {
        let n = self.q_blocks * self.k_blocks;
        &self.classes[(b * self.dims.heads + h) * n..][..n]
    }

    pub fn counts(&self) -> ClassCounts {
        let mut c = ClassCounts::default();
        for class in &self.classes {
            match class {
                BlockClass::Empty => c.empty += 1,
                BlockClass::Partial => c.partial += 1,
                BlockClass::Full => c.full += 1,
            }
        }
        c
    }

    /// Fraction of the matrix's elements inside visited (non-Empty) tiles.
    pub fn visited_elements(&self) -> u64 {
        let mut n = 0u64;
        for b in 0..self.dims.batch {
            for h in 0..self.dims.heads {
                for qb in 0..self.q_blocks {
                    for kb in 0..self.k_blocks {
                        if self.class(b, h, qb, kb) != BlockClass::Empty {
                            let rows = (self.dims.q_len - qb * self.tiles.block_q).min(self.tiles.block_q);
                            let cols = (self.dims.kv_len - kb * self.tiles.block_k).min(self.tiles.block_k);
                            n += (rows * cols) as u64;
                        }
                    }
                }
            }
        }
        n
    }
}

impl fmt::Display for BlockMask {
    /// One picture per (b, h): a row per query block, a character per key block.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in 0..self.dims.batch {
            for h in 0..self.dims.heads {
                writeln!(f, "b={b} h={h}  ({} x {} tiles of {} x {})", self.q_blocks, self.k_blocks, self.tiles.block_q, self.tiles.block_k)?;
                for row in self.head(b, h).chunks(self.k_blocks) {
                    let line: String = row.iter().map(|c| c.symbol()).collect();
                    writeln!(f, "  {line}")?;
                }
            }
        }
        let c = self.counts();
        writeln!(f, "tiles: {} empty (.), {} partial (+), {} full (#)", c.empty, c.partial, c.full)
    }
}

/// Interval evaluation of one tile. `q` and `k` are inclusive row ranges.
pub fn classify_tile(
    p: &PatternIr,
    bindings: &Bindings,
    summaries: &BlockSummaries,
    tiles: TileShape,
    (b, h): (usize, usize),
    (qb, kb): (usize, usize),
) -> BlockClass {
    let dims = bindings.dims();
    let q = (qb * tiles.block_q, ((qb + 1) * tiles.block_q).min(dims.q_len) - 1);
    let k = (kb * tiles.block_k, ((kb + 1) * tiles.block_k).min(dims.kv_len) - 1);
    let block_of = |id: InputId| if p.input(id).kind == InputKind::QueryTensor { qb } else { kb };
    let tile = Tile { p, bindings, b, h, q, k };
    let class = BlockClass::from_tri(tile.eval(&|id| summaries.range(id, block_of(id))));
    match summaries.join {
        Some(join) if class != BlockClass::Empty && !bucket_may_meet(&tile, summaries, join, qb, kb) => BlockClass::Empty,
        _ => class,
    }
}

/// One tile's coordinates, for interval evaluation.
struct Tile<'a> {
    p: &'a PatternIr,
    bindings: &'a Bindings,
    b: usize,
    h: usize,
    q: (usize, usize),
    k: (usize, usize),
}

impl Tile<'_> {
    /// The root's value over the tile, tensor input `id` ranging over `tensor(id)`.
    fn eval(&self, tensor: &dyn Fn(InputId) -> (i32, i32)) -> Tri {
        let (p, bindings, b, h, q, k) = (self.p, self.bindings, self.b, self.h, self.q, self.k);
        let mut values: Vec<Interval> = Vec::with_capacity(p.nodes().len());
        for (_, node) in p.nodes() {
            let v = match *node {
                Node::Coord(c) => match c {
                    Coord::B => Interval::point_i32(b as i32),
                    Coord::H => Interval::point_i32(h as i32),
                    Coord::Q => Interval::int(q.0 as i64, q.1 as i64),
                    Coord::K => Interval::int(k.0 as i64, k.1 as i64),
                },
                Node::ConstI32(v) => Interval::point_i32(v),
                Node::ConstF32(v) => Interval::point_f32(v),
                Node::ConstBool(v) => Interval::Bool(Tri::from_bool(v)),
                Node::Input(id) => match p.input(id).kind {
                    InputKind::QueryTensor | InputKind::KeyTensor => {
                        let (lo, hi) = tensor(id);
                        Interval::int(lo as i64, hi as i64)
                    }
                    InputKind::HeadScalar(ScalarType::F32) | InputKind::LaunchScalar(ScalarType::F32) => {
                        Interval::point_f32(bindings.read_f32(id, h))
                    }
                    InputKind::HeadScalar(_) | InputKind::LaunchScalar(_) => Interval::point_i32(bindings.read_i32(id, b, h, 0)),
                    InputKind::BlockList { block } => Interval::Bool(block_list_tri(bindings, id, block as usize, b, h, q, k)),
                },
                Node::Unary(op, a) => Interval::unary(op, values[a.index()]),
                Node::Binary(op, a, c) => Interval::binary(op, values[a.index()], values[c.index()]),
                Node::Cast(ScalarType::F32, a) => values[a.index()].cast_to_f32(),
                Node::Cast(_, a) => values[a.index()].cast_to_i32(),
                Node::Select(c, a, e) => match values[c.index()].tri() {
                    Tri::True => values[a.index()],
                    Tri::False => values[e.index()],
                    Tri::Unknown => values[a.index()].hull(values[e.index()]),
                },
            };
            values.push(v);
        }
        values[p.root().index()].tri()
    }
}

/// Whether some query and key of the tile may share a bucket and pass the
/// rest of the predicate, splitting on that bucket (see `summary.rs`): the
/// smallest and the largest bucket both blocks hold are evaluated with the
/// other tensors' run ranges; any bucket strictly between them is only
/// bounded by the block ranges, so its presence keeps the tile.
fn bucket_may_meet(tile: &Tile<'_>, s: &BlockSummaries, join: BucketJoin, qb: usize, kb: usize) -> bool {
    let (qbuckets, kbuckets) = (s.range(join.query, qb), s.range(join.key, kb));
    let lo = qbuckets.0.max(kbuckets.0);
    let hi = qbuckets.1.min(kbuckets.1);
    if lo > hi {
        return false;
    }
    if hi as i64 - lo as i64 >= 2 {
        return true;
    }
    let shared = if lo == hi { &[lo][..] } else { &[lo, hi][..] };
    shared.iter().any(|&bucket| {
        let in_bucket = |id: InputId| {
            if id == join.query || id == join.key {
                (bucket, bucket)
            } else if tile.p.input(id).kind == InputKind::QueryTensor {
                s.range_in_bucket(id, qb, bucket, qbuckets)
            } else {
                s.range_in_bucket(id, kb, bucket, kbuckets)
            }
        };
        tile.eval(&in_bucket) != Tri::False
    })
}

/// Whether every / no (list query block, list key block) pair under the tile is listed.
fn block_list_tri(bindings: &Bindings, id: InputId, block: usize, b: usize, h: usize, q: (usize, usize), k: (usize, usize)) -> Tri {
    let (mut any, mut all) = (false, true);
    for lqb in q.0 / block..=q.1 / block {
        let list = bindings.block_list(id, b, h, lqb);
        for lkb in k.0 / block..=k.1 / block {
            let listed = list.contains(&(lkb as i32));
            any |= listed;
            all &= listed;
        }
    }
    if all { Tri::True } else if any { Tri::Unknown } else { Tri::False }
}

/// Classifies every tile of every (b, h).
pub fn analyze(p: &PatternIr, bindings: &Bindings, tiles: TileShape) -> Result<BlockMask, AnalysisError> {
    if tiles.block_q == 0 || tiles.block_k == 0 {
        return Err(AnalysisError::ZeroBlock { block_q: tiles.block_q, block_k: tiles.block_k });
    }
    let dims = bindings.dims();
    let q_blocks = dims.q_len.div_ceil(tiles.block_q);
    let k_blocks = dims.kv_len.div_ceil(tiles.block_k);
    let mut classes = Vec::with_capacity(dims.batch * dims.heads * q_blocks * k_blocks);
    for b in 0..dims.batch {
        for h in 0..dims.heads {
            let summaries = BlockSummaries::compute(p, bindings, tiles.block_q, tiles.block_k, b, h);
            for qb in 0..q_blocks {
                for kb in 0..k_blocks {
                    classes.push(classify_tile(p, bindings, &summaries, tiles, (b, h), (qb, kb)));
                }
            }
        }
    }
    Ok(BlockMask { dims, tiles, q_blocks, k_blocks, classes })
}

/// What brute force says about a block mask: soundness violations (must be
/// zero) and imprecision (Partial tiles that are really Empty or Full).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaskCheck {
    pub empty_but_attends: usize,
    pub full_but_masks: usize,
    pub partial_really_empty: usize,
    pub partial_really_full: usize,
}

impl MaskCheck {
    pub fn is_sound(&self) -> bool {
        self.empty_but_attends == 0 && self.full_but_masks == 0
    }
    pub fn is_exact(&self) -> bool {
        self.is_sound() && self.partial_really_empty == 0 && self.partial_really_full == 0
    }
}

impl fmt::Display for MaskCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "check against brute force:")?;
        writeln!(f, "  unsound: {} empty tiles that attend, {} full tiles that mask", self.empty_but_attends, self.full_but_masks)?;
        write!(f, "  imprecise: {} partial tiles really empty, {} partial tiles really full", self.partial_really_empty, self.partial_really_full)
    }
}

/// Evaluates every element of every tile (small sizes only: it is O(B·H·Nq·Nk)).
pub fn check_against_brute_force(p: &PatternIr, bindings: &Bindings, mask: &BlockMask) -> MaskCheck {
    let dims = bindings.dims();
    let mut eval = ElementEvaluator::new(p, bindings);
    let mut check = MaskCheck::default();
    for b in 0..dims.batch {
        for h in 0..dims.heads {
            for qb in 0..mask.q_blocks {
                for kb in 0..mask.k_blocks {
                    let (mut any, mut all) = (false, true);
                    for q in qb * mask.tiles.block_q..((qb + 1) * mask.tiles.block_q).min(dims.q_len) {
                        for k in kb * mask.tiles.block_k..((kb + 1) * mask.tiles.block_k).min(dims.kv_len) {
                            let m = eval.mask(b, h, q, k);
                            any |= m;
                            all &= m;
                        }
                    }
                    match mask.class(b, h, qb, kb) {
                        BlockClass::Empty if any => check.empty_but_attends += 1,
                        BlockClass::Full if !all => check.full_but_masks += 1,
                        BlockClass::Partial if !any => check.partial_really_empty += 1,
                        BlockClass::Partial if all => check.partial_really_full += 1,
                        _ => {}
                    }
                }
            }
        }
    }
    check
}
