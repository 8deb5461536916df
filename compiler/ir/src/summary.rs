//! What the per-block summaries of tensor inputs hold, the input of the tile
//! classifier on the host (`analysis.rs`) and on the GPU (codegen's
//! `predicate.rs`, from the generated summary kernels).
//!
//! Every tensor input gets its block's `[min, max]`. Patterns that join on a
//! bucket (a top-level conjunct `a[q] == b[k]` of a query tensor and a key
//! tensor, as in SCFA's hash attention) also get, for every other tensor
//! input, its range over the block's first and last bucket runs: the
//! elements whose bucket is the block's smallest, and those whose bucket is
//! its largest. Without them a query block that straddles two buckets looks
//! Partial against every key block of both, although its tokens of one
//! bucket are all earlier than the other bucket's keys (with buckets sorted
//! by position, a quarter of hash-32's visited tiles at 16K were such
//! tiles). With them the classifier splits on the bucket two tiles share
//! (`bucket_may_meet`) and finds those tiles Empty.

use crate::bindings::Bindings;
use crate::expr::{BinaryOp, InputId, Node};
use crate::pattern::PatternIr;
use crate::types::InputKind;

/// i32 words per block of a plain summary: `[min, max]`.
pub const RANGE_WORDS: usize = 2;
/// i32 words per block of a summary with bucket runs: `[min, max, first-run
/// min, first-run max, last-run min, last-run max]`.
pub const RUN_WORDS: usize = 6;

/// A top-level conjunct `query[q] == key[k]`: tokens only meet within a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketJoin {
    /// The query tensor holding each query's bucket.
    pub query: InputId,
    /// The key tensor holding each key's bucket.
    pub key: InputId,
}

impl BucketJoin {
    /// The first top-level conjunct of `p` that compares a query tensor with
    /// a key tensor for equality, if any other tensor input could use runs.
    pub fn find(p: &PatternIr) -> Option<BucketJoin> {
        let join = p.conjuncts().into_iter().find_map(|c| {
            let Node::Binary(BinaryOp::Eq, a, b) = *p.node(c) else { return None };
            let (&Node::Input(a), &Node::Input(b)) = (p.node(a), p.node(b)) else { return None };
            match (p.input(a).kind, p.input(b).kind) {
                (InputKind::QueryTensor, InputKind::KeyTensor) => Some(BucketJoin { query: a, key: b }),
                (InputKind::KeyTensor, InputKind::QueryTensor) => Some(BucketJoin { query: b, key: a }),
                _ => None,
            }
        })?;
        (0..p.inputs().len()).any(|i| join.has_runs(p, InputId(i as u32))).then_some(join)
    }

    /// Whether input `id` is summarised with bucket runs: a tensor input
    /// other than the two buckets that the predicate reads.
    pub fn has_runs(&self, p: &PatternIr, id: InputId) -> bool {
        let tensor = matches!(p.input(id).kind, InputKind::QueryTensor | InputKind::KeyTensor);
        tensor && id != self.query && id != self.key && p.nodes().any(|(_, n)| *n == Node::Input(id))
    }

    /// The bucket input on the same side as tensor input `id`.
    pub fn bucket_of(&self, p: &PatternIr, id: InputId) -> InputId {
        if p.input(id).kind == InputKind::QueryTensor { self.query } else { self.key }
    }
}

/// i32 words per block of input `id`'s summary (0 for non-tensors).
pub fn summary_words(p: &PatternIr, id: InputId) -> usize {
    match p.input(id).kind {
        InputKind::QueryTensor | InputKind::KeyTensor => {
            if BucketJoin::find(p).is_some_and(|j| j.has_runs(p, id)) { RUN_WORDS } else { RANGE_WORDS }
        }
        _ => 0,
    }
}

/// One block's summary of one tensor input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSummary {
    pub range: (i32, i32),
    /// With bucket runs: the range over the elements in the block's smallest
    /// bucket, then over those in its largest.
    pub runs: Option<[(i32, i32); 2]>,
}

/// Per-block summaries of every query- and key-side tensor, for one (b, h).
/// This is what the GPU summary kernels compute; here on the host.
#[derive(Clone, Debug)]
pub struct BlockSummaries {
    /// Indexed by input id; empty for inputs that are not tensors.
    per_input: Vec<Vec<BlockSummary>>,
    pub join: Option<BucketJoin>,
}

const EMPTY: (i32, i32) = (i32::MAX, i32::MIN);

fn widen((lo, hi): (i32, i32), x: i32) -> (i32, i32) {
    (lo.min(x), hi.max(x))
}

/// `[min, max]` of `values` over `block`-sized chunks.
pub fn block_ranges(values: &[i32], block: usize) -> Vec<(i32, i32)> {
    values.chunks(block).map(|c| c.iter().fold(EMPTY, |r, &x| widen(r, x))).collect()
}

/// Per chunk: the range of `values` over the elements whose bucket is the
/// chunk's smallest, and over those whose bucket is its largest.
pub fn bucket_runs(values: &[i32], buckets: &[i32], block: usize) -> Vec<[(i32, i32); 2]> {
    values
        .chunks(block)
        .zip(buckets.chunks(block))
        .map(|(v, b)| {
            let (first, last) = b.iter().fold(EMPTY, |r, &x| widen(r, x));
            let mut runs = [EMPTY; 2];
            for (&x, &bucket) in v.iter().zip(b) {
                if bucket == first {
                    runs[0] = widen(runs[0], x);
                }
                if bucket == last {
                    runs[1] = widen(runs[1], x);
                }
            }
            runs
        })
        .collect()
}

