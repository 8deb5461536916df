//! The emission context: one LLVM function being built, with short typed
//! helpers (arithmetic, blocks, loops, ifs) so the lowering reads like the
//! algorithm. It knows nothing about attention or patterns.

use inkwell::basic_block::BasicBlock;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::{BasicType, FloatType, IntType};
use inkwell::values::{BasicValue, BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};

use crate::error::Result;

pub(crate) type IV<'ctx> = IntValue<'ctx>;
pub(crate) type FV<'ctx> = FloatValue<'ctx>;
pub(crate) type BV<'ctx> = BasicValueEnum<'ctx>;

pub(crate) const GLOBAL: u16 = 1;
pub(crate) const SHARED: u16 = 3;

pub(crate) struct Cx<'a, 'ctx> {
    pub ctx: &'ctx Context,
    pub module: &'a Module<'ctx>,
    pub b: Builder<'ctx>,
    pub func: FunctionValue<'ctx>,
}

impl<'a, 'ctx> Cx<'a, 'ctx> {
    /// A context positioned at a fresh `entry` block of `func`.
    pub fn new(ctx: &'ctx Context, module: &'a Module<'ctx>, func: FunctionValue<'ctx>) -> Self {
        let b = ctx.create_builder();
        let entry = ctx.append_basic_block(func, "entry");
        b.position_at_end(entry);
        Self { ctx, module, b, func }
    }

