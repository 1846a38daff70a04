//! The only module that speaks to LLVM (through inkwell).
//!
//! It parses the stdlib bitcode, defines the `cilc_classify` it declares from
//! the plan (one block per diagram node, per part; leaves record the
//! earliest term), inlines it into `cilc_decide` (one BPF function that the
//! three entries call), optimises (O1) and
//! emits a BPF (v4, little-endian: long jumps for large programs) object with the manifest in its own
//! section.

use std::collections::HashMap;
use std::ffi::{c_char, CStr};

use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::basic_block::BasicBlock;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::{Linkage, Module};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetTriple,
};
use inkwell::types::IntType;
use inkwell::values::{AsValueRef, BasicValue, FunctionValue, IntValue, PointerValue};
use inkwell::{IntPredicate, OptimizationLevel};

use super::region::{self, Region};
use super::{AtomCode, DiagramPlan, HookPlan, CHAIN_DROP, NO_POLICY};
use crate::tree::{Field, Node, NodeId, Side, TermId, FIELDS};

/// Byte offsets in `struct cilc_ctx` (stdlib-bpf/cilc.h asserts them).
mod layout {
    pub const SRC: u64 = 0;
    pub const DST: u64 = 16;
    pub const PROTO: u64 = 32;
    pub const SPORT: u64 = 36;
    pub const DPORT: u64 = 40;
    pub const ICMP_TYPE: u64 = 44;
    pub const ICMP_CODE: u64 = 48;
    pub const TCP_FLAGS: u64 = 52;
    pub const V6: u64 = 56;
    pub const SRC_BITS: u64 = 64;
    pub const DST_BITS: u64 = 128;
    pub const DST_PORTS: u64 = 192;
    pub const SLOT_BEST_T: u64 = 224;
    pub const SLOT_BEST: u64 = 228;
    pub const SLOT_ACCEPTED: u64 = 232;
    pub const SLOT_FOUND_T: u64 = 236;
    pub const SLOT_FOUND: u64 = 240;
}

extern "C" fn fatal(reason: *const c_char) {
    let text = if reason.is_null() {
        "unknown".into()
    } else {
        // SAFETY: LLVM passes a NUL-terminated message.
        unsafe { CStr::from_ptr(reason) }.to_string_lossy()
    };
    eprintln!("error[internal-error]: LLVM failed while generating code: {text}\n  = note: this is a bug in cilc, not in your policy");
    std::process::exit(3);
}

type Err = String;

/// "No term found" (term ids are below 2^32 - 1).
const NONE: u64 = u32::MAX as u64;

/// Terms of a linear list that share their field loads (see `Gen::field`):
/// up to this many conditions on one loaded value.
const SHARED_LOADS: usize = 16;

/// The optimisation pipeline: O1 (O2 cost twice the time on large
/// diagrams for no smaller program).
const PASSES: &str = "default<O1>";

fn e(x: impl std::fmt::Display) -> Err {
    x.to_string()
}

struct Gen<'ctx> {
    ctx: &'ctx Context,
    b: Builder<'ctx>,
    f: FunctionValue<'ctx>,
    p: PointerValue<'ctx>,
    i64t: IntType<'ctx>,
    i32t: IntType<'ctx>,
    /// `llvm.bpf.passthrough` on a pointer, and its next sequence number
    /// (see `leaf_slot`).
    pass: FunctionValue<'ctx>,
    seq: std::cell::Cell<u64>,
}

/// A field's value as loaded for one test. IPv6 addresses are two 64-bit
/// halves (`lo`, `hi`): the BPF back end has no 128-bit registers, and i128
/// arithmetic miscompiles there.
#[derive(Clone, Copy)]
struct Val<'ctx> {
    lo: IntValue<'ctx>,
    hi: Option<IntValue<'ctx>>,
}