impl BlockSummaries {
    pub fn compute(p: &PatternIr, bindings: &Bindings, block_q: usize, block_k: usize, b: usize, h: usize) -> Self {
        let join = BucketJoin::find(p);
        let per_input = p
            .inputs()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let id = InputId(i as u32);
                let block = match d.kind {
                    InputKind::QueryTensor => block_q,
                    InputKind::KeyTensor => block_k,
                    _ => return Vec::new(),
                };
                let values = bindings.row(id, b, h);
                let ranges = block_ranges(values, block);
                match join.filter(|j| j.has_runs(p, id)) {
                    Some(j) => {
                        let runs = bucket_runs(values, bindings.row(j.bucket_of(p, id), b, h), block);
                        ranges.into_iter().zip(runs).map(|(range, r)| BlockSummary { range, runs: Some(r) }).collect()
                    }
                    None => ranges.into_iter().map(|range| BlockSummary { range, runs: None }).collect(),
                }
            })
            .collect();
        Self { per_input, join }
    }

    pub fn range(&self, id: InputId, block: usize) -> (i32, i32) {
        self.per_input[id.index()][block].range
    }

    pub fn block(&self, id: InputId, block: usize) -> BlockSummary {
        self.per_input[id.index()][block]
    }

    /// Input `id`'s range over the elements of `block` whose bucket is
    /// `bucket`, as far as the summary tells: a run's range when `bucket` is
    /// the block's smallest or largest, else the block's range.
    pub fn range_in_bucket(&self, id: InputId, block: usize, bucket: i32, block_buckets: (i32, i32)) -> (i32, i32) {
        let s = self.block(id, block);
        match s.runs {
            Some([first, _]) if bucket == block_buckets.0 => first,
            Some([_, last]) if bucket == block_buckets.1 => last,
            _ => s.range,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ScalarType;
    use crate::PatternBuilder;

    #[test]
    fn runs_hold_the_first_and_last_bucket() {
        let buckets = [3, 3, 4, 4, 4, 5, 5, 5];
        let values = [10, 20, 1, 2, 3, 7, 8, 9];
        assert_eq!(bucket_runs(&values, &buckets, 4), vec![[(10, 20), (1, 2)], [(3, 3), (7, 9)]]);
        assert_eq!(block_ranges(&values, 4), vec![(1, 20), (3, 9)]);
        // One bucket: both runs are the block's range; a ragged last block.
        assert_eq!(bucket_runs(&[5, 6, 7], &[1, 1, 1], 2), vec![[(5, 6), (5, 6)], [(7, 7), (7, 7)]]);
    }

    fn hash_like(extra_q_scalar: bool) -> PatternIr {
        let mut b = PatternBuilder::new("H", "");
        let qb = b.declare("qb", InputKind::QueryTensor).expect("a valid pattern");
        let kb = b.declare("kb", InputKind::KeyTensor).expect("a valid pattern");
        let qp = b.declare("qp", InputKind::QueryTensor).expect("a valid pattern");
        let kp = b.declare("kp", InputKind::KeyTensor).expect("a valid pattern");
        let (nqb, nkb, nqp, nkp) = (b.read(qb), b.read(kb), b.read(qp), b.read(kp));
        let eq = b.binary(BinaryOp::Eq, nkb, nqb).expect("a valid pattern");
        let mut ge = b.binary(BinaryOp::Ge, nqp, nkp).expect("a valid pattern");
        if extra_q_scalar {
            let w = b.declare("w", InputKind::LaunchScalar(ScalarType::Bool)).expect("a valid pattern");
            let nw = b.read(w);
            ge = b.binary(BinaryOp::And, ge, nw).expect("a valid pattern");
        }
        let root = b.binary(BinaryOp::And, ge, eq).expect("a valid pattern");
        b.finish(root).expect("a valid pattern")
    }

    #[test]
    fn the_join_is_found_in_either_order_and_position() {
        for extra in [false, true] {
            let p = hash_like(extra);
            let j = BucketJoin::find(&p).expect("a bucket join");
            assert_eq!((j.query, j.key), (InputId(0), InputId(1)));
            assert_eq!(summary_words(&p, InputId(0)), RANGE_WORDS);
            assert_eq!(summary_words(&p, InputId(2)), RUN_WORDS);
            assert_eq!(summary_words(&p, InputId(3)), RUN_WORDS);
            assert_eq!(j.bucket_of(&p, InputId(3)), InputId(1));
        }
    }

    #[test]
    fn no_join_without_other_tensors_or_under_an_or() {
        // Only the buckets: runs would add nothing.
        let mut b = PatternBuilder::new("Doc", "");
        let qd = b.declare("qd", InputKind::QueryTensor).expect("a valid pattern");
        let kd = b.declare("kd", InputKind::KeyTensor).expect("a valid pattern");
        let (x, y) = (b.read(qd), b.read(kd));
        let eq = b.binary(BinaryOp::Eq, x, y).expect("a valid pattern");
        let p = b.finish(eq).expect("a valid pattern");
        assert_eq!(BucketJoin::find(&p), None);
        // An equality under `||` does not restrict who meets.
        let mut b = PatternBuilder::new("Or", "");
        let qd = b.declare("qd", InputKind::QueryTensor).expect("a valid pattern");
        let kd = b.declare("kd", InputKind::KeyTensor).expect("a valid pattern");
        let kp = b.declare("kp", InputKind::KeyTensor).expect("a valid pattern");
        let (x, y, z) = (b.read(qd), b.read(kd), b.read(kp));
        let eq = b.binary(BinaryOp::Eq, x, y).expect("a valid pattern");
        let zero = b.const_i32(0);
        let pos = b.binary(BinaryOp::Gt, z, zero).expect("a valid pattern");
        let or = b.binary(BinaryOp::Or, eq, pos).expect("a valid pattern");
        let p = b.finish(or).expect("a valid pattern");
        assert_eq!(BucketJoin::find(&p), None);
    }
}
