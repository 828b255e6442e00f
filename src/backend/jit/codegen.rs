//! Cranelift code generation: one native function per network,
//! `fn(arena, descriptors)`. Shapes and arena offsets are constants in the
//! code; descriptors (shapes and packed weights for the kernels, scale and
//! shift arrays) are read from a table by index, so the code, and its CLIF
//! listing, are the same from run to run and need no weights. Convs, fc and
//! pooling call the runtime kernels; elementwise ops and the global pool are
//! SIMD loops (f32x4) generated here. Their ReLU is CLIF's `fmax`, which
//! keeps NaN, as PyTorch does.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Signature, Value};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};

use super::runtime;

const I64: types::Type = types::I64;
const F32: types::Type = types::F32;
const F32X4: types::Type = types::F32X4;

/// The kernels generated code may call, by symbol.
pub const RUNTIME: &[(&str, usize)] = &[
    ("rt_conv", 4),
    ("rt_conv_blocked", 5),
    ("rt_max_pool_blocked", 3),
    ("rt_global_avg_blocked", 3),
    ("rt_linear", 3),
    ("rt_pool", 3),
    ("rt_shortcut_pad", 3),
    ("rt_tick", 2),
    ("rt_fault", 2),
    ("rt_conv_winograd", 4),
    ("rt_scale_shift_blocked", 3),
];

pub fn runtime_symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("rt_conv", runtime::rt_conv as *const u8),
        ("rt_conv_blocked", runtime::rt_conv_blocked as *const u8),
        ("rt_conv_winograd", runtime::rt_conv_winograd as *const u8),
        (
            "rt_scale_shift_blocked",
            runtime::rt_scale_shift_blocked as *const u8,
        ),
        (
            "rt_max_pool_blocked",
            runtime::rt_max_pool_blocked as *const u8,
        ),
        (
            "rt_global_avg_blocked",
            runtime::rt_global_avg_blocked as *const u8,
        ),
        ("rt_linear", runtime::rt_linear as *const u8),
        ("rt_pool", runtime::rt_pool as *const u8),
        ("rt_shortcut_pad", runtime::rt_shortcut_pad as *const u8),
        ("rt_tick", runtime::rt_tick as *const u8),
        ("rt_fault", runtime::rt_fault as *const u8),
    ]
}

/// One step of the network, with every constant resolved.
pub enum Step {
    /// Call a runtime kernel with these integer arguments.
    Call {
        symbol: &'static str,
        args: Vec<Arg>,
    },
    /// `out[i] = f(inputs[i])` over `len` elements.
    Map {
        op: MapOp,
        inputs: Vec<u64>,
        out: u64,
        len: usize,
    },
    /// Per-channel `x * scale + shift` (and ReLU) over `planes` planes of
    /// `plane` elements; `scale` and `shift` are descriptor indices.
    ScaleShift {
        x: u64,
        out: u64,
        planes: usize,
        channels: usize,
        plane: usize,
        scale: usize,
        shift: usize,
        relu: bool,
    },
    /// Mean of each of `planes` planes of `plane` elements.
    GlobalAvg {
        x: u64,
        out: u64,
        planes: usize,
        plane: usize,
    },
}

