//! The key-block source: which key blocks a CTA visits, in ascending order,
//! each at most once. Candidates come from the closed-form spans of
//! `KeyRange` (evaluated per CTA) or from a scan of every block.
//!
//! Candidates are classified in parallel, a chunk of `KernelPlan::key_chunk`
//! consecutive blocks at a time (one or more per thread, in rounds of
//! `threads` blocks), and the non-Empty ones are compacted
//! with their class into a list in shared memory (warp ballot, then a prefix
//! over the warps, so the list stays in ascending order) and ended by -1.
//! The pipeline then walks the list, reading each entry one call ahead so
//! the shared-memory latency is off its path; a chunk is classified again
//! only when the walk reaches the -1. Empty blocks are never loaded.

use inkwell::IntPredicate as IP;

use lacuna_ir::{KeyRange, KeySource, PatternIr};

use inkwell::values::PointerValue;

use crate::cx::{named, Cx, IV};
use crate::error::{CodegenError, Result};
use crate::plan::KernelPlan;
use crate::predicate::{Predicate, TileRange};

/// Per-CTA candidate key blocks: the union of spans `[start, end)`.
pub(crate) struct KeyBlocks<'ctx> {
    spans: Vec<(IV<'ctx>, IV<'ctx>)>,
    /// Key blocks in total, `ceil(kv_len / block_k)`.
    pub k_blocks: IV<'ctx>,
}

/// Where the CTA's key-block list lives and who builds it.
pub(crate) struct KeyList<'ctx> {
    /// Up to `key_chunk` i32 entries `kb << c | undecided` (c: the predicate's
    /// conjunct count, undecided: [`TileClass::undecided`](crate::predicate::TileClass)),
    /// ascending in kb, then -1.
    pub list: PointerValue<'ctx>,
    /// One i32 per (round, warp): how many entries the warp contributed;
    /// then the first block of the next chunk to classify (`k_blocks` when
    /// none is left), kept here rather than in a register the loop needs.
    pub counts: PointerValue<'ctx>,
    pub warps: u32,
    pub rounds: u32,
    pub tid: IV<'ctx>,
    pub lane: IV<'ctx>,
    pub warp: IV<'ctx>,
}

/// Coefficients above this make the in-kernel magnitude check itself risk
/// i64 overflow; such (absurd) bounds fall back to a scan at compile time.
const MAX_COEF: i64 = 1 << 30;

impl<'ctx> KeyList<'ctx> {
    fn next_ptr(&self, cx: &Cx<'_, 'ctx>) -> Result<PointerValue<'ctx>> {
        cx.gep(cx.i32t(), self.counts, cx.i32((self.rounds * self.warps) as i32))
    }
}

/// The walk's position, carried through the key-block loop (launch-uniform).
#[derive(Clone, Copy)]
pub(crate) struct ListCursor<'ctx> {
    /// Index of `ahead` in the list.
    pub pos: IV<'ctx>,
    /// The list entry at `pos`, already read: `kb << c | undecided`, or -1 at
    /// the end of the list (classify the next chunk, if any).
    pub ahead: IV<'ctx>,
}