    // ---- types and constants ----
    pub fn i1t(&self) -> IntType<'ctx> {
        self.ctx.bool_type()
    }
    pub fn i32t(&self) -> IntType<'ctx> {
        self.ctx.i32_type()
    }
    pub fn i64t(&self) -> IntType<'ctx> {
        self.ctx.i64_type()
    }
    pub fn f32t(&self) -> FloatType<'ctx> {
        self.ctx.f32_type()
    }
    pub fn i32(&self, v: i32) -> IV<'ctx> {
        self.i32t().const_int(v as i64 as u64, true)
    }
    pub fn i64(&self, v: i64) -> IV<'ctx> {
        self.i64t().const_int(v as u64, true)
    }
    pub fn bool(&self, v: bool) -> IV<'ctx> {
        self.i1t().const_int(v as u64, false)
    }
    pub fn f32(&self, v: f32) -> FV<'ctx> {
        self.f32t().const_float(v as f64)
    }

    // ---- integer arithmetic (wrapping; operands of equal width) ----
    pub fn add(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_add(a, b, "")?)
    }
    pub fn sub(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_sub(a, b, "")?)
    }
    pub fn mul(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_mul(a, b, "")?)
    }
    /// Signed division; the caller guarantees a non-zero divisor and no MIN / -1.
    pub fn sdiv(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_signed_div(a, b, "")?)
    }
    pub fn srem(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_signed_rem(a, b, "")?)
    }
    pub fn udiv(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_unsigned_div(a, b, "")?)
    }
    pub fn urem(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_unsigned_rem(a, b, "")?)
    }
    pub fn and(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_and(a, b, "")?)
    }
    pub fn or(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_or(a, b, "")?)
    }
    pub fn xor(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_xor(a, b, "")?)
    }
    pub fn not(&self, a: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_not(a, "")?)
    }
    pub fn shl(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_left_shift(a, b, "")?)
    }
    pub fn lshr(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_right_shift(a, b, false, "")?)
    }
    pub fn icmp(&self, p: IntPredicate, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_compare(p, a, b, "")?)
    }
    pub fn smin(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        let lt = self.icmp(IntPredicate::SLT, a, b)?;
        self.select_int(lt, a, b)
    }
    pub fn smax(&self, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        let gt = self.icmp(IntPredicate::SGT, a, b)?;
        self.select_int(gt, a, b)
    }
    pub fn sext64(&self, a: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_s_extend(a, self.i64t(), "")?)
    }
    pub fn zext(&self, a: IV<'ctx>, to: IntType<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_z_extend(a, to, "")?)
    }
    pub fn trunc(&self, a: IV<'ctx>, to: IntType<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_int_truncate(a, to, "")?)
    }

    // ---- float arithmetic (no fast-math flags, so no contraction) ----
    pub fn fadd(&self, a: FV<'ctx>, b: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.b.build_float_add(a, b, "")?)
    }
    pub fn fsub(&self, a: FV<'ctx>, b: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.b.build_float_sub(a, b, "")?)
    }
    pub fn fmul(&self, a: FV<'ctx>, b: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.b.build_float_mul(a, b, "")?)
    }
    pub fn fdiv(&self, a: FV<'ctx>, b: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.b.build_float_div(a, b, "")?)
    }
    pub fn fneg(&self, a: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.b.build_float_neg(a, "")?)
    }
    pub fn fcmp(&self, p: FloatPredicate, a: FV<'ctx>, b: FV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_float_compare(p, a, b, "")?)
    }
    pub fn sitofp(&self, a: IV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.b.build_signed_int_to_float(a, self.f32t(), "")?)
    }

    // ---- selects ----
    pub fn select_int(&self, c: IV<'ctx>, a: IV<'ctx>, b: IV<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.b.build_select(c, a, b, "")?.into_int_value())
    }
    pub fn select_f32(&self, c: IV<'ctx>, a: FV<'ctx>, b: FV<'ctx>) -> Result<FV<'ctx>> {
        Ok(self.b.build_select(c, a, b, "")?.into_float_value())
    }

    // ---- memory ----
    /// `base + index` elements of `elem` (an address computation, no load).
    pub fn gep(&self, elem: impl BasicType<'ctx>, base: PointerValue<'ctx>, index: IV<'ctx>) -> Result<PointerValue<'ctx>> {
        // SAFETY: GEP only computes an address; every index the lowering passes
        // stays inside the tensor the runtime checked against the manifest.
        Ok(unsafe { self.b.build_gep(elem, base, &[index], "")? })
    }
    pub fn byte_gep(&self, base: PointerValue<'ctx>, offset: IV<'ctx>) -> Result<PointerValue<'ctx>> {
        self.gep(self.ctx.i8_type(), base, offset)
    }
    pub fn load(&self, ty: impl BasicType<'ctx>, ptr: PointerValue<'ctx>) -> Result<BV<'ctx>> {
        Ok(self.b.build_load(ty, ptr, "")?)
    }
    pub fn load_i32(&self, ptr: PointerValue<'ctx>) -> Result<IV<'ctx>> {
        Ok(self.load(self.i32t(), ptr)?.into_int_value())
    }
    pub fn store(&self, ptr: PointerValue<'ctx>, v: impl BasicValue<'ctx>) -> Result<()> {
        self.b.build_store(ptr, v)?;
        Ok(())
    }

    // ---- control flow ----
    pub fn block(&self, name: &str) -> BasicBlock<'ctx> {
        self.ctx.append_basic_block(self.func, name)
    }
    pub fn current(&self) -> BasicBlock<'ctx> {
        // The builder is always positioned by construction (see `new`).
        self.b.get_insert_block().unwrap_or_else(|| self.func.get_last_basic_block().expect("function has an entry block"))
    }
    pub fn br(&self, to: BasicBlock<'ctx>) -> Result<()> {
        self.b.build_unconditional_branch(to)?;
        Ok(())
    }
    pub fn cond_br(&self, c: IV<'ctx>, then: BasicBlock<'ctx>, otherwise: BasicBlock<'ctx>) -> Result<()> {
        self.b.build_conditional_branch(c, then, otherwise)?;
        Ok(())
    }
    pub fn at(&self, block: BasicBlock<'ctx>) {
        self.b.position_at_end(block);
    }

    /// Runs `then` only when `c` holds; for side effects (stores).
    pub fn if_then(&self, c: IV<'ctx>, name: &str, then: impl FnOnce(&Self) -> Result<()>) -> Result<()> {
        let (t, join) = (self.block(name), self.block(&format!("{name}.end")));
        self.cond_br(c, t, join)?;
        self.at(t);
        then(self)?;
        self.br(join)?;
        self.at(join);
        Ok(())
    }

    /// `if c { then(values) } else { values }`, merged by phis: a uniform
    /// branch around a block of straight-line code that rewrites values.
    pub fn if_then_values(
        &self,
        c: IV<'ctx>,
        name: &str,
        values: Vec<BV<'ctx>>,
        then: impl FnOnce(&Self, &[BV<'ctx>]) -> Result<Vec<BV<'ctx>>>,
    ) -> Result<Vec<BV<'ctx>>> {
        let before = self.current();
        let (t, join) = (self.block(name), self.block(&format!("{name}.end")));
        self.cond_br(c, t, join)?;
        self.at(t);
        let changed = then(self, &values)?;
        let t_end = self.current();
        self.br(join)?;
        self.at(join);
        values
            .iter()
            .zip(&changed)
            .map(|(old, new)| {
                let phi = self.b.build_phi(old.get_type(), "")?;
                phi.add_incoming(&[(old, before), (new, t_end)]);
                Ok(phi.as_basic_value())
            })
            .collect()
    }

    /// `for i in start..end` (i32) carrying `init` around the loop; returns the
    /// carried values after the last iteration. The body may build blocks.
    pub fn for_range(
        &self,
        start: IV<'ctx>,
        end: IV<'ctx>,
        init: Vec<BV<'ctx>>,
        name: &str,
        body: impl FnOnce(&Self, IV<'ctx>, &[BV<'ctx>]) -> Result<Vec<BV<'ctx>>>,
    ) -> Result<Vec<BV<'ctx>>> {
        self.for_range_by(start, end, self.i32(1), init, name, body)
    }

    /// `for (i = start; i < end; i += step)` (i32) with nothing carried.
    pub fn for_range_step(&self, start: IV<'ctx>, end: IV<'ctx>, step: IV<'ctx>, name: &str, body: impl FnOnce(&Self, IV<'ctx>) -> Result<()>) -> Result<()> {
        self.for_range_by(start, end, step, Vec::new(), name, |cx, i, _| body(cx, i).map(|()| Vec::new()))?;
        Ok(())
    }

    fn for_range_by(
        &self,
        start: IV<'ctx>,
        end: IV<'ctx>,
        step: IV<'ctx>,
        init: Vec<BV<'ctx>>,
        name: &str,
        body: impl FnOnce(&Self, IV<'ctx>, &[BV<'ctx>]) -> Result<Vec<BV<'ctx>>>,
    ) -> Result<Vec<BV<'ctx>>> {
        let pre = self.current();
        let (head, bodyb, exit) = (self.block(name), self.block(&format!("{name}.body")), self.block(&format!("{name}.end")));
        self.br(head)?;
        self.at(head);
        let i = self.b.build_phi(self.i32t(), "")?;
        let phis = init.iter().map(|v| self.b.build_phi(v.get_type(), "")).collect::<Result<Vec<_>, _>>()?;
        i.add_incoming(&[(&start, pre)]);
        for (phi, v) in phis.iter().zip(&init) {
            phi.add_incoming(&[(v, pre)]);
        }
        let iv = i.as_basic_value().into_int_value();
        let go = self.icmp(IntPredicate::SLT, iv, end)?;
        self.cond_br(go, bodyb, exit)?;
        self.at(bodyb);
        let carried: Vec<BV<'ctx>> = phis.iter().map(|p| p.as_basic_value()).collect();
        let next = body(self, iv, &carried)?;
        let next_i = self.add(iv, step)?;
        let latch = self.current();
        self.br(head)?;
        i.add_incoming(&[(&next_i, latch)]);
        for (phi, v) in phis.iter().zip(&next) {
            phi.add_incoming(&[(v, latch)]);
        }
        self.at(exit);
        Ok(carried)
    }

    /// `*ptr |= v` as one atomic operation (i32; `atom.shared.or` on a
    /// shared-memory pointer), ordered with nothing else: a barrier orders it.
    pub fn atomic_or(&self, ptr: PointerValue<'ctx>, v: IV<'ctx>) -> Result<()> {
        self.b.build_atomicrmw(inkwell::AtomicRMWBinOp::Or, ptr, v, inkwell::AtomicOrdering::Monotonic)?;
        Ok(())
    }

    pub fn phi(&self, ty: impl BasicType<'ctx>, incoming: &[(BV<'ctx>, BasicBlock<'ctx>)]) -> Result<BV<'ctx>> {
        let phi = self.b.build_phi(ty, "")?;
        for (v, bb) in incoming {
            phi.add_incoming(&[(v, *bb)]);
        }
        Ok(phi.as_basic_value())
    }

    pub fn ret_void(&self) -> Result<()> {
        self.b.build_return(None)?;
        Ok(())
    }
}

/// Gives an SSA value a name in the printed IR (readability only).
pub(crate) fn named<'ctx, V: BasicValue<'ctx>>(v: V, name: &str) -> V {
    v.as_basic_value_enum().set_name(name);
    v
}