#[derive(Clone, Copy)]
pub enum Arg {
    /// An integer, baked into the code.
    Const(u64),
    /// An offset into the arena (the function's first parameter).
    Arena(u64),
    /// Entry `k` of the descriptor table (the second parameter).
    Desc(usize),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MapOp {
    Relu,
    Add,
    Copy,
}

/// Build `fn(arena: *mut f32, descriptors: *const u64)` in `module`;
/// returns its id and the CLIF text.
pub fn build(
    module: &mut JITModule,
    steps: &[Step],
    name: &str,
) -> Result<(FuncId, String), String> {
    let ptr = I64;
    let mut ctx: Context = module.make_context();
    ctx.func.signature.params.push(AbiParam::new(ptr));
    ctx.func.signature.params.push(AbiParam::new(ptr));
    let mut imports = std::collections::HashMap::new();
    for (sym, arity) in RUNTIME {
        let mut sig = Signature::new(module.isa().default_call_conv());
        for _ in 0..*arity {
            sig.params.push(AbiParam::new(I64));
        }
        let id = module
            .declare_function(sym, Linkage::Import, &sig)
            .map_err(|e| e.to_string())?;
        imports.insert(*sym, id);
    }
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let base = b.block_params(entry)[0];
        let table = b.block_params(entry)[1];
        let desc = |b: &mut FunctionBuilder, k: usize| {
            b.ins().load(
                I64,
                MemFlagsData::trusted().with_readonly(),
                table,
                (8 * k) as i32,
            )
        };
        // In the table's order, so the listing is the same from run to run.
        let mut refs = std::collections::HashMap::new();
        for (sym, _) in RUNTIME {
            if let Some(id) = imports.get(sym) {
                refs.insert(*sym, module.declare_func_in_func(*id, b.func));
            }
        }
        for step in steps {
            match step {
                Step::Call { symbol, args } => {
                    let vals: Vec<Value> = args
                        .iter()
                        .map(|a| match *a {
                            Arg::Const(c) => b.ins().iconst(I64, c as i64),
                            Arg::Arena(off) => b.ins().iadd_imm_s(base, off as i64),
                            Arg::Desc(k) => desc(&mut b, k),
                        })
                        .collect();
                    b.ins().call(refs[symbol], &vals);
                }
                Step::Map {
                    op,
                    inputs,
                    out,
                    len,
                } => {
                    let ins: Vec<Value> = inputs
                        .iter()
                        .map(|&o| b.ins().iadd_imm_s(base, o as i64))
                        .collect();
                    let out = b.ins().iadd_imm_s(base, *out as i64);
                    emit_map(&mut b, *op, &ins, out, *len);
                }
                Step::ScaleShift {
                    x,
                    out,
                    planes,
                    channels,
                    plane,
                    scale,
                    shift,
                    relu,
                } => {
                    let x = b.ins().iadd_imm_s(base, *x as i64);
                    let out = b.ins().iadd_imm_s(base, *out as i64);
                    let (scale, shift) = (desc(&mut b, *scale), desc(&mut b, *shift));
                    emit_scale_shift(
                        &mut b, x, out, *planes, *channels, *plane, scale, shift, *relu,
                    );
                }
                Step::GlobalAvg {
                    x,
                    out,
                    planes,
                    plane,
                } => {
                    let x = b.ins().iadd_imm_s(base, *x as i64);
                    let out = b.ins().iadd_imm_s(base, *out as i64);
                    emit_global_avg(&mut b, x, out, *planes, *plane);
                }
            }
        }
        b.ins().return_(&[]);
        b.finalize(module.isa().frontend_config());
    }
    let clif = ctx.func.display().to_string();
    let id = module
        .declare_function(name, Linkage::Export, &ctx.func.signature)
        .map_err(|e| e.to_string())?;
    module
        .define_function(id, &mut ctx)
        .map_err(|e| format!("{e:?}"))?;
    module.clear_context(&mut ctx);
    Ok((id, clif))
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// `for i in (start..end).step_by(step) { body(i) }` with `i` an i64 value.
fn counted_loop(
    b: &mut FunctionBuilder,
    start: Value,
    end: i64,
    step: i64,
    body: &mut dyn FnMut(&mut FunctionBuilder, Value),
) -> Value {
    let header = b.create_block();
    b.append_block_param(header, I64);
    let body_blk = b.create_block();
    let exit = b.create_block();
    b.append_block_param(exit, I64);
    b.ins().jump(header, &[start.into()]);
    b.switch_to_block(header);
    let i = b.block_params(header)[0];
    let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, i, end);
    b.ins().brif(more, body_blk, &[], exit, &[i.into()]);
    b.switch_to_block(body_blk);
    b.seal_block(body_blk);
    body(b, i);
    let next = b.ins().iadd_imm_s(i, step);
    b.ins().jump(header, &[next.into()]);
    b.seal_block(header);
    b.switch_to_block(exit);
    b.seal_block(exit);
    b.block_params(exit)[0]
}

/// Vector body over groups of 4, then a scalar tail.
fn emit_map(b: &mut FunctionBuilder, op: MapOp, ins: &[Value], out: Value, len: usize) {
    let vec_end = (len / 4 * 4) as i64;
    let zero = b.ins().iconst(I64, 0);
    let apply = |b: &mut FunctionBuilder, ty, xs: &[Value]| -> Value {
        match op {
            MapOp::Copy => xs[0],
            MapOp::Add => b.ins().fadd(xs[0], xs[1]),
            MapOp::Relu => {
                let z = if ty == F32X4 {
                    let s = b.ins().f32const(0.0);
                    b.ins().splat(F32X4, s)
                } else {
                    b.ins().f32const(0.0)
                };
                b.ins().fmax(xs[0], z)
            }
        }
    };
    let body = |ty: types::Type| {
        move |b: &mut FunctionBuilder, i: Value| {
            let byte = b.ins().imul_imm_s(i, 4);
            let xs: Vec<Value> = ins
                .iter()
                .map(|&p| {
                    let a = b.ins().iadd(p, byte);
                    b.ins().load(ty, flags(), a, 0)
                })
                .collect();
            let y = apply(b, ty, &xs);
            let a = b.ins().iadd(out, byte);
            b.ins().store(flags(), y, a, 0);
        }
    };
    let i = counted_loop(b, zero, vec_end, 4, &mut body(F32X4));
    counted_loop(b, i, len as i64, 1, &mut body(F32));
}