impl<'ctx> ListCursor<'ctx> {
    pub fn values(&self) -> [IV<'ctx>; 2] {
        [self.pos, self.ahead]
    }
    pub fn from_values(v: [IV<'ctx>; 2]) -> Self {
        Self { pos: v[0], ahead: v[1] }
    }
}

impl<'ctx> KeyBlocks<'ctx> {
    /// Evaluates the spans for query rows `q.lo..=q.hi` (launch-uniform code,
    /// emitted once per CTA).
    #[allow(clippy::too_many_arguments)]
    pub fn new(cx: &Cx<'_, 'ctx>, p: &PatternIr, plan: &KernelPlan, pred: &Predicate<'_, 'ctx>, q: &TileRange<'ctx>, q_len: IV<'ctx>, kv_len: IV<'ctx>, k_blocks: IV<'ctx>) -> Result<Self> {
        let everything = || Self { spans: vec![(cx.i32(0), k_blocks)], k_blocks };
        let range = match &plan.key_source {
            KeySource::Scan => return Ok(everything()),
            KeySource::Range(_) => KeyRange::derive(p).ok_or_else(|| CodegenError::NoKeyRange { pattern: p.name().to_string() })?,
        };
        let statically_ok = range.spans.iter().flat_map(|s| s.lower.iter().chain(&s.upper)).all(|b| {
            b.q_coef.abs() <= MAX_COEF && b.constant.abs() <= MAX_COEF && b.terms.iter().all(|(c, t)| c.abs() <= MAX_COEF && pred.uniform_i32(*t).is_some())
        });
        if !statically_ok {
            return Ok(everything());
        }
        let bk = cx.i64(plan.block_k as i64);
        // As KeyRange::key_blocks: the bounds are exact only if no i32 arithmetic in the
        // predicate can wrap, i.e. every bound's magnitude stays below i32::MAX.
        let limit = cx.mul(cx.sext64(cx.smax(q_len, kv_len)?)?, cx.i64(2))?;
        let cap = cx.i64(i32::MAX as i64);
        let mut ok = cx.bool(true);
        let mut spans = Vec::new();
        for span in &range.spans {
            let mut lo = cx.i64(0);
            let mut hi = cx.sub(cx.sext64(kv_len)?, cx.i64(1))?;
            for (bound, is_lower) in span.lower.iter().map(|b| (b, true)).chain(span.upper.iter().map(|b| (b, false))) {
                let mut magnitude = cx.add(cx.mul(cx.i64(bound.q_coef.abs()), limit)?, limit)?;
                magnitude = cx.add(magnitude, cx.i64(bound.constant.abs()))?;
                let mut rest = cx.i64(bound.constant);
                for (coef, term) in &bound.terms {
                    let t = cx.sext64(pred.uniform_i32(*term).expect("checked above"))?;
                    let abs_t = cx.smax(t, cx.sub(cx.i64(0), t)?)?;
                    // Saturate so the running sum cannot overflow.
                    magnitude = cx.smin(cx.add(magnitude, cx.mul(cx.i64(coef.abs()), abs_t)?)?, cap)?;
                    rest = cx.add(rest, cx.mul(cx.i64(*coef), t)?)?;
                }
                ok = cx.and(ok, cx.icmp(IP::SLT, magnitude, cap)?)?;
                // The loosest value over the block's rows.
                let qv = if (bound.q_coef >= 0) == is_lower { q.lo } else { q.hi };
                let v = cx.add(cx.mul(cx.i64(bound.q_coef), cx.sext64(qv)?)?, rest)?;
                if is_lower {
                    lo = cx.smax(lo, v)?;
                } else {
                    hi = cx.smin(hi, v)?;
                }
            }
            // lo >= 0 and hi <= kv_len - 1 here, so the divisions are of non-negative values.
            let nonempty = cx.icmp(IP::SLE, lo, hi)?;
            let start = cx.sdiv(lo, bk)?;
            let end = cx.add(cx.sdiv(cx.smax(hi, cx.i64(0))?, bk)?, cx.i64(1))?;
            let end = cx.select_int(nonempty, end, cx.i64(0))?;
            let end = cx.trunc(cx.smin(end, cx.sext64(k_blocks)?)?, cx.i32t())?;
            let start = cx.trunc(cx.smin(start, cx.i64(i32::MAX as i64))?, cx.i32t())?;
            spans.push((start, end));
        }
        // Wrapping possible: every key block is a candidate.
        let spans = spans
            .into_iter()
            .enumerate()
            .map(|(i, (s, e))| {
                let (fs, fe) = if i == 0 { (cx.i32(0), k_blocks) } else { (cx.i32(0), cx.i32(0)) };
                Ok((cx.select_int(ok, s, fs)?, cx.select_int(ok, e, fe)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { spans, k_blocks })
    }

    /// The candidates of split `split` of `splits` (the split-KV entry):
    /// each span cut to the key blocks `[at(o_s), at(o_s+1))`, where `at(o)`
    /// is the o-th candidate in ascending order (`k_blocks` past the last)
    /// and `o_s = s · total / splits` its ordinal, so the splits share the
    /// candidates evenly and, whatever the spans, every candidate falls in
    /// exactly one split: the cuts are ascending block indices. The ordinal
    /// walk runs over a sorted, disjoint copy of the spans (sorted by start,
    /// each clipped to begin where the one before ended); a scan's single
    /// span `[0, k_blocks)` splits evenly by index.
    pub fn split(self, cx: &Cx<'_, 'ctx>, split: IV<'ctx>, splits: IV<'ctx>) -> Result<Self> {
        let k_blocks = self.k_blocks;
        let mut sorted: Vec<(IV<'ctx>, IV<'ctx>)> = Vec::with_capacity(self.spans.len());
        for &(start, end) in &self.spans {
            let end = cx.smin(end, k_blocks)?;
            sorted.push((start, cx.smax(end, start)?));
        }
        for i in 1..sorted.len() {
            for j in (1..=i).rev() {
                let (a, b) = (sorted[j - 1], sorted[j]);
                let swap = cx.icmp(IP::SLT, b.0, a.0)?;
                sorted[j - 1] = (cx.select_int(swap, b.0, a.0)?, cx.select_int(swap, b.1, a.1)?);
                sorted[j] = (cx.select_int(swap, a.0, b.0)?, cx.select_int(swap, a.1, b.1)?);
            }
        }
        // Disjoint, with each span's ordinal of its first candidate.
        let (mut reach, mut total) = (cx.i32(0), cx.i32(0));
        let mut walk = Vec::with_capacity(sorted.len());
        for (start, end) in sorted {
            let start = cx.smax(start, reach)?;
            let end = cx.smax(end, start)?;
            walk.push((start, end, total));
            total = cx.add(total, cx.sub(end, start)?)?;
            reach = end;
        }
        let at = |o: IV<'ctx>| -> Result<IV<'ctx>> {
            let mut block = k_blocks;
            for &(start, end, before) in &walk {
                let inside = cx.and(cx.icmp(IP::SGE, o, before)?, cx.icmp(IP::SLT, o, cx.add(before, cx.sub(end, start)?)?)?)?;
                block = cx.select_int(inside, cx.add(start, cx.sub(o, before)?)?, block)?;
            }
            Ok(block)
        };
        // s · total / splits in i64: total is at most k_blocks.
        let splits = cx.smax(splits, cx.i32(1))?;
        let ordinal = |s: IV<'ctx>| -> Result<IV<'ctx>> {
            let o = cx.sdiv(cx.mul(cx.sext64(s)?, cx.sext64(total)?)?, cx.sext64(splits)?)?;
            cx.trunc(o, cx.i32t())
        };
        let lo = at(ordinal(split)?)?;
        let hi = at(ordinal(cx.add(split, cx.i32(1))?)?)?;
        let spans = self
            .spans
            .iter()
            .map(|&(start, end)| Ok((cx.smax(start, lo)?, cx.smin(end, hi)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { spans, k_blocks })
    }

    /// The smallest candidate block `>= cursor`, or `k_blocks` when none is left.
    /// Taking the minimum over spans merges overlaps and skips gaps.
    pub fn next_candidate(&self, cx: &Cx<'_, 'ctx>, cursor: IV<'ctx>) -> Result<IV<'ctx>> {
        let mut best = self.k_blocks;
        for &(start, end) in &self.spans {
            let c = cx.smax(start, cursor)?;
            let inside = cx.icmp(IP::SLT, c, end)?;
            best = cx.smin(best, cx.select_int(inside, c, self.k_blocks)?)?;
        }
        Ok(best)
    }

    /// One past the last candidate block: the largest span end, at most `k_blocks`.
    fn candidates_end(&self, cx: &Cx<'_, 'ctx>) -> Result<IV<'ctx>> {
        let mut end = cx.i32(0);
        for &(_, e) in &self.spans {
            end = cx.smax(end, e)?;
        }
        cx.smin(end, self.k_blocks)
    }

    /// Whether block `kb` is a candidate (inside some span and below `k_blocks`).
    fn contains(&self, cx: &Cx<'_, 'ctx>, kb: IV<'ctx>) -> Result<IV<'ctx>> {
        let mut any = cx.bool(false);
        for &(start, end) in &self.spans {
            any = cx.or(any, cx.and(cx.icmp(IP::SGE, kb, start)?, cx.icmp(IP::SLT, kb, end)?)?)?;
        }
        cx.and(any, cx.icmp(IP::SLT, kb, self.k_blocks)?)
    }

    /// The walk's start: at the end of an empty list, the first chunk at the
    /// first candidate. Every thread stores the same value and reads back
    /// its own store (or an identical one), so no barrier is needed.
    pub fn start(&self, cx: &Cx<'_, 'ctx>, kl: &KeyList<'ctx>) -> Result<ListCursor<'ctx>> {
        cx.store(kl.next_ptr(cx)?, self.next_candidate(cx, cx.i32(0))?)?;
        Ok(ListCursor { pos: cx.i32(0), ahead: cx.i32(-1) })
    }
}

/// The next key block to visit, classified.
pub(crate) struct NextBlock<'ctx> {
    /// Block index, or -1 when the CTA has no more key blocks.
    pub kb: IV<'ctx>,
    /// The conjuncts the element test must evaluate on this tile (bit i:
    /// conjunct i may be false); nonzero exactly for Partial tiles. An i1
    /// when the predicate is one conjunct, else an i32.
    pub undecided: IV<'ctx>,
    /// Where the walk resumes.
    pub cursor: ListCursor<'ctx>,
}

/// Whether a block's `undecided` (see [`NextBlock::undecided`], i1 or i32)
/// marks a Partial tile, which runs the element test.
pub(crate) fn is_partial<'ctx>(cx: &Cx<'_, 'ctx>, undecided: IV<'ctx>) -> Result<IV<'ctx>> {
    cx.icmp(IP::NE, undecided, undecided.get_type().const_zero())
}

/// Hands out the next list entry, refilling the list from the next chunk of
/// candidates when it is used up. Every thread of the CTA must call it at the
/// same point (a refill has barriers); all get the same answer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn next_block<'ctx>(
    cx: &Cx<'_, 'ctx>,
    plan: &KernelPlan,
    keys: &KeyBlocks<'ctx>,
    kl: &KeyList<'ctx>,
    pred: &Predicate<'_, 'ctx>,
    q: &TileRange<'ctx>,
    kv_len: IV<'ctx>,
    cursor: ListCursor<'ctx>,
) -> Result<NextBlock<'ctx>> {
    let pre = cx.current();
    let (head, take, check, refill, exit) =
        (cx.block("next"), cx.block("next.take"), cx.block("next.check"), cx.block("next.refill"), cx.block("next.end"));
    cx.br(head)?;
    cx.at(head);
    let pos_phi = cx.b.build_phi(cx.i32t(), "list_pos")?;
    let ahead_phi = cx.b.build_phi(cx.i32t(), "list_ahead")?;
    pos_phi.add_incoming(&[(&cursor.pos, pre)]);
    ahead_phi.add_incoming(&[(&cursor.ahead, pre)]);
    let pos = pos_phi.as_basic_value().into_int_value();
    let ahead = ahead_phi.as_basic_value().into_int_value();
    cx.cond_br(cx.icmp(IP::SGE, ahead, cx.i32(0))?, take, check)?;

    // An entry is left: hand it out, and read the one after it for the next call.
    cx.at(take);
    let bits = pred.conjunct_count() as i32;
    let take_kb = cx.lshr(ahead, cx.i32(bits))?;
    let low = cx.and(ahead, cx.i32((1 << bits) - 1))?;
    // One conjunct: an i1, which the loop carries in a predicate register
    // (the mma.sync D=128 kernels have no general register to spare).
    let take_undecided = if bits == 1 { cx.icmp(IP::NE, low, cx.i32(0))? } else { low };
    let take_pos = cx.add(pos, cx.i32(1))?;
    let take_ahead = cx.load_i32(cx.gep(cx.i32t(), kl.list, take_pos)?)?;
    cx.br(exit)?;

    cx.at(check);
    let next = named(cx.load_i32(kl.next_ptr(cx)?)?, "chunk");
    cx.cond_br(cx.icmp(IP::SLT, next, keys.k_blocks)?, refill, exit)?;

    // Classify blocks next .. next + chunk - 1: round r, thread t takes next + r * threads + t.
    cx.at(refill);
    // Every thread has read the entries it needs from the old list.
    cx.barrier()?;
    let threads = plan.threads() as i32;
    let bk = cx.i32(plan.block_k as i32);
    let below = cx.sub(cx.shl(cx.i32(1), kl.lane)?, cx.i32(1))?;
    // All rounds are classified before any ballot, so their summary loads
    // are in flight together. A round that starts past the last candidate
    // (the chunk covers 16K keys; a 4K problem, or a window's few dozen
    // blocks, fill one round of it) is skipped under a uniform branch.
    let candidates_end = keys.candidates_end(cx)?;
    let mut classes = Vec::new();
    for r in 0..kl.rounds as i32 {
        let classify = |cx: &Cx<'_, 'ctx>| -> Result<(IV<'ctx>, IV<'ctx>)> {
            let kb = named(cx.add(next, cx.add(kl.tid, cx.i32(r * threads))?)?, "chunk_kb");
            let cand = keys.contains(cx, kb)?;
            // Past the end the summaries must still be read in bounds; the result is discarded.
            let kb_safe = cx.smin(kb, cx.sub(keys.k_blocks, cx.i32(1))?)?;
            let k0 = cx.mul(kb_safe, bk)?;
            let k1 = cx.sub(cx.smin(cx.add(k0, bk)?, kv_len)?, cx.i32(1))?;
            let class = pred.classify(cx, q, &TileRange { lo: k0, hi: k1, block: kb_safe })?;
            let keep = cx.and(cand, class.may_true)?;
            let entry = cx.or(cx.shl(kb, cx.i32(pred.conjunct_count() as i32))?, class.undecided)?;
            Ok((keep, entry))
        };
        if r == 0 {
            classes.push(classify(cx)?);
            continue;
        }
        let needed = cx.icmp(IP::SLT, cx.add(next, cx.i32(r * threads))?, candidates_end)?;
        let out = cx.if_then_values(needed, "chunk.round", vec![cx.bool(false).into(), cx.i32(0).into()], |cx, _| {
            let (keep, entry) = classify(cx)?;
            Ok(vec![keep.into(), entry.into()])
        })?;
        classes.push((out[0].into_int_value(), out[1].into_int_value()));
    }
    let mut rounds = Vec::new();
    for (r, (keep, entry)) in classes.into_iter().enumerate() {
        let votes = cx.ballot(keep)?;
        let rank = cx.popc(cx.and(votes, below)?)?;
        let slot = cx.add(kl.warp, cx.i32(r as i32 * plan.warps as i32))?;
        cx.if_then(cx.icmp(IP::EQ, kl.lane, cx.i32(0))?, "list.count", |cx| cx.store(cx.gep(cx.i32t(), kl.counts, slot)?, cx.popc(votes)?))?;
        rounds.push((keep, rank, entry));
    }
    cx.barrier()?;
    // Round r's entries follow all of round r - 1's; inside a round, warp order, then lane order.
    let mut total = cx.i32(0);
    for (r, (keep, rank, entry)) in rounds.into_iter().enumerate() {
        let mut before = total;
        for w in 0..plan.warps as i32 {
            let c = cx.load_i32(cx.gep(cx.i32t(), kl.counts, cx.i32(r as i32 * plan.warps as i32 + w))?)?;
            before = cx.add(before, cx.select_int(cx.icmp(IP::SLT, cx.i32(w), kl.warp)?, c, cx.i32(0))?)?;
            total = cx.add(total, c)?;
        }
        cx.if_then(keep, "list.put", |cx| cx.store(cx.gep(cx.i32t(), kl.list, cx.add(before, rank)?)?, entry))?;
    }
    // Every thread read the old list and chunk start before the first barrier above.
    // All store the same end marker and chunk start.
    cx.store(cx.gep(cx.i32t(), kl.list, total)?, cx.i32(-1))?;
    cx.store(kl.next_ptr(cx)?, keys.next_candidate(cx, cx.add(next, cx.i32(plan.key_chunk() as i32))?)?)?;
    cx.barrier()?;
    let first = cx.load_i32(kl.list)?;
    let refill_end = cx.current();
    cx.br(head)?;
    pos_phi.add_incoming(&[(&cx.i32(0), refill_end)]);
    ahead_phi.add_incoming(&[(&first, refill_end)]);

    cx.at(exit);
    let kb = cx.phi(cx.i32t(), &[(take_kb.into(), take), (cx.i32(-1).into(), check)])?.into_int_value();
    let none = take_undecided.get_type().const_zero();
    let undecided = cx.phi(take_undecided.get_type(), &[(take_undecided.into(), take), (none.into(), check)])?.into_int_value();
    let pos = cx.phi(cx.i32t(), &[(take_pos.into(), take), (pos.into(), check)])?.into_int_value();
    let ahead = cx.phi(cx.i32t(), &[(take_ahead.into(), take), (ahead.into(), check)])?.into_int_value();
    Ok(NextBlock { kb, undecided, cursor: ListCursor { pos, ahead } })
}