impl<'ctx> Gen<'ctx> {
    /// A working slot in the context (see `slots` in cilc.h).
    fn slot(&self, offset: u64) -> Result<PointerValue<'ctx>, Err> {
        self.at(self.p, offset)
    }

    /// `offset` bytes into the context `p` points to.
    fn at(&self, p: PointerValue<'ctx>, offset: u64) -> Result<PointerValue<'ctx>, Err> {
        // SAFETY: the slot and field offsets are within struct cilc_ctx.
        unsafe {
            self.b
                .build_in_bounds_gep(self.ctx.i8_type(), p, &[self.k(offset)], "")
                .map_err(e)
        }
    }

    /// A slot, addressed afresh for one way out of a part. The same
    /// address in every leaf would be hoisted by LLVM (SimplifyCFG hoists
    /// what both sides of a branch compute) up to the part's root, live
    /// across all of it and spilled: each leaf then read it back from the
    /// stack, and the kernel's stack liveness pass (6.17+) runs over the
    /// whole function each time a path reads a stack slot it had not seen
    /// (fw1_10k's tree: 27,908 such reads, 142 s to load). Behind
    /// `llvm.bpf.passthrough` (removed by the BPF back end before
    /// instruction selection) with its own sequence number, the address is
    /// the leaf's own: the context pointer plus the slot's offset, folded
    /// into the store.
    fn leaf_slot(&self, offset: u64) -> Result<PointerValue<'ctx>, Err> {
        let seq = self.seq.replace(self.seq.get() + 1);
        let p = self
            .b
            .build_call(
                self.pass,
                &[self.i32t.const_int(seq, false).into(), self.p.into()],
                "",
            )
            .map_err(e)?
            .try_as_basic_value()
            .basic()
            .ok_or("llvm.bpf.passthrough returned nothing")?
            .into_pointer_value();
        self.at(p, offset)
    }

    /// Every load from and store to the context is volatile: LLVM neither
    /// shares loaded values across the diagram (see `field`) nor turns the
    /// slots into PHI nodes with thousands of inputs (see `diagram`).
    fn load_ptr(&self, ty: IntType<'ctx>, ptr: PointerValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        let v = self.b.build_load(ty, ptr, "").map_err(e)?;
        if let Some(i) = v.as_instruction_value() {
            i.set_volatile(true).map_err(e)?;
        }
        Ok(v.into_int_value())
    }

    fn load(&self, ty: IntType<'ctx>, offset: u64) -> Result<IntValue<'ctx>, Err> {
        self.load_ptr(ty, self.slot(offset)?)
    }

    /// A 32-bit slot, zero-extended to 64 bits.
    fn load_wide(&self, ptr: PointerValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        let v = self.load_ptr(self.i32t, ptr)?;
        self.b.build_int_z_extend(v, self.i64t, "").map_err(e)
    }

    fn vstore(&self, ptr: PointerValue<'ctx>, v: impl BasicValue<'ctx>) -> Result<(), Err> {
        self.b
            .build_store(ptr, v)
            .map_err(e)?
            .set_volatile(true)
            .map_err(e)
    }

    /// Store the low 32 bits of `v`.
    fn store_narrow(&self, ptr: PointerValue<'ctx>, v: IntValue<'ctx>) -> Result<(), Err> {
        let v = self.b.build_int_truncate(v, self.i32t, "").map_err(e)?;
        self.vstore(ptr, v)
    }

    fn block(&self, name: &str) -> BasicBlock<'ctx> {
        self.ctx.append_basic_block(self.f, name)
    }

    /// A field, loaded (volatile) for the test at hand. Every test loads
    /// what it tests, fresh, for two reasons. The verifier: knowing a
    /// field's range from the cuts above, it would decide some cuts of
    /// shared nodes statically, mark the field "precise", and then stop
    /// merging states that differ in its range (wildcard-heavy sets then
    /// exceed its instruction budget). And LLVM: thousands of conditions on
    /// one SSA value make InstCombine's use of dominating conditions
    /// quadratic, and shared values live across the whole diagram spill
    /// past the 512-byte stack.
    fn field(&self, v6: bool, field: Field) -> Result<Val<'ctx>, Err> {
        let off = match field {
            Field::SrcAddr => layout::SRC,
            Field::DstAddr => layout::DST,
            Field::Proto => layout::PROTO,
            Field::SrcPort => layout::SPORT,
            Field::DstPort => layout::DPORT,
            Field::IcmpType => layout::ICMP_TYPE,
            Field::IcmpCode => layout::ICMP_CODE,
        };
        if matches!(field, Field::SrcAddr | Field::DstAddr) && v6 {
            let lo = self.load(self.i64t, off + 8)?;
            let hi = Some(self.load(self.i64t, off)?);
            return Ok(Val { lo, hi });
        }
        // An IPv4 address is the low 32 bits of the low half (little-endian:
        // its first four bytes). Loaded as 32 bits, LLVM knows the rest is
        // zero and uses 32-bit operations with 32-bit immediates.
        let off = match field {
            Field::SrcAddr | Field::DstAddr => off + 8,
            _ => off,
        };
        let v = self.load(self.i32t, off)?;
        let lo = self.b.build_int_z_extend(v, self.i64t, "").map_err(e)?;
        Ok(Val { lo, hi: None })
    }

    fn k(&self, v: u64) -> IntValue<'ctx> {
        self.i64t.const_int(v, false)
    }

    fn cmp(
        &self,
        p: IntPredicate,
        a: IntValue<'ctx>,
        b: IntValue<'ctx>,
    ) -> Result<IntValue<'ctx>, Err> {
        self.b.build_int_compare(p, a, b, "").map_err(e)
    }

    // Conditions are computed as 0/1 values in 64-bit registers, without
    // branches, and each test ends in one branch. A branch per comparison
    // (or LLVM's diamonds for `select`) multiplies the paths the verifier
    // walks between two of its checkpoints, and keeps one branch pending
    // per comparison on the way down a list of terms.

    fn and(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        self.b.build_and(a, b, "").map_err(e)
    }

    fn or(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        self.b.build_or(a, b, "").map_err(e)
    }

    fn sub(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        self.b.build_int_sub(a, b, "").map_err(e)
    }

    fn xor(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        self.b.build_xor(a, b, "").map_err(e)
    }

    fn not(&self, a: IntValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        self.b.build_not(a, "").map_err(e)
    }

    /// The sign bit as 0/1. Opaque on both sides: LLVM would otherwise
    /// recognise the comparison idioms below (`(d | -d) >> 63` is
    /// `d != 0`) and turn them, and the logic on their results, back into
    /// comparisons and `select`s, which become branches.
    fn sign(&self, a: IntValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        let a = self.opaque(a)?;
        let s = self
            .b
            .build_right_shift(a, self.k(63), false, "")
            .map_err(e)?;
        self.opaque(s)
    }

    /// `x < y` as 0/1, for any 64-bit values (Hacker's Delight 2-12).
    fn ltu(&self, x: IntValue<'ctx>, y: IntValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        let nx = self.not(x)?;
        let a = self.and(nx, y)?;
        let b = self.or(nx, y)?;
        let d = self.sub(x, y)?;
        let c = self.and(b, d)?;
        let r = self.or(a, c)?;
        self.sign(r)
    }

    /// `v`, through an empty inline assembly block: LLVM cannot see that
    /// it is `v`, so it does not turn the arithmetic around it back into
    /// comparisons and selects (which the BPF back end lowers to branches).
    fn opaque(&self, v: IntValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        let ty = self.i64t.fn_type(&[self.i64t.into()], false);
        let asm =
            self.ctx
                .create_inline_asm(ty, String::new(), "=r,0".into(), false, false, None, false);
        let call = self
            .b
            .build_indirect_call(ty, asm, &[v.into()], "")
            .map_err(e)?;
        match call.try_as_basic_value() {
            inkwell::values::ValueKind::Basic(v) => Ok(v.into_int_value()),
            inkwell::values::ValueKind::Instruction(_) => {
                Err("inline assembly returned nothing".into())
            }
        }
    }

    /// `x == y` as 0/1, for any 64-bit values.
    fn eq(&self, x: IntValue<'ctx>, y: IntValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        let d = self.xor(x, y)?;
        let n = self.b.build_int_neg(d, "").map_err(e)?;
        let any = self.or(d, n)?;
        let ne = self.sign(any)?;
        self.xor(ne, self.k(1))
    }

    /// `v < cut` as 0/1, for a value in two 64-bit halves (IPv6).
    fn less_wide(
        &self,
        lo: IntValue<'ctx>,
        hi: IntValue<'ctx>,
        cut: u128,
    ) -> Result<IntValue<'ctx>, Err> {
        let (ch, cl) = (self.k((cut >> 64) as u64), self.k(cut as u64));
        let below = self.ltu(hi, ch)?;
        let same = self.eq(hi, ch)?;
        let low = self.ltu(lo, cl)?;
        let both = self.and(same, low)?;
        self.or(below, both)
    }

    /// `lo <= v <= hi` as 0/1. Values below 2^32 (ports, protocols, IPv4
    /// addresses) take the short form: neither `v - lo` nor `hi - v` is
    /// negative.
    fn in_range(&self, v: &Val<'ctx>, lo: u128, hi: u128) -> Result<IntValue<'ctx>, Err> {
        if let Some(high) = v.hi {
            let below = self.less_wide(v.lo, high, lo)?;
            let inside = self.xor(below, self.k(1))?;
            if hi == u128::MAX {
                return Ok(inside);
            }
            let under = self.less_wide(v.lo, high, hi + 1)?;
            return self.and(inside, under);
        }
        let a = self.sub(v.lo, self.k(lo as u64))?;
        let b = self.sub(self.k(hi as u64), v.lo)?;
        let out = self.or(a, b)?;
        let out = self.sign(out)?;
        self.xor(out, self.k(1))
    }

    fn bit(&self, side: Side, bit: u32) -> Result<IntValue<'ctx>, Err> {
        let base = if side == Side::Src {
            layout::SRC_BITS
        } else {
            layout::DST_BITS
        };
        let word = self.load(self.i64t, base + 8 * u64::from(bit / 64))?;
        let w = self
            .b
            .build_right_shift(word, self.k(u64::from(bit % 64)), false, "")
            .map_err(e)?;
        self.and(w, self.k(1))
    }

    /// An atom as 0/1.
    fn atom(&self, code: &AtomCode, v6: bool) -> Result<IntValue<'ctx>, Err> {
        match code {
            AtomCode::Bit(side, bit) => self.bit(*side, *bit),
            AtomCode::NoBit(side, bits) => {
                let mut any = self.k(0);
                for b in bits {
                    let set = self.bit(*side, *b)?;
                    any = self.or(any, set)?;
                }
                self.xor(any, self.k(1))
            }
            AtomCode::Port(slot) => {
                let named = self.load(
                    self.ctx.i16_type(),
                    layout::DST_PORTS + 2 * u64::from(*slot),
                )?;
                let named = self.b.build_int_z_extend(named, self.i64t, "").map_err(e)?;
                let dport = self.field(v6, Field::DstPort)?.lo;
                let same = self.eq(named, dport)?;
                let none = self.eq(named, self.k(0))?;
                let some = self.xor(none, self.k(1))?;
                self.and(same, some)
            }
            AtomCode::Flags(v, m) => {
                let flags = self.load(self.i32t, layout::TCP_FLAGS)?;
                let flags = self.b.build_int_z_extend(flags, self.i64t, "").map_err(e)?;
                let masked = self.and(flags, self.k(u64::from(*m)))?;
                self.eq(masked, self.k(u64::from(*v)))
            }
            AtomCode::True => Ok(self.k(1)),
        }
    }

    /// `new` where `mask` is all ones, `old` where it is zero.
    fn merge(
        &self,
        mask: IntValue<'ctx>,
        new: IntValue<'ctx>,
        old: IntValue<'ctx>,
    ) -> Result<IntValue<'ctx>, Err> {
        let d = self.and(self.xor(new, old)?, mask)?;
        self.xor(old, d)
    }

    /// A 0/1 value as the condition of a branch.
    fn holds(&self, flag: IntValue<'ctx>) -> Result<IntValue<'ctx>, Err> {
        self.cmp(IntPredicate::NE, flag, self.k(0))
    }

    /// Branch to `yes` when `cond`, else to `no`.
    fn branch(
        &self,
        cond: IntValue<'ctx>,
        yes: BasicBlock<'ctx>,
        no: BasicBlock<'ctx>,
    ) -> Result<(), Err> {
        self.b.build_conditional_branch(cond, yes, no).map_err(e)?;
        Ok(())
    }

    /// Branch to `hit` when `cond`, with `hit` laid out as the fall-through.
    /// The verifier walks the fall-through first and keeps the jump target
    /// pending; a term's hit soon ends (record, part done), so a list of
    /// terms keeps one branch pending instead of one per term (more than
    /// 8,192 pending is "too complex").
    fn branch_hit_first(
        &self,
        cond: IntValue<'ctx>,
        hit: BasicBlock<'ctx>,
        miss: BasicBlock<'ctx>,
    ) -> Result<(), Err> {
        let br = self
            .b
            .build_conditional_branch(cond, hit, miss)
            .map_err(e)?;
        let weights = self.ctx.metadata_node(&[
            self.ctx.metadata_string("branch_weights").into(),
            self.i32t.const_int(1 << 20, false).into(),
            self.i32t.const_int(1, false).into(),
        ]);
        br.set_metadata(weights, self.ctx.get_kind_id("prof"))
            .map_err(e)
    }

    /// The checks of one term, as a value that is nonzero when the packet
    /// is outside the term. `loaded` holds the fields loaded so far at this
    /// point (see `Gen::field`).
    fn term(
        &self,
        plan: &DiagramPlan<'_>,
        t: TermId,
        hook: &HookPlan<'_>,
        loaded: &mut [Option<Val<'ctx>>; 7],
        region: &Region,
    ) -> Result<IntValue<'ctx>, Err> {
        let term = &plan.diagram.terms[t as usize];
        let mut out = self.k(0);
        for f in FIELDS {
            let Some(set) = &term.fields[f.index()] else {
                continue;
            };
            let (rlo, rhi) = region.ranges[f.index()];
            if set.iter().any(|(lo, hi)| *lo <= rlo && rhi <= *hi) {
                continue;
            }
            let v = match loaded[f.index()] {
                Some(v) => v,
                None => {
                    let v = self.field(hook.v6, f)?;
                    loaded[f.index()] = Some(v);
                    v
                }
            };
            let o = self.outside(&v, set)?;
            out = self.or(out, o)?;
        }
        for a in term.atoms.iter().filter(|a| !region.atoms.contains(a)) {
            let c = self.atom(&hook.atoms[*a as usize], hook.v6)?;
            let o = self.xor(c, self.k(1))?;
            out = self.or(out, o)?;
        }
        Ok(out)
    }

    /// Nonzero when `v` is in none of the ranges of `set` (not always 0/1:
    /// the cheapest form for each range).
    fn outside(&self, v: &Val<'ctx>, set: &[(u128, u128)]) -> Result<IntValue<'ctx>, Err> {
        if let [(lo, hi)] = set {
            if let Some(size) = (hi - lo).checked_add(1) {
                if size.is_power_of_two() && lo % size == 0 {
                    // A prefix (or one value): the bits above it differ.
                    let keep = !(size - 1);
                    let half = |x: IntValue<'ctx>, base: u64, keep: u64| {
                        let d = self.xor(x, self.k(base))?;
                        self.and(d, self.k(keep))
                    };
                    let low = half(v.lo, *lo as u64, keep as u64)?;
                    return match v.hi {
                        Some(h) => {
                            let high = half(h, (*lo >> 64) as u64, (keep >> 64) as u64)?;
                            self.or(high, low)
                        }
                        None => Ok(low),
                    };
                }
            }
        }
        let mut any = self.k(0);
        for (lo, hi) in set {
            let c = self.in_range(v, *lo, *hi)?;
            any = self.or(any, c)?;
        }
        self.xor(any, self.k(1))
    }

    /// Keep a term found (its id and decision word) if it comes before the
    /// best so far, without branches (NONE never does).
    fn keep_if_earlier(&self, tv: IntValue<'ctx>, code: IntValue<'ctx>) -> Result<(), Err> {
        let best_t = self.slot(layout::SLOT_BEST_T)?;
        let best = self.slot(layout::SLOT_BEST)?;
        let cur = self.load_wide(best_t)?;
        let old = self.load_wide(best)?;
        let earlier = self.sign(self.sub(tv, cur)?)?;
        let mask = self.b.build_int_neg(earlier, "").map_err(e)?;
        self.store_narrow(best_t, self.merge(mask, tv, cur)?)?;
        self.store_narrow(best, self.merge(mask, code, old)?)
    }

    /// Evaluate a diagram; returns the decision word of its first matching
    /// term, or 0.
    fn diagram(&self, plan: &DiagramPlan<'_>, hook: &HookPlan<'_>) -> Result<IntValue<'ctx>, Err> {
        let i32t = self.i32t;
        let best_t = self.slot(layout::SLOT_BEST_T)?;
        let best = self.slot(layout::SLOT_BEST)?;
        self.vstore(best_t, i32t.const_all_ones())?;
        self.vstore(best, i32t.const_zero())?;
        let d = plan.diagram;
        let regions = region::linear_leaves(d);
        for root in &d.roots {
            let exit = self.block("part_done");
            // Every way out of the part stores the term found (its id, or
            // NONE) and its decision word and jumps to `exit`: a hit costs
            // two stores and a jump. The comparison with the best so far
            // happens once, after the part. (Stores, not PHI inputs: LLVM
            // folds a block that only jumps into its PHI input by input,
            // quadratic in the thousands of exits of a large diagram.)
            let leave = |tv: IntValue<'ctx>, code: IntValue<'ctx>| -> Result<(), Err> {
                self.store_narrow(self.leaf_slot(layout::SLOT_FOUND_T)?, tv)?;
                self.store_narrow(self.leaf_slot(layout::SLOT_FOUND)?, code)?;
                self.b.build_unconditional_branch(exit).map_err(e)?;
                Ok(())
            };
            let record = |t: TermId| -> Result<(), Err> {
                leave(
                    self.k(u64::from(t)),
                    self.k(u64::from(plan.codes[t as usize])),
                )
            };
            let nothing = || leave(self.k(NONE), self.k(0));
            let mut blocks: HashMap<NodeId, BasicBlock<'ctx>> = HashMap::new();
            let mut todo: Vec<NodeId> = Vec::new();
            let mut get = |n: NodeId, todo: &mut Vec<NodeId>| {
                *blocks.entry(n).or_insert_with(|| {
                    todo.push(n);
                    self.block("node")
                })
            };
            let first = get(*root, &mut todo);
            self.b.build_unconditional_branch(first).map_err(e)?;
            while let Some(n) = todo.pop() {
                let here = get(n, &mut todo);
                self.b.position_at_end(here);
                match &d.nodes[n as usize] {
                    Node::Split { field, cut, lo, hi } => {
                        let v = self.field(hook.v6, *field)?;
                        let c = match v.hi {
                            None => self.cmp(IntPredicate::ULT, v.lo, self.k(*cut as u64))?,
                            Some(high) => {
                                let c = self.less_wide(v.lo, high, *cut)?;
                                self.holds(c)?
                            }
                        };
                        let (l, h) = (get(*lo, &mut todo), get(*hi, &mut todo));
                        self.branch(c, l, h)?;
                    }
                    Node::Test { atom, yes, no } => {
                        let c = self.atom(&hook.atoms[*atom as usize], hook.v6)?;
                        let c = self.holds(c)?;
                        let (y, n) = (get(*yes, &mut todo), get(*no, &mut todo));
                        self.branch(c, y, n)?;
                    }
                    Node::Leaf(None) => nothing()?,
                    Node::Leaf(Some(t)) => record(*t)?,
                    Node::Linear(ts) => {
                        let region = regions.get(&n).cloned().unwrap_or_else(Region::all);
                        // One branch per term, the hit laid out first (see
                        // `branch_hit_first`). A short list (a diagram
                        // leaf) shares its loads; a long one loads per
                        // term (see `Gen::field`).
                        let mut loaded = [None; 7];
                        let long = ts.len() > SHARED_LOADS;
                        for t in ts {
                            if long {
                                loaded = [None; 7];
                            }
                            // Loads in one term's block dominate the later
                            // terms: each is reached by the misses before.
                            let out = self.term(plan, *t, hook, &mut loaded, &region)?;
                            let inside = self.cmp(IntPredicate::EQ, out, self.k(0))?;
                            let hit = self.block("hit");
                            let miss = self.block("miss");
                            self.branch_hit_first(inside, hit, miss)?;
                            self.b.position_at_end(hit);
                            if long {
                                // Kept here, so that the hit block is not
                                // empty and stays the fall-through: a hit
                                // that jumped straight to the part's end
                                // would leave the verifier one branch
                                // pending per term (8,193 is too many).
                                self.keep_if_earlier(
                                    self.k(u64::from(*t)),
                                    self.k(u64::from(plan.codes[*t as usize])),
                                )?;
                                nothing()?;
                            } else {
                                record(*t)?;
                            }
                            self.b.position_at_end(miss);
                        }
                        nothing()?;
                    }
                }
            }
            self.b.position_at_end(exit);
            let tv = self.load_wide(self.slot(layout::SLOT_FOUND_T)?)?;
            let code = self.load_wide(self.slot(layout::SLOT_FOUND)?)?;
            self.keep_if_earlier(tv, code)?;
        }
        self.load_ptr(i32t, best)
    }

    /// One hook: chains (a drop ends it), then policies, as `Forest::decide`.
    fn hook(&self, h: &HookPlan<'_>) -> Result<(), Err> {
        let i32t = self.i32t;
        let accepted = self.slot(layout::SLOT_ACCEPTED)?;
        self.vstore(accepted, i32t.const_zero())?;
        for c in &h.chains {
            let code = self.diagram(c, h)?;
            let reason = self
                .b
                .build_and(code, i32t.const_int(0x0f, false), "")
                .map_err(e)?;
            let is_drop = self
                .b
                .build_int_compare(
                    IntPredicate::EQ,
                    reason,
                    i32t.const_int(u64::from(CHAIN_DROP), false),
                    "",
                )
                .map_err(e)?;
            let found = self
                .b
                .build_int_compare(IntPredicate::NE, code, i32t.const_zero(), "")
                .map_err(e)?;
            let drop = self.block("chain_drop");
            let next = self.block("chain_next");
            self.branch(is_drop, drop, next)?;
            self.b.position_at_end(drop);
            self.b.build_return(Some(&code)).map_err(e)?;
            self.b.position_at_end(next);
            let old = self.load_ptr(i32t, accepted)?;
            let unset = self
                .b
                .build_int_compare(IntPredicate::EQ, old, i32t.const_zero(), "")
                .map_err(e)?;
            let take = self.b.build_and(found, unset, "").map_err(e)?;
            let new = self.b.build_select(take, code, old, "").map_err(e)?;
            self.vstore(accepted, new)?;
        }
        // The policy diagram first: anything computed before it and used
        // after stays live in a register through the whole diagram, and a
        // value that differs between paths splits the verifier's states.
        let code = match &h.policy {
            None => None,
            Some(p) => Some(self.diagram(p, h)?),
        };
        let acc = self.load_ptr(i32t, accepted)?;
        let has_acc = self
            .b
            .build_int_compare(IntPredicate::NE, acc, i32t.const_zero(), "")
            .map_err(e)?;
        let fallback = self
            .b
            .build_select(
                has_acc,
                acc,
                i32t.const_int(u64::from(NO_POLICY), false),
                "",
            )
            .map_err(e)?
            .into_int_value();
        let result = match code {
            None => fallback,
            Some(code) => {
                let found = self
                    .b
                    .build_int_compare(IntPredicate::NE, code, i32t.const_zero(), "")
                    .map_err(e)?;
                self.b
                    .build_select(found, code, fallback, "")
                    .map_err(e)?
                    .into_int_value()
            }
        };
        self.b.build_return(Some(&result)).map_err(e)?;
        Ok(())
    }
}

