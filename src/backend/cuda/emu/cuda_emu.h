// cuda_emu.h: run resnetc's emitted CUDA on a CPU, to check its numbers
// where there is no GPU.
//
// Every CUDA thread of a block is a fiber (boost.context); blocks run one
// after another. A fiber runs until it waits, and the scheduler resumes the
// others in order; a warp whose lanes all reached a collective goes on
// alone, as far as it can, before the next one does:
// - __syncthreads() waits for every thread of the block at the same call
//   site; a thread that returns while others wait, or threads waiting at
//   different sites, are reported and abort the run (divergence);
// - __shared__ is one copy per block (blocks run in turn);
// - ldmatrix and mma.sync are done warp-wide with the PTX fragment layouts:
//   each lane hands in its fragment, waits for its warp, reads what the
//   instruction would give it;
// - cp.async copies are held back until cp.async.wait_group lets them land
//   (the latest moment the hardware may), so a missing wait reads stale
//   shared memory.
// Only the intrinsics layer of resnetc_cuda.cuh has a second version here.
#pragma once

#include <boost/context/detail/fcontext.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define RESNETC_EMU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef void* cudaStream_t;
typedef int cudaError_t;
enum { cudaSuccess = 0 };

inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float __int_as_float(int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}

namespace emu {

namespace bc = boost::context::detail;

[[noreturn]] inline void fail(const char* what, int a = 0, int b = 0) {
    std::fprintf(stderr, "cuda_emu: ");
    std::fprintf(stderr, what, a, b);
    std::fprintf(stderr, "\n");
    std::exit(3);
}

enum State { RUN, BARRIER, WARP, DONE };

struct Copy {
    void* dst;
    unsigned char bytes[16];
    long group;
};

struct Fiber {
    bc::fcontext_t ctx;
    uint3 tid;
    unsigned flat;
    State state;
    int site;
    // cp.async: copies not yet landed, and groups committed so far.
    std::vector<Copy> pending;
    long groups;
};

// What a lane hands its warp for a collective: registers and an address.
struct Slot {
    unsigned r[8];
    float f[4];
    const void* p;
};

struct Launch {
    dim3 grid, block, bidx;
    std::vector<Fiber> fibers;
    std::vector<std::vector<char>> stacks;
    Fiber* cur = nullptr;
    bc::fcontext_t sched = nullptr;
    std::function<void()> body;
    std::vector<Slot> slots;
};

inline Launch& ctx() {
    static Launch l;
    return l;
}

constexpr std::size_t STACK = 256 << 10;

inline void to_scheduler() {
    Launch& l = ctx();
    bc::transfer_t t = bc::jump_fcontext(l.sched, nullptr);
    l.sched = t.fctx;
}

inline void entry(bc::transfer_t t) {
    Launch& l = ctx();
    l.sched = t.fctx;
    l.body();
    l.cur->state = DONE;
    l.cur->pending.clear();
    bc::jump_fcontext(l.sched, nullptr);
}

inline void run_block() {
    Launch& l = ctx();
    const unsigned n = l.block.x * l.block.y * l.block.z;
    if (l.fibers.size() != n) {
        l.fibers.assign(n, Fiber{});
        l.stacks.assign(n, std::vector<char>(STACK));
        l.slots.assign(n, Slot{});
    }
    for (unsigned i = 0; i < n; i++) {
        Fiber& f = l.fibers[i];
        f.tid = uint3{i % l.block.x, (i / l.block.x) % l.block.y, i / (l.block.x * l.block.y)};
        f.flat = i;
        f.state = RUN;
        f.site = 0;
        f.pending.clear();
        f.groups = 0;
        f.ctx = bc::make_fcontext(l.stacks[i].data() + STACK, STACK, entry);
    }
    for (;;) {
        for (auto& f : l.fibers) {
            if (f.state != RUN) continue;
            l.cur = &f;
            bc::transfer_t t = bc::jump_fcontext(f.ctx, nullptr);
            f.ctx = t.fctx;
        }
        // Every thread now waits or is done.
        unsigned done = 0, at_barrier = 0;
        for (auto& f : l.fibers) {
            done += f.state == DONE;
            at_barrier += f.state == BARRIER;
        }
        if (done == n) return;
        // One warp at a time, as far as it goes: the order in which a
        // missing __syncthreads() or cp.async wait shows (a warp runs on
        // while the others have not stored, or not landed, their part).
        bool released = false;
        for (unsigned w = 0; w * 32 < n && !released; w++) {
            unsigned lanes = 0, end = (w + 1) * 32 < n ? (w + 1) * 32 : n;
            for (unsigned i = w * 32; i < end; i++) lanes += l.fibers[i].state == WARP;
            if (lanes == 0) continue;
            if (lanes != end - w * 32)
                fail("a warp-collective operation (line %d) reached by %d lanes of the warp",
                     l.fibers[w * 32].site, (int)lanes);
            for (unsigned i = w * 32; i < end; i++) {
                if (l.fibers[i].site != l.fibers[w * 32].site)
                    fail("lanes of a warp in different collectives (lines %d and %d)",
                         l.fibers[w * 32].site, l.fibers[i].site);
                l.fibers[i].state = RUN;
            }
            released = true;
        }
        if (released) continue;
        if (at_barrier + done != n) fail("deadlock: %d threads wait for nothing", (int)(n - done));
        int site = -1;
        for (auto& f : l.fibers) {
            if (f.state != BARRIER) continue;
            if (done > 0)
                fail("__syncthreads() on line %d reached by %d threads: the others returned",
                     f.site, (int)at_barrier);
            if (site >= 0 && f.site != site)
                fail("threads wait at __syncthreads() on lines %d and %d", site, f.site);
            site = f.site;
        }
        for (auto& f : l.fibers) f.state = RUN;
    }
}

// Run kernel `k` on a grid of blocks, one block at a time.
template <class... P, class... A>
void launch(void (*k)(P...), dim3 grid, dim3 block, A... args) {
    Launch& l = ctx();
    l.grid = grid;
    l.block = block;
    l.body = [=] { k(args...); };
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                l.bidx = dim3(x, y, z);
                run_block();
            }
}