#[allow(clippy::too_many_arguments)]
fn emit_scale_shift(
    b: &mut FunctionBuilder,
    x: Value,
    out: Value,
    planes: usize,
    channels: usize,
    plane: usize,
    scale: Value,
    shift: Value,
    relu: bool,
) {
    let zero = b.ins().iconst(I64, 0);
    let vec_end = (plane / 4 * 4) as i64;
    counted_loop(b, zero, planes as i64, 1, &mut |b, p| {
        let c = b.ins().urem_imm_u(p, channels as i64);
        let c4 = b.ins().imul_imm_s(c, 4);
        let sa = b.ins().iadd(c4, scale);
        let sh = b.ins().iadd(c4, shift);
        let s = b.ins().load(F32, flags(), sa, 0);
        let t = b.ins().load(F32, flags(), sh, 0);
        let sv = b.ins().splat(F32X4, s);
        let tv = b.ins().splat(F32X4, t);
        let plane_bytes = b.ins().imul_imm_s(p, (plane * 4) as i64);
        let xp = b.ins().iadd(x, plane_bytes);
        let op = b.ins().iadd(out, plane_bytes);
        let zero = b.ins().iconst(I64, 0);
        let body = |ty: types::Type| {
            move |b: &mut FunctionBuilder, i: Value| {
                let byte = b.ins().imul_imm_s(i, 4);
                let a = b.ins().iadd(xp, byte);
                let v = b.ins().load(ty, flags(), a, 0);
                let (s, t) = if ty == F32X4 { (sv, tv) } else { (s, t) };
                let y = b.ins().fma(v, s, t);
                let y = if relu {
                    let z0 = b.ins().f32const(0.0);
                    let z = if ty == F32X4 {
                        b.ins().splat(F32X4, z0)
                    } else {
                        z0
                    };
                    b.ins().fmax(y, z)
                } else {
                    y
                };
                let a = b.ins().iadd(op, byte);
                b.ins().store(flags(), y, a, 0);
            }
        };
        let i = counted_loop(b, zero, vec_end, 4, &mut body(F32X4));
        counted_loop(b, i, plane as i64, 1, &mut body(F32));
    });
}

fn emit_global_avg(b: &mut FunctionBuilder, x: Value, out: Value, planes: usize, plane: usize) {
    let zero = b.ins().iconst(I64, 0);
    let vec_end = (plane / 4 * 4) as i64;
    let inv = 1.0 / plane as f32;
    counted_loop(b, zero, planes as i64, 1, &mut |b, p| {
        let plane_bytes = b.ins().imul_imm_s(p, (plane * 4) as i64);
        let xp = b.ins().iadd(x, plane_bytes);
        // Sum in a stack slot-free way: a vector accumulator carried by a
        // variable-free loop is awkward, so accumulate through memory at out[p].
        let zf = b.ins().f32const(0.0);
        let zv = b.ins().splat(F32X4, zf);
        let acc_slot = b.create_sized_stack_slot(cranelift_codegen::ir::StackSlotData::new(
            cranelift_codegen::ir::StackSlotKind::ExplicitSlot,
            32,
            4,
        ));
        b.ins().stack_store(I64, zv, acc_slot, 0);
        b.ins().stack_store(I64, zf, acc_slot, 16);
        let zero = b.ins().iconst(I64, 0);
        let i = counted_loop(b, zero, vec_end, 4, &mut |b, i| {
            let byte = b.ins().imul_imm_s(i, 4);
            let a = b.ins().iadd(xp, byte);
            let v = b.ins().load(F32X4, flags(), a, 0);
            let acc = b.ins().stack_load(I64, F32X4, acc_slot, 0);
            let acc = b.ins().fadd(acc, v);
            b.ins().stack_store(I64, acc, acc_slot, 0);
        });
        counted_loop(b, i, plane as i64, 1, &mut |b, i| {
            let byte = b.ins().imul_imm_s(i, 4);
            let a = b.ins().iadd(xp, byte);
            let v = b.ins().load(F32, flags(), a, 0);
            let acc = b.ins().stack_load(I64, F32, acc_slot, 16);
            let acc = b.ins().fadd(acc, v);
            b.ins().stack_store(I64, acc, acc_slot, 16);
        });
        let acc = b.ins().stack_load(I64, F32X4, acc_slot, 0);
        let mut total = b.ins().stack_load(I64, F32, acc_slot, 16);
        for lane in 0..4u8 {
            let l = b.ins().extractlane(acc, lane);
            total = b.ins().fadd(total, l);
        }
        let k = b.ins().f32const(inv);
        let mean = b.ins().fmul(total, k);
        let o = b.ins().imul_imm_s(p, 4);
        let a = b.ins().iadd(out, o);
        b.ins().store(flags(), mean, a, 0);
    });
}