/// LLVM's own options, set once per process. Tail merging compares the
/// tails of every pair of predecessors of a block: quadratic on the exits
/// of large diagrams (seconds per thousand rules), for nothing the
/// verifier needs. CodeGenPrepare restarts its walk of a function after
/// every change unless the function counts as "huge"; a diagram is, from
/// a hundred blocks on (acl1_1k: 10.6 s in that pass, 0.6 s with this, the
/// same instructions out). SimplifyCFG would sink the stores that every
/// exit of a diagram part makes into the part's end, as PHI nodes with
/// thousands of inputs, which it then maintains input by input.
fn options() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // For investigating the back end: extra LLVM options, e.g.
        // CILC_LLVM_ARGS=-time-passes.
        let extra = std::env::var("CILC_LLVM_ARGS").unwrap_or_default();
        let args: Vec<std::ffi::CString> = [
            "cilc",
            "-enable-tail-merge=false",
            "-cgpp-huge-func=100",
            "-simplifycfg-sink-common=false",
        ]
        .into_iter()
        .chain(extra.split_whitespace())
        .filter_map(|a| std::ffi::CString::new(a).ok())
        .collect();
        let ptrs: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
        // SAFETY: argv-style array of NUL-terminated strings, alive for the
        // call; the overview string is NUL-terminated.
        unsafe {
            llvm_sys::support::LLVMParseCommandLineOptions(
                ptrs.len() as i32,
                ptrs.as_ptr(),
                c"cilc".as_ptr(),
            )
        };
    });
}

