//! Thin typed wrappers over the NVVM (and generic LLVM) intrinsics the
//! kernels use. Every name is looked up with `Intrinsic::find`, so a
//! misspelling is a [`CodegenError::MissingIntrinsic`], never a silent
//! external call that only ptxas would catch. No policy lives here.

use inkwell::intrinsics::Intrinsic;
use inkwell::types::{BasicMetadataTypeEnum, BasicTypeEnum};
use inkwell::values::{BasicMetadataValueEnum, FunctionValue, PointerValue};

use lacuna_ir::Dtype;

use crate::cx::{Cx, BV, FV, IV};
use crate::error::{CodegenError, Result};

/// All lanes of a warp take part in every warp-level operation here.
const FULL_MASK: i32 = -1;

impl<'a, 'ctx> Cx<'a, 'ctx> {
    /// The declaration of intrinsic `name`, specialised on `overloads` when it is overloaded.
    pub fn intrinsic(&self, name: &str, overloads: &[BasicTypeEnum<'ctx>]) -> Result<FunctionValue<'ctx>> {
        let missing = || CodegenError::MissingIntrinsic { name: name.to_string() };
        let intr = Intrinsic::find(name).ok_or_else(missing)?;
        intr.get_declaration(self.module, overloads).ok_or_else(missing)
    }

    fn call(&self, f: FunctionValue<'ctx>, args: &[BV<'ctx>]) -> Result<Option<BV<'ctx>>> {
        let args: Vec<BasicMetadataValueEnum<'ctx>> = args.iter().map(|a| (*a).into()).collect();
        Ok(self.b.build_call(f, &args, "")?.try_as_basic_value().basic())
    }

