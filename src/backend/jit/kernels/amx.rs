//! AMX's bf16 tiles (Sapphire Rapids and later), for blocked convs under
//! `--precision bf16` where the machine has them: one `tdpbf16ps` takes 16
//! pixels x 32 input channels by 32 input channels x 16 outputs, summed in
//! f32 in a tile register, 16 times the work of a `vdpbf16ps`. The frame is
//! `jit/amx.rs`; these are its kernels. Inline asm: Rust's AMX intrinsics
//! and feature detection are not stable.

/// Bytes of one tile row (and of a pixel's 32 bf16 channels).
pub const ROW: usize = 64;
/// Bytes of one full tile (16 rows).
pub const TILE: usize = 16 * ROW;

/// The frame's kernels: a 2 x 2 block of tiles over K, the input
/// conversion, and the epilogue from the tiles' sums.
pub struct Amx {
    /// Whether this machine (and its OS) runs AMX's bf16 tiles.
    pub supported: fn() -> bool,
    /// Configure this thread's tiles for [`Amx::block`].
    pub configure: unsafe fn(),
    /// Give this thread's tile state back.
    pub release: unsafe fn(),
    pub block: unsafe fn(&Block),
    pub convert: unsafe fn(&ConvertRow),
    pub store: unsafe fn(&StoreRows),
}

/// Two tiles of 16 pixels (rows `a_stride` bytes apart, each 32 bf16
/// channels) by two of 16 outputs, summed over `steps` k-steps of 32
/// channels into `c`: C tiles (a0, b0), (a0, b1), (a1, b0), (a1, b1), 1 KB
/// each, row `i` pixel `i`'s 16 sums.
pub struct Block {
    pub a: [*const u8; 2],
    pub a_stride: usize,
    /// Per k-step, the bytes from each `a` to its first row.
    pub offsets: *const isize,
    pub steps: usize,
    /// K-step `s`'s two weight tiles at `b + 2 * TILE * s` (and `+ TILE`):
    /// 16 rows of channel pairs, each 16 outputs' pair of bf16.
    pub b: *const u8,
    pub c: *mut f32,
}

/// One row of `n` pixels of a blocked f32 map as bf16 pixels of 32
/// channels: pixel `i` reads 16 floats at `lo + i * step` (channels 0-15)
/// and at `hi + i * step` (16-31; zeros where `hi` is null), and writes 64
/// bytes at `dst + i * 64`, rounded to nearest even.
pub struct ConvertRow {
    pub lo: *const f32,
    pub hi: *const f32,
    pub step: usize,
    pub n: usize,
    pub dst: *mut u16,
}

/// A C tile's rows through the fused epilogue: row `i` (16 sums at
/// `c + 16 i`) to output pixel `pixels[i]` of a block plane (`out + 16
/// p`), where it is not negative; the residual read at the same place.
pub struct StoreRows<'a> {
    pub c: *const f32,
    pub pixels: &'a [i32; 16],
    /// 16 values, or null.
    pub bias: *const f32,
    /// A block plane of the output's shape, or null.
    pub res: *const f32,
    pub out: *mut f32,
    pub relu: bool,
}

#[cfg(target_arch = "x86_64")]
pub use x86::AMX;