inline void wait_at(State s, int site) {
    Fiber* f = ctx().cur;
    f->state = s;
    f->site = site;
    to_scheduler();
}

inline Slot& my_slot() { return ctx().slots[ctx().cur->flat]; }
inline Slot& lane_slot(unsigned lane) {
    return ctx().slots[ctx().cur->flat / 32 * 32 + lane];
}
inline unsigned my_lane() { return ctx().cur->flat % 32; }

}  // namespace emu

#define threadIdx (emu::ctx().cur->tid)
#define blockIdx (emu::ctx().bidx)
#define blockDim (emu::ctx().block)
#define gridDim (emu::ctx().grid)
#define __syncthreads() emu::wait_at(emu::BARRIER, __LINE__)

// The host side: a launch runs the grid now.
#define RC_LAUNCH(kernel, grid, block, stream, ...) emu::launch(kernel, grid, block, __VA_ARGS__)
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

// ---- the intrinsics layer, emulated -------------------------------------

namespace rc {

inline void cp_async16(void* smem, const void* gmem, bool valid) {
    emu::Fiber* f = emu::ctx().cur;
    emu::Copy c;
    c.dst = smem;
    c.group = f->groups;
    if (valid)
        std::memcpy(c.bytes, gmem, 16);
    else
        std::memset(c.bytes, 0, 16);
    f->pending.push_back(c);
}

inline void cp_async_commit() { emu::ctx().cur->groups++; }

// Land every copy but those of the newest N committed groups (and those
// not committed yet).
template <int N> inline void cp_async_wait() {
    emu::Fiber* f = emu::ctx().cur;
    std::vector<emu::Copy> keep;
    for (auto& c : f->pending) {
        if (c.group < f->groups - N)
            std::memcpy(c.dst, c.bytes, 16);
        else
            keep.push_back(c);
    }
    f->pending.swap(keep);
}

// Lane L gets, of matrix i, row L / 4, 32-bit column L % 4; the row's
// address comes from lane 8 * i + L / 4.
inline void ldmatrix_x4(unsigned (&r)[4], const void* smem) {
    emu::my_slot().p = smem;
    emu::wait_at(emu::WARP, __LINE__);
    unsigned lane = emu::my_lane();
    for (int i = 0; i < 4; i++) {
        const char* row = (const char*)emu::lane_slot(8 * i + lane / 4).p;
        std::memcpy(&r[i], row + 4 * (lane % 4), 4);
    }
    emu::wait_at(emu::WARP, __LINE__);
}

inline float bf16_lo(unsigned r) { return __uint_as_float(r << 16); }
inline float bf16_hi(unsigned r) { return __uint_as_float(r & 0xffff0000u); }

// m16n8k16, bf16: A row g: k = 2t, 2t+1 in a0 (rows g) / a1 (rows g+8),
// k + 8 in a2 / a3; B column g: k = 2t, 2t+1 in b0, k + 8 in b1; D rows
// g, g + 8, columns 2t, 2t + 1.
inline void mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    emu::Slot& s = emu::my_slot();
    for (int i = 0; i < 4; i++) s.r[i] = a[i];
    s.r[4] = b0;
    s.r[5] = b1;
    emu::wait_at(emu::WARP, __LINE__);
    unsigned lane = emu::my_lane(), g = lane / 4, t = lane % 4;
    float A[2][16], B[2][16];
    for (unsigned q = 0; q < 4; q++) {
        const emu::Slot& sa = emu::lane_slot(4 * g + q);
        for (int h = 0; h < 2; h++) {
            A[h][2 * q] = bf16_lo(sa.r[h]);
            A[h][2 * q + 1] = bf16_hi(sa.r[h]);
            A[h][2 * q + 8] = bf16_lo(sa.r[h + 2]);
            A[h][2 * q + 9] = bf16_hi(sa.r[h + 2]);
        }
        for (int c = 0; c < 2; c++) {
            const emu::Slot& sb = emu::lane_slot(4 * (2 * t + c) + q);
            B[c][2 * q] = bf16_lo(sb.r[4]);
            B[c][2 * q + 1] = bf16_hi(sb.r[4]);
            B[c][2 * q + 8] = bf16_lo(sb.r[5]);
            B[c][2 * q + 9] = bf16_hi(sb.r[5]);
        }
    }
    for (int r = 0; r < 4; r++) {
        float acc = d[r];
        for (int k = 0; k < 16; k++) acc += A[r / 2][k] * B[r % 2][k];
        d[r] = acc;
    }
    emu::wait_at(emu::WARP, __LINE__);
}

