//! The key-block source: which key blocks a CTA visits, in ascending order,
//! each at most once. Candidates come from the closed-form spans of
//! `KeyRange` (evaluated per CTA) or from a scan of every block; each
//! candidate is then classified in the kernel, and Empty ones are skipped
//! without being loaded.

use inkwell::IntPredicate as IP;

use lacuna_ir::{KeyRange, KeySource, PatternIr};

use crate::cx::{Cx, IV};
use crate::error::{CodegenError, Result};
use crate::plan::KernelPlan;
use crate::predicate::{Predicate, TileRange};

/// Per-CTA candidate key blocks: the union of spans `[start, end)`.
pub(crate) struct KeyBlocks<'ctx> {
    spans: Vec<(IV<'ctx>, IV<'ctx>)>,
    /// Key blocks in total, `ceil(kv_len / block_k)`.
    pub k_blocks: IV<'ctx>,
}

/// Coefficients above this make the in-kernel magnitude check itself risk
/// i64 overflow; such (absurd) bounds fall back to a scan at compile time.
const MAX_COEF: i64 = 1 << 30;

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
}

/// The next key block to visit after `cursor`, classified.
pub(crate) struct NextBlock<'ctx> {
    /// Block index, or -1 when the CTA has no more key blocks.
    pub kb: IV<'ctx>,
    /// The tile is Partial: the element test must run.
    pub partial: IV<'ctx>,
    /// Where the search resumes.
    pub cursor: IV<'ctx>,
}

/// Walks candidates from `cursor`, classifying each, until a non-Empty one
/// (or the end). All threads compute the same answer (launch-uniform).
pub(crate) fn next_block<'ctx>(cx: &Cx<'_, 'ctx>, plan: &KernelPlan, keys: &KeyBlocks<'ctx>, pred: &Predicate<'_, 'ctx>, q: &TileRange<'ctx>, kv_len: IV<'ctx>, cursor: IV<'ctx>) -> Result<NextBlock<'ctx>> {
    let pre = cx.current();
    let (head, classify, found, exit) = (cx.block("next"), cx.block("next.classify"), cx.block("next.found"), cx.block("next.end"));
    cx.br(head)?;
    cx.at(head);
    let cur = cx.b.build_phi(cx.i32t(), "cursor")?;
    cur.add_incoming(&[(&cursor, pre)]);
    let cur_v = cur.as_basic_value().into_int_value();
    let cand = cx.next_candidate_named(keys, cur_v)?;
    let more = cx.icmp(IP::SLT, cand, keys.k_blocks)?;
    cx.cond_br(more, classify, exit)?;

    cx.at(classify);
    let bk = cx.i32(plan.block_k as i32);
    let k0 = cx.mul(cand, bk)?;
    let k1 = cx.sub(cx.smin(cx.add(k0, bk)?, kv_len)?, cx.i32(1))?;
    let class = pred.classify(cx, q, &TileRange { lo: k0, hi: k1, block: cand })?;
    let after = cx.add(cand, cx.i32(1))?;
    let classify_end = cx.current();
    cx.cond_br(class.may_true, found, head)?;
    cur.add_incoming(&[(&after, classify_end)]);

    cx.at(found);
    cx.br(exit)?;

    cx.at(exit);
    let kb = cx.phi(cx.i32t(), &[(cx.i32(-1).into(), head), (cand.into(), found)])?.into_int_value();
    let partial = cx.phi(cx.i1t(), &[(cx.bool(false).into(), head), (class.may_false.into(), found)])?.into_int_value();
    let cursor = cx.phi(cx.i32t(), &[(cand.into(), head), (after.into(), found)])?.into_int_value();
    Ok(NextBlock { kb, partial, cursor })
}

impl<'a, 'ctx> Cx<'a, 'ctx> {
    fn next_candidate_named(&self, keys: &KeyBlocks<'ctx>, cursor: IV<'ctx>) -> Result<IV<'ctx>> {
        let c = keys.next_candidate(self, cursor)?;
        Ok(crate::cx::named(c, "candidate"))
    }
}