/// Generate, link, optimise and emit the object.
/// `table`: the table strategy's encoded diagrams (table.rs); the
/// classifier is then a call of stdlib's walker, not code per diagram.
pub fn emit(
    hooks: &[HookPlan<'_>],
    manifest: &[u8],
    stdlib: &[u8],
    table: Option<usize>,
) -> Result<Vec<u8>, Err> {
    // SAFETY: the handler only prints and exits.
    unsafe { inkwell::support::error_handling::install_fatal_error_handler(fatal) };
    Target::initialize_bpf(&InitializationConfig::default());
    // inkwell leaves out the BPF asm parser; the walk's loop (cilc.c
    // `can_loop`) is an inline `may_goto`.
    // SAFETY: LLVM's own initialiser, idempotent.
    unsafe { llvm_sys::target::LLVMInitializeBPFAsmParser() };
    options();
    let ctx = Context::create();
    let buf = MemoryBuffer::create_from_memory_range_copy(stdlib, "cilc.bc");
    let module: Module<'_> = Module::parse_bitcode_from_buffer(&buf, &ctx).map_err(e)?;
    let f = module
        .get_function("cilc_classify")
        .ok_or("the stdlib bitcode does not declare cilc_classify")?;
    // The declaration carries the debug info of a call target; a definition
    // needs its own. Drop it: the function is inlined, and its code takes
    // cilc_decide's debug info (and BTF).
    // SAFETY: `f` is a live function of `module`; a null subprogram
    // removes the attachment.
    unsafe { llvm_sys::debuginfo::LLVMSetSubprogram(f.as_value_ref(), std::ptr::null_mut()) };
    f.set_linkage(Linkage::Internal);
    let always = Attribute::get_named_enum_kind_id("alwaysinline");
    f.add_attribute(AttributeLoc::Function, ctx.create_enum_attribute(always, 0));
    let p = f
        .get_nth_param(0)
        .ok_or("cilc_classify has no context parameter")?
        .into_pointer_value();
    let dir = f
        .get_nth_param(1)
        .ok_or("cilc_classify has no direction parameter")?
        .into_int_value();
    let entry = ctx.append_basic_block(f, "entry");
    let ptr = p.get_type();
    let pass = inkwell::intrinsics::Intrinsic::find("llvm.bpf.passthrough")
        .and_then(|i| i.get_declaration(&module, &[ptr.into(), ptr.into()]))
        .ok_or("LLVM has no llvm.bpf.passthrough")?;
    let g = Gen {
        ctx: &ctx,
        b: ctx.create_builder(),
        f,
        p,
        i64t: ctx.i64_type(),
        i32t: ctx.i32_type(),
        pass,
        seq: std::cell::Cell::new(0),
    };
    g.b.position_at_end(entry);
    // The walker: inlined where the table strategy calls it, dropped
    // everywhere else.
    let walk = module
        .get_function("cilc_walk")
        .ok_or("the stdlib bitcode does not define cilc_walk")?;
    walk.set_linkage(Linkage::Internal);
    walk.add_attribute(AttributeLoc::Function, ctx.create_enum_attribute(always, 0));
    if let Some(size) = table {
        let d =
            g.b.build_call(walk, &[p.into(), dir.into()], "")
                .map_err(e)?
                .try_as_basic_value()
                .basic()
                .ok_or("cilc_walk returns nothing")?;
        g.b.build_return(Some(&d)).map_err(e)?;
        // Zeros of the table's size: its bytes are written into the
        // section after LLVM (`Table::write_into`), which saves LLVM a
        // copy of them (134 MB at 100k rules) and its time.
        let size = u32::try_from(size).map_err(|_| "the table is over 4 GiB")?;
        let data = ctx.i8_type().array_type(size).const_zero();
        let global = module.add_global(data.get_type(), None, "cilc_table_data");
        global.set_initializer(&data);
        global.set_constant(true);
        global.set_section(Some(runtime_loader::manifest::TABLE_SECTION));
    } else {
        g.switch_hooks(hooks, dir)?;
    }
    // The manifest, in its own section (libbpf skips unknown sections).
    let bytes = ctx.const_string(manifest, false);
    let global = module.add_global(bytes.get_type(), None, "cilc_manifest");
    global.set_initializer(&bytes);
    global.set_constant(true);
    global.set_section(Some(runtime_loader::manifest::SECTION));
    module
        .verify()
        .map_err(|m| format!("generated IR is invalid: {m}"))?;
    finish(&module)
}

impl<'ctx> Gen<'ctx> {
    /// The classifier as code: one block per hook, by direction and family.
    fn switch_hooks(&self, hooks: &[HookPlan<'_>], dir: IntValue<'ctx>) -> Result<(), Err> {
        let g = self;
        let v6 = g.load(g.i32t, layout::V6)?;
        let v6 =
            g.b.build_int_compare(IntPredicate::NE, v6, g.i32t.const_zero(), "")
                .map_err(e)?;
        let v6 = g.b.build_int_z_extend(v6, g.i32t, "").map_err(e)?;
        let twice =
            g.b.build_left_shift(dir, g.i32t.const_int(1, false), "")
                .map_err(e)?;
        let key = g.b.build_or(twice, v6, "").map_err(e)?;
        let none = g.block("no_hook");
        let mut cases = Vec::new();
        for h in hooks {
            let bb = g.block(&format!("hook_{}_{}", h.direction, u8::from(h.v6)));
            cases.push((
                g.i32t
                    .const_int(u64::from(h.direction * 2 + u32::from(h.v6)), false),
                bb,
            ));
        }
        g.b.build_switch(key, none, &cases).map_err(e)?;
        g.b.position_at_end(none);
        g.b.build_return(Some(&g.i32t.const_int(u64::from(NO_POLICY), false)))
            .map_err(e)?;
        for (h, (_, bb)) in hooks.iter().zip(&cases) {
            g.b.position_at_end(*bb);
            g.hook(h)?;
        }
        Ok(())
    }
}

/// Optimise and emit the object.
fn finish(module: &Module<'_>) -> Result<Vec<u8>, Err> {
    let triple = TargetTriple::create("bpfel");
    let target = Target::from_triple(&triple).map_err(e)?;
    let tm = target
        .create_target_machine(
            &triple,
            "v4",
            "",
            OptimizationLevel::Default,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or("LLVM has no BPF target machine")?;
    module.set_triple(&triple);
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    crate::timed("llvm passes", || {
        module.run_passes(PASSES, &tm, PassBuilderOptions::create())
    })
    .map_err(e)?;
    // For debugging the back end: the optimised IR.
    if let Some(path) = std::env::var_os("CILC_DUMP_LLVM") {
        module.print_to_file(path).map_err(e)?;
    }
    let out = crate::timed("llvm codegen", || {
        tm.write_to_memory_buffer(module, FileType::Object)
    })
    .map_err(e)?;
    Ok(out.as_slice().to_vec())
}