/// The x86-64 kernels.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    use super::super::avx512::V;
    use super::super::epilogue::{self, Lanes};
    use super::{Amx, Block, ConvertRow, StoreRows, ROW};

    pub static AMX: Amx = Amx {
        supported,
        configure,
        release,
        block,
        convert,
        store,
    };

    /// Whether the CPU has AMX-TILE and AMX-BF16, the OS saves tile state
    /// (XCR0 bits 17, 18), and Linux lets this process use tile data
    /// (`arch_prctl(ARCH_REQ_XCOMP_PERM)`: asked once).
    pub fn supported() -> bool {
        static HERE: OnceLock<bool> = OnceLock::new();
        *HERE.get_or_init(|| {
            // (cpuid is available on every x86_64 CPU.)
            let (l1, l7) = (__cpuid(1), __cpuid_count(7, 0));
            let osxsave = l1.ecx & (1 << 27) != 0;
            let (tile, bf16) = (l7.edx & (1 << 24) != 0, l7.edx & (1 << 22) != 0);
            if !(osxsave && tile && bf16) {
                return false;
            }
            let xcr0: u64;
            // SAFETY: OSXSAVE is set, so xgetbv is available; it reads XCR0.
            unsafe {
                let (lo, hi): (u32, u32);
                asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack));
                xcr0 = u64::from(lo) | u64::from(hi) << 32;
            }
            xcr0 & (3 << 17) == 3 << 17 && request_permission()
        })
    }

    #[cfg(target_os = "linux")]
    fn request_permission() -> bool {
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        const SYS_ARCH_PRCTL: i64 = 158;
        let ret: i64;
        // SAFETY: the arch_prctl system call with these arguments only asks
        // the kernel to let this process use AMX tile data; it touches no memory.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            )
        };
        ret == 0
    }

    #[cfg(not(target_os = "linux"))]
    fn request_permission() -> bool {
        false
    }

    /// Palette 1, every tile 16 rows of 64 bytes: C tiles tmm0-3, A (pixels
    /// by input channels) tmm4-5, B (input channel pairs by outputs) tmm6-7.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    const CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = ROW as u8;
            c[48 + t] = 16;
            t += 1;
        }
        Config(c)
    };

    /// # Safety
    /// AMX is [`supported`].
    unsafe fn configure() {
        // SAFETY: AMX is available and permitted (the caller's); the config
        // is 64 valid bytes.
        unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
    }

    /// # Safety
    /// AMX is [`supported`].
    unsafe fn release() {
        // SAFETY: AMX is available (the caller's); tilerelease touches no memory.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// # Safety
    /// Tiles configured on this thread ([`configure`]); every row each k-step
    /// reads is inside its buffer; `steps >= 1`; `c` has room for 1,024 floats.
    unsafe fn block(a: &Block) {
        // SAFETY: the caller's promise: AMX is configured and every address is
        // readable (the rows, the offsets, the weights) or writable (c).
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "2:",
                "mov {o}, [{offsets}]",
                "lea {p}, [{a0} + {o}]",
                "tileloadd tmm4, [{p} + {stride}*1]",
                "lea {p}, [{a1} + {o}]",
                "tileloadd tmm5, [{p} + {stride}*1]",
                "tileloadd tmm6, [{b} + {row}*1]",
                "tileloadd tmm7, [{b} + {row}*1 + 1024]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {offsets}, 8",
                "add {b}, 2048",
                "dec {n}",
                "jnz 2b",
                "tilestored [{c} + {row}*1], tmm0",
                "tilestored [{c} + {row}*1 + 1024], tmm1",
                "tilestored [{c} + {row}*1 + 2048], tmm2",
                "tilestored [{c} + {row}*1 + 3072], tmm3",
                o = out(reg) _,
                p = out(reg) _,
                offsets = inout(reg) a.offsets => _,
                b = inout(reg) a.b => _,
                n = inout(reg) a.steps => _,
                a0 = in(reg) a.a[0],
                a1 = in(reg) a.a[1],
                stride = in(reg) a.a_stride,
                row = in(reg) ROW,
                c = in(reg) a.c,
                options(nostack),
            )
        };
    }

    /// # Safety
    /// AVX-512F and AVX512_BF16 are available; the row's pixels are inside
    /// the maps and `dst` has room for them.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn convert(r: &ConvertRow) {
        for i in 0..r.n {
            // SAFETY: pixel i of the row is inside the maps and dst (the caller's).
            unsafe {
                let lo = _mm512_loadu_ps(r.lo.add(i * r.step));
                let hi = if r.hi.is_null() {
                    _mm512_setzero_ps()
                } else {
                    _mm512_loadu_ps(r.hi.add(i * r.step))
                };
                // (The second operand's lanes become the low half.)
                let v = _mm512_cvtne2ps_pbh(hi, lo);
                _mm512_storeu_si512(
                    r.dst.add(i * 32) as *mut __m512i,
                    std::mem::transmute::<__m512bh, __m512i>(v),
                );
            }
        }
    }

    /// # Safety
    /// AVX-512F is available; `c` holds 256 floats; every pixel named is
    /// inside the output (and residual) block plane.
    #[target_feature(enable = "avx512f")]
    unsafe fn store(s: &StoreRows) {
        // SAFETY: the caller's promise: the feature, and every address below.
        unsafe {
            let bias = if s.bias.is_null() {
                V::splat(0.0)
            } else {
                V::load(s.bias)
            };
            for (i, &p) in s.pixels.iter().enumerate() {
                if p < 0 {
                    continue;
                }
                let at = p as usize * 16;
                let res = (!s.res.is_null()).then(|| V::load(s.res.add(at)));
                epilogue::apply(V::load(s.c.add(i * 16)), bias, res, s.relu).store(s.out.add(at));
            }
        }
    }
}