    fn call_value(&self, name: &str, overloads: &[BasicTypeEnum<'ctx>], args: &[BV<'ctx>]) -> Result<BV<'ctx>> {
        let f = self.intrinsic(name, overloads)?;
        self.call(f, args)?.ok_or_else(|| CodegenError::Builder(format!("{name} returned no value")))
    }

    fn call_void(&self, name: &str, overloads: &[BasicTypeEnum<'ctx>], args: &[BV<'ctx>]) -> Result<()> {
        let f = self.intrinsic(name, overloads)?;
        self.call(f, args)?;
        Ok(())
    }

    fn sreg(&self, name: &str) -> Result<IV<'ctx>> {
        Ok(self.call_value(&format!("llvm.nvvm.read.ptx.sreg.{name}"), &[], &[])?.into_int_value())
    }

    // ---- special registers ----
    pub fn tid_x(&self) -> Result<IV<'ctx>> {
        self.sreg("tid.x")
    }
    pub fn ctaid(&self, axis: char) -> Result<IV<'ctx>> {
        self.sreg(&format!("ctaid.{axis}"))
    }
    /// The grid's size in CTAs along `axis`.
    pub fn nctaid(&self, axis: char) -> Result<IV<'ctx>> {
        self.sreg(&format!("nctaid.{axis}"))
    }

    /// A special register read that LLVM may not merge with an earlier read or
    /// hoist (volatile inline asm): recomputing a coordinate from it after the
    /// key-block loop keeps values derived from it from living across the loop.
    pub fn sreg_fresh(&self, reg: &str) -> Result<IV<'ctx>> {
        let ty = self.i32t().fn_type(&[], false);
        let asm = self.ctx.create_inline_asm(ty, format!("mov.u32 $0, %{reg};"), "=r".to_string(), true, false, None, false);
        Ok(self.b.build_indirect_call(ty, asm, &[], "")?.try_as_basic_value().basic().ok_or_else(|| CodegenError::Builder("inline asm returned no value".into()))?.into_int_value())
    }

    /// `c && (x CMP y)` on signed i32 as one `setp.CMP.and.s32` (an ISETP
    /// with a predicate input in SASS); `cmp` is a PTX comparison (`eq`,
    /// `ne`, `lt`, `le`, `gt`, `ge`). LLVM has no such node: an `and` of two
    /// compares that feeds a select reached ptxas as two selects.
    pub fn setp_and_s32(&self, cmp: &str, x: IV<'ctx>, y: IV<'ctx>, c: IV<'ctx>) -> Result<IV<'ctx>> {
        let i1 = self.ctx.bool_type();
        let ty = i1.fn_type(&[self.i32t().into(), self.i32t().into(), i1.into()], false);
        let asm = self.ctx.create_inline_asm(ty, format!("setp.{cmp}.and.s32 $0, $1, $2, $3;"), "=b,r,r,b".to_string(), false, false, None, false);
        Ok(self
            .b
            .build_indirect_call(ty, asm, &[x.into(), y.into(), c.into()], "")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| CodegenError::Builder("inline asm returned no value".into()))?
            .into_int_value())
    }

    // ---- synchronisation ----
    /// `bar.sync 0`: every thread of the CTA.
    pub fn barrier(&self) -> Result<()> {
        self.call_void("llvm.nvvm.barrier.cta.sync.aligned.all", &[], &[self.i32(0).into()])
    }

    /// `bar.red.or.pred 0`: `bar.sync 0` that also tells every thread
    /// whether any thread's `pred` (i1) held.
    pub fn barrier_or(&self, pred: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.call_value("llvm.nvvm.barrier.cta.red.or.aligned.all", &[], &[self.i32(0).into(), pred.into()])?.into_int_value())
    }

    /// `bar.warp.sync -1`: the warp's lanes, and their shared-memory writes.
    pub fn syncwarp(&self) -> Result<()> {
        self.call_void("llvm.nvvm.bar.warp.sync", &[], &[self.i32(-1).into()])
    }

    // ---- asynchronous copies (sm_80+) ----
    /// `cp.async.cg.shared.global [dst], [src], 16, src_size`: copies `src_size`
    /// bytes (0 or 16) and zero-fills the rest of the 16.
    pub fn cp_async_16(&self, dst: PointerValue<'ctx>, src: PointerValue<'ctx>, src_size: IV<'ctx>) -> Result<()> {
        self.call_void("llvm.nvvm.cp.async.cg.shared.global.16.s", &[], &[dst.into(), src.into(), src_size.into()])
    }
    /// `cp.async.ca.shared.global [dst], [src], 4`: one 4-byte word (both addresses 4-byte aligned).
    pub fn cp_async_4(&self, dst: PointerValue<'ctx>, src: PointerValue<'ctx>) -> Result<()> {
        self.call_void("llvm.nvvm.cp.async.ca.shared.global.4", &[], &[dst.into(), src.into()])
    }
    pub fn cp_async_commit(&self) -> Result<()> {
        self.call_void("llvm.nvvm.cp.async.commit.group", &[], &[])
    }
    /// Waits until at most `pending` committed groups are still in flight.
    pub fn cp_async_wait(&self, pending: u32) -> Result<()> {
        self.call_void("llvm.nvvm.cp.async.wait.group", &[], &[self.i32(pending as i32).into()])
    }

    // ---- TMA and mbarriers (sm_90), as inline asm: the PTX below is what
    // was checked through ptxas (docs/perf-log.md, TMA plan) ----
    /// Volatile inline asm with no result that may touch memory.
    fn asm_void(&self, text: &str, constraints: &str, args: &[BasicMetadataValueEnum<'ctx>]) -> Result<()> {
        let types: Vec<BasicMetadataTypeEnum<'ctx>> = args
            .iter()
            .map(|a| match a {
                BasicMetadataValueEnum::IntValue(i) => Ok(i.get_type().into()),
                BasicMetadataValueEnum::PointerValue(p) => Ok(p.get_type().into()),
                _ => Err(CodegenError::Builder("inline asm operands are integers or pointers".into())),
            })
            .collect::<Result<_>>()?;
        let ty = self.ctx.void_type().fn_type(&types, false);
        let asm = self.ctx.create_inline_asm(ty, text.to_string(), format!("{constraints},~{{memory}}"), true, false, None, false);
        self.b.build_indirect_call(ty, asm, args, "")?;
        Ok(())
    }

    /// The 32-bit shared-window address of a shared-memory pointer (what
    /// PTX's `[addr]` operands of the `.shared` forms take).
    pub fn shared_addr(&self, p: PointerValue<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_ptr_to_int(p, self.i32t(), "smem_addr")?)
    }

    /// `mbarrier.init.shared::cta.b64 [bar], count`.
    pub fn mbarrier_init(&self, bar: IV<'ctx>, count: u32) -> Result<()> {
        self.asm_void(&format!("mbarrier.init.shared::cta.b64 [$0], {count};"), "r", &[bar.into()])
    }

    /// `fence.mbarrier_init.release.cluster`: initialised barriers become
    /// visible to the async proxy (the TMA unit) before the first copy.
    pub fn fence_mbarrier_init(&self) -> Result<()> {
        self.asm_void("fence.mbarrier_init.release.cluster;", "", &[])
    }

    /// `mbarrier.arrive.expect_tx.shared::cta.b64 _, [bar], bytes`: this
    /// thread's arrival, and `bytes` more the phase waits for (0: the phase
    /// completes with the arrival alone).
    pub fn mbarrier_arrive_expect_tx(&self, bar: IV<'ctx>, bytes: IV<'ctx>) -> Result<()> {
        self.asm_void("mbarrier.arrive.expect_tx.shared::cta.b64 _, [$0], $1;", "r,r", &[bar.into(), bytes.into()])
    }

    /// Spins on `mbarrier.try_wait.parity.shared::cta.b64` until the phase
    /// of parity `parity` of `bar` has completed (each try suspends the
    /// thread for a while in hardware, so the loop is not a busy spin).
    pub fn mbarrier_wait(&self, bar: IV<'ctx>, parity: IV<'ctx>) -> Result<()> {
        let i1 = self.ctx.bool_type();
        let ty = i1.fn_type(&[self.i32t().into(), self.i32t().into()], false);
        let asm = self.ctx.create_inline_asm(
            ty,
            "mbarrier.try_wait.parity.shared::cta.b64 $0, [$1], $2;".to_string(),
            "=b,r,r,~{memory}".to_string(),
            true,
            false,
            None,
            false,
        );
        let (spin, done) = (self.block("mbarrier.wait"), self.block("mbarrier.done"));
        self.br(spin)?;
        self.at(spin);
        let ready = self
            .b
            .build_indirect_call(ty, asm, &[bar.into(), parity.into()], "")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| CodegenError::Builder("inline asm returned no value".into()))?
            .into_int_value();
        self.cond_br(ready, done, spin)?;
        self.at(done);
        Ok(())
    }

    /// `cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes`:
    /// the box at `coords` (innermost first) of the tensor map at `map` (a
    /// generic address of a grid-constant parameter) into shared memory at
    /// `dst`, counted as bytes on `bar`.
    pub fn tma_load_4d(&self, dst: IV<'ctx>, map: PointerValue<'ctx>, coords: [IV<'ctx>; 4], bar: IV<'ctx>) -> Result<()> {
        let [c0, c1, c2, c3] = coords;
        self.asm_void(
            "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [$0], [$1, {$2, $3, $4, $5}], [$6];",
            "r,l,r,r,r,r,r",
            &[dst.into(), map.into(), c0.into(), c1.into(), c2.into(), c3.into(), bar.into()],
        )
    }

    // ---- programmatic dependent launch (sm_90) ----
    /// `griddepcontrol.wait`: blocks until every grid this one was launched
    /// programmatically after has completed and its writes are visible. A
    /// no-op in a grid launched the ordinary way. The memory clobber keeps
    /// every later load (the block summaries) behind it.
    pub fn griddepcontrol_wait(&self) -> Result<()> {
        self.asm_void("griddepcontrol.wait;", "", &[])
    }

    /// `griddepcontrol.launch_dependents`: the grid launched programmatically
    /// after this one may be scheduled once every CTA of this one has
    /// executed this or exited (it still waits for this grid's writes in
    /// `griddepcontrol.wait`).
    pub fn griddepcontrol_launch_dependents(&self) -> Result<()> {
        self.asm_void("griddepcontrol.launch_dependents;", "", &[])
    }

    // ---- tensor cores ----
    /// `ldmatrix.sync.aligned.m8n8.x4[.trans].b16`: four 8x8 matrices; lane l
    /// supplies the address of row `l % 8` of matrix `l / 8`.
    pub fn ldmatrix_x4(&self, row_addr: PointerValue<'ctx>, trans: bool) -> Result<[IV<'ctx>; 4]> {
        let name = if trans {
            "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4.trans.b16"
        } else {
            "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4.b16"
        };
        let s = self.call_value(name, &[row_addr.get_type().into()], &[row_addr.into()])?.into_struct_value();
        let r = |i: u32| -> Result<IV<'ctx>> { Ok(self.b.build_extract_value(s, i, "")?.into_int_value()) };
        Ok([r(0)?, r(1)?, r(2)?, r(3)?])
    }

    /// `mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32`:
    /// D = A·B + C with A, B as packed pairs of halves in i32 registers.
    pub fn mma_m16n8k16(&self, dtype: Dtype, a: &[IV<'ctx>; 4], b: &[IV<'ctx>; 2], c: &[FV<'ctx>; 4]) -> Result<[FV<'ctx>; 4]> {
        let name = match dtype {
            Dtype::Bf16 => "llvm.nvvm.mma.m16n8k16.row.col.bf16",
            Dtype::F16 => "llvm.nvvm.mma.m16n8k16.row.col.f32.f32",
        };
        let f = self.intrinsic(name, &[])?;
        // The f16 form takes <2 x half> operands; the bf16 form takes i32. Bit-cast to whatever it declares.
        let params: Vec<BasicMetadataTypeEnum<'ctx>> = f.get_type().get_param_types();
        let mut args: Vec<BV<'ctx>> = Vec::with_capacity(10);
        for (i, v) in a.iter().chain(b.iter()).enumerate() {
            let want: BasicTypeEnum<'ctx> = params[i].try_into().map_err(|_| CodegenError::Builder(format!("{name}: odd parameter type")))?;
            args.push(if want == self.i32t().into() { (*v).into() } else { self.b.build_bit_cast(*v, want, "")? });
        }
        args.extend(c.iter().map(|v| BV::from(*v)));
        let s = self.call(f, &args)?.ok_or_else(|| CodegenError::Builder(format!("{name} returned no value")))?.into_struct_value();
        let r = |i: u32| -> Result<FV<'ctx>> { Ok(self.b.build_extract_value(s, i, "")?.into_float_value()) };
        Ok([r(0)?, r(1)?, r(2)?, r(3)?])
    }

    // ---- warp shuffles ----
    pub fn shfl_bfly_f32(&self, v: FV<'ctx>, lane_mask: i32) -> Result<FV<'ctx>> {
        let args = [self.i32(FULL_MASK).into(), v.into(), self.i32(lane_mask).into(), self.i32(0x1f).into()];
        Ok(self.call_value("llvm.nvvm.shfl.sync.bfly.f32", &[], &args)?.into_float_value())
    }
    pub fn shfl_bfly_i32(&self, v: IV<'ctx>, lane_mask: i32) -> Result<IV<'ctx>> {
        let args = [self.i32(FULL_MASK).into(), v.into(), self.i32(lane_mask).into(), self.i32(0x1f).into()];
        Ok(self.call_value("llvm.nvvm.shfl.sync.bfly.i32", &[], &args)?.into_int_value())
    }

    /// `vote.sync.ballot.b32`: bit l set when lane l's `pred` holds.
    pub fn ballot(&self, pred: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.call_value("llvm.nvvm.vote.ballot.sync", &[], &[self.i32(FULL_MASK).into(), pred.into()])?.into_int_value())
    }
    /// `popc.b32`: set bits of an i32.
    pub fn popc(&self, x: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.call_value("llvm.ctpop", &[self.i32t().into()], &[x.into()])?.into_int_value())
    }

    // ---- math ----
    /// `ex2.approx.ftz.f32`: 2^x, with 2^-inf = 0.
    pub fn ex2(&self, x: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.call_value("llvm.nvvm.ex2.approx.ftz", &[self.f32t().into()], &[x.into()])?.into_float_value())
    }
    /// `lg2.approx.ftz.f32`: for values that are never subnormal (a row's
    /// softmax sum is 0 or at least 1), without the subnormal rescale.
    pub fn lg2(&self, x: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.call_value("llvm.nvvm.lg2.approx.ftz.f", &[], &[x.into()])?.into_float_value())
    }
    /// `rcp.approx.ftz.f32` (1 ulp): where an IEEE division's slow-path
    /// check and branch would cost more than the value is worth (1 / l for
    /// an output in bf16 or fp16).
    pub fn rcp(&self, x: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.call_value("llvm.nvvm.rcp.approx.ftz.f", &[], &[x.into()])?.into_float_value())
    }
    pub fn fma(&self, a: FV<'ctx>, b: FV<'ctx>, c: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.call_value("llvm.fma", &[self.f32t().into()], &[a.into(), b.into(), c.into()])?.into_float_value())
    }
    /// IEEE maxNum (PTX `max.f32`): a NaN operand yields the other one.
    pub fn fmax(&self, a: FV<'ctx>, b: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.call_value("llvm.maxnum", &[self.f32t().into()], &[a.into(), b.into()])?.into_float_value())
    }
    /// IEEE minNum (PTX `min.f32`).
    pub fn fmin(&self, a: FV<'ctx>, b: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.call_value("llvm.minnum", &[self.f32t().into()], &[a.into(), b.into()])?.into_float_value())
    }
    pub fn fabs(&self, a: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.call_value("llvm.fabs", &[self.f32t().into()], &[a.into()])?.into_float_value())
    }
    /// f32 → i32 truncating toward zero, saturating, NaN → 0 (`cvt.rzi.sat.s32.f32`).
    pub fn fptosi_sat(&self, a: FV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.call_value("llvm.fptosi.sat", &[self.i32t().into(), self.f32t().into()], &[a.into()])?.into_int_value())
    }

    // ---- sm_90a warpgroup products (wgmma.rs issues the products themselves) ----
    /// `wgmma.fence.sync.aligned`: registers written before it are what the next wgmma reads.
    pub fn wgmma_fence(&self) -> Result<()> {
        self.call_void("llvm.nvvm.wgmma.fence.sync.aligned", &[], &[])
    }
    /// `wgmma.commit_group.sync.aligned`.
    pub fn wgmma_commit(&self) -> Result<()> {
        self.call_void("llvm.nvvm.wgmma.commit_group.sync.aligned", &[], &[])
    }
    /// `fence.proxy.async.shared::cta`: this thread's ordinary (and cp.async)
    /// writes to shared memory become visible to the async proxy (wgmma).
    pub fn fence_proxy_async_shared(&self) -> Result<()> {
        self.call_void("llvm.nvvm.fence.proxy.async.shared_cta", &[], &[])
    }

    /// Two f32 rounded to nearest into one register of two halves (`lo` in the low 16 bits).
    pub fn pack_half2(&self, dtype: Dtype, lo: FV<'ctx>, hi: FV<'ctx>) -> Result<IV<'ctx>> {
        let half = match dtype {
            Dtype::Bf16 => self.ctx.bf16_type(),
            Dtype::F16 => self.ctx.f16_type(),
        };
        let v2f32 = self.f32t().vec_type(2);
        let mut v = v2f32.get_undef();
        v = self.b.build_insert_element(v, lo, self.i32(0), "")?;
        v = self.b.build_insert_element(v, hi, self.i32(1), "")?;
        let h2 = self.b.build_float_trunc(v, half.vec_type(2), "")?;
        Ok(self.b.build_bit_cast(h2, self.i32t(), "")?.into_int_value())
    }
}