// The tensor cores read a tf32 operand's top 19 bits and ignore the rest.
inline float tf32_bits(unsigned u) { return __uint_as_float(u & 0xffffe000u); }

// m16n8k8, tf32: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
// b0 (k = t, n = g), b1 (k = t + 4, n = g).
inline void mma_tf32_1688(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    emu::Slot& s = emu::my_slot();
    for (int i = 0; i < 4; i++) s.r[i] = a[i];
    s.r[4] = b0;
    s.r[5] = b1;
    emu::wait_at(emu::WARP, __LINE__);
    unsigned lane = emu::my_lane(), g = lane / 4, t = lane % 4;
    float A[2][8], B[2][8];
    for (unsigned q = 0; q < 4; q++) {
        const emu::Slot& sa = emu::lane_slot(4 * g + q);
        for (int h = 0; h < 2; h++) {
            A[h][q] = tf32_bits(sa.r[h]);
            A[h][q + 4] = tf32_bits(sa.r[h + 2]);
        }
        for (int c = 0; c < 2; c++) {
            const emu::Slot& sb = emu::lane_slot(4 * (2 * t + c) + q);
            B[c][q] = tf32_bits(sb.r[4]);
            B[c][q + 4] = tf32_bits(sb.r[5]);
        }
    }
    for (int r = 0; r < 4; r++) {
        float acc = d[r];
        for (int k = 0; k < 8; k++) acc += A[r / 2][k] * B[r % 2][k];
        d[r] = acc;
    }
    emu::wait_at(emu::WARP, __LINE__);
}

// cvt.rna.tf32.f32: round to nearest, ties away from zero; inf and NaN kept.
inline unsigned to_tf32(unsigned x) {
    if ((x & 0x7f800000u) == 0x7f800000u) return x;
    return (x + 0x1000u) & 0xffffe000u;
}

}  // namespace rc
