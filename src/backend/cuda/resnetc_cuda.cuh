// resnetc_cuda.cuh: the kernel templates every emitted network instantiates.
//
// Activations are NHWC in one arena (`T`: float, or bf16 bits as
// `unsigned short`); weights are packed KRSC ([out][kh][kw][in]) in one
// blob. A network's own `.cu` fixes each kernel's shapes as constants (a
// `struct` per kernel) and passes byte offsets into the arena and the blob
// (`rc::Off`). Convolution is implicit GEMM (no im2col buffer): M = output
// pixels, N = output channels, K = kh * kw * in channels, with the fused
// epilogue bias + residual (option A's strided, zero-padded read too) +
// ReLU (NaN stays NaN, as in PyTorch).
//
// Compiled three ways: by NVRTC at run time, by nvcc for a library, and by
// a host C++ compiler with emu/cuda_emu.h (every CUDA thread a fiber).
// Warp-collective and asynchronous operations live in the intrinsics
// layer below: it alone has two implementations.
#pragma once

#ifdef RESNETC_EMU
#define RC_PRAGMA_UNROLL
#else
#define RC_PRAGMA_UNROLL _Pragma("unroll")
#endif

namespace rc {

typedef unsigned short bf16;
typedef unsigned int u32;
typedef long long i64;

// Byte offsets of one launch's buffers: activations in the arena, tensors
// in the weight blob (-1: none).
struct Off {
    i64 in, res, out, wt, bias, scale, shift;
};

// ---- numbers ---------------------------------------------------------------

__device__ __forceinline__ float bf16_to_f32(bf16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// Round to nearest even; NaN stays a (quiet) NaN.
__device__ __forceinline__ bf16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

template <class T> struct act;
template <> struct act<float> {
    static __device__ __forceinline__ float load(const float* p) { return *p; }
    static __device__ __forceinline__ void store(float* p, float v) { *p = v; }
};
template <> struct act<bf16> {
    static __device__ __forceinline__ float load(const bf16* p) { return bf16_to_f32(*p); }
    static __device__ __forceinline__ void store(bf16* p, float v) { *p = f32_to_bf16(v); }
};

// PyTorch's ReLU: NaN < 0 is false, so NaN stays NaN.
__device__ __forceinline__ float relu(float v) { return v < 0.0f ? 0.0f : v; }

// The larger, NaN if either is (PyTorch's max pool).
__device__ __forceinline__ float max_nan(float a, float b) {
    return (b > a || b != b) ? b : a;
}

template <class T> __device__ __forceinline__ T* at(char* base, i64 off) {
    return (T*)(base + off);
}
template <class T> __device__ __forceinline__ const T* at(const char* base, i64 off) {
    return (const T*)(base + off);
}

__device__ __forceinline__ i64 global_index() {
    return (i64)blockIdx.x * blockDim.x + threadIdx.x;
}

// ---- the intrinsics layer ----------------------------------------------------
// Device: inline PTX. Emulation: emu/cuda_emu.h defines the same names.

#ifndef RESNETC_EMU
__device__ __forceinline__ u32 smem_addr(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

// 16 bytes global -> shared, asynchronously; zero-filled when !valid.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)),
                 "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8x8 matrices of 16-bit elements; lane i gives the address of row
// i % 8 of matrix i / 8 (16 bytes each).
__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(smem)));
}

// D = A (16x16, row) * B (16x8, col) + D, bf16 inputs, f32 accumulation.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D = A (16x8, row) * B (8x8, col) + D, tf32 inputs, f32 accumulation.
__device__ __forceinline__ void mma_tf32_1688(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// f32 bits to tf32 (round to nearest, ties away), as the tensor cores take it.
__device__ __forceinline__ u32 to_tf32(u32 x) {
    u32 r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(x)));
    return r;
}
#endif

// ---- precisions of the tensor-core conv ---------------------------------

// bf16 activations and weights, m16n8k16.
struct BF16 {
    typedef bf16 T;
    enum { ELEM = 2, CHUNK = 8 };  // bytes an element; elements in 16 bytes
    static __device__ __forceinline__ void mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
        mma_bf16_16816(d, a, b0, b1);
    }
    static __device__ __forceinline__ void round_a(u32 (&)[4]) {}
};

// f32 activations and weights (pre-rounded to tf32), m16n8k8.
struct TF32 {
    typedef float T;
    enum { ELEM = 4, CHUNK = 4 };
    static __device__ __forceinline__ void mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
        mma_tf32_1688(d, a, b0, b1);
    }
    static __device__ __forceinline__ void round_a(u32 (&a)[4]) {
        RC_PRAGMA_UNROLL
        for (int i = 0; i < 4; i++) a[i] = to_tf32(a[i]);
    }
};

// ---- the conv epilogue -------------------------------------------------------

// Output (m, o) = pixel m (n, oh, ow) channel o: bias, residual, ReLU, store.
// G: the conv's geometry (see emitted structs); RES 0 none, 1 added as laid
// out as the output, 2 option A (every RS-th pixel of an RH x RW x RC map,
// its channels from RB on).
template <class T, class G>
__device__ __forceinline__ void epilogue(const char* w, char* arena, const Off& o, int m, int oc,
                                         float v) {
    if (G::BIAS) v += at<float>(w, o.bias)[oc];
    if (G::RES == 1) {
        v += act<T>::load(at<T>(arena, o.res) + (i64)m * G::O + oc);
    } else if (G::RES == 2) {
        int c = oc - G::RB;
        if (c >= 0 && c < G::RC) {
            int n = m / (G::OH * G::OW), p = m % (G::OH * G::OW);
            int y = p / G::OW, x = p % G::OW;
            i64 r = (((i64)n * G::RH + y * G::RS) * G::RW + x * G::RS) * G::RC + c;
            v += act<T>::load(at<T>(arena, o.res) + r);
        }
    }
    if (G::RELU) v = relu(v);
    act<T>::store(at<T>(arena, o.out) + (i64)m * G::O + oc, v);
}

// ---- convolution on CUDA cores (f32 arithmetic, exact path) -------------

// A 64 (pixels) x 64 (channels) tile a block of 256 threads, 4 x 4 each;
// K in slices of 16 through shared memory. Weights f32 KRSC; a grouped
// conv runs group blockIdx.z's channels.
template <class T, class G>
__device__ __forceinline__ void conv_simt(const char* w, char* arena, const Off& o) {
    enum {
        BM = 64, BN = 64, BK = 16, M = G::N * G::OH * G::OW,
        CG = G::C / G::GROUPS, OG = G::O / G::GROUPS, K = G::KH * G::KW * CG
    };
    __shared__ float As[BK][BM + 4];
    __shared__ float Bs[BK][BN + 4];
    const int grp = blockIdx.z;
    const T* x = at<T>(arena, o.in) + grp * CG;
    const float* wt = at<float>(w, o.wt) + (i64)grp * OG * K;
    const int t = threadIdx.x, tx = t % 16, ty = t / 16;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    float acc[4][4];
    RC_PRAGMA_UNROLL
    for (int i = 0; i < 4; i++)
        RC_PRAGMA_UNROLL
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += BK) {
        // Four elements of A and of B a thread: consecutive threads take
        // consecutive k (channels, contiguous in NHWC and in KRSC).
        RC_PRAGMA_UNROLL
        for (int i = 0; i < 4; i++) {
            int e = t + i * 256, r = e / BK, k = k0 + e % BK;
            int m = m0 + r;
            float a = 0.0f;
            if (m < M && k < K) {
                int c = k % CG, q = k / CG, kh = q / G::KW, kw = q % G::KW;
                int n = m / (G::OH * G::OW), p = m % (G::OH * G::OW);
                int ih = (p / G::OW) * G::S - G::P + kh * G::D;
                int iw = (p % G::OW) * G::S - G::P + kw * G::D;
                if (ih >= 0 && ih < G::H && iw >= 0 && iw < G::W)
                    a = act<T>::load(x + (((i64)n * G::H + ih) * G::W + iw) * G::C + c);
            }
            As[e % BK][r] = a;
            int oc = n0 + r;
            Bs[e % BK][r] = (oc < OG && k < K) ? wt[(i64)oc * K + k] : 0.0f;
        }
        __syncthreads();
        RC_PRAGMA_UNROLL
        for (int k = 0; k < BK; k++) {
            float a[4], b[4];
            RC_PRAGMA_UNROLL
            for (int i = 0; i < 4; i++) a[i] = As[k][ty * 4 + i];
            RC_PRAGMA_UNROLL
            for (int j = 0; j < 4; j++) b[j] = Bs[k][tx * 4 + j];
            RC_PRAGMA_UNROLL
            for (int i = 0; i < 4; i++)
                RC_PRAGMA_UNROLL
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    RC_PRAGMA_UNROLL
    for (int i = 0; i < 4; i++) {
        int m = m0 + ty * 4 + i;
        RC_PRAGMA_UNROLL
        for (int j = 0; j < 4; j++) {
            int oc = n0 + tx * 4 + j;
            if (m < M && oc < OG) epilogue<T, G>(w, arena, o, m, grp * OG + oc, acc[i][j]);
        }
    }
}

// ---- convolution on tensor cores (tf32 / bf16, f32 accumulation) --------

// The CUTLASS 2.x shape: a 64 x 64 tile a block of 4 warps (2 x 2, 32 x 32
// each), K in slices of 64 bytes (32 bf16, 16 tf32) through a STAGES-deep
// cp.async pipeline; fragments by ldmatrix, products by mma.sync. The
// input is gathered straight from the NHWC map (implicit GEMM): a 16-byte
// chunk of channels at one tap, zero-filled outside the map. Needs the
// input channels in whole chunks (C % CHUNK == 0); others take conv_simt.
// Rows are padded to 80 bytes, so ldmatrix's 8 rows hit distinct banks.
template <class Pr, class G>
__device__ __forceinline__ void conv_tc(const char* w, char* arena, const Off& o) {
    typedef typename Pr::T T;
    enum {
        BM = 64, BN = 64, BKB = 64, ROWB = 80, STAGES = 3,
        BK = BKB / Pr::ELEM,       // elements of K a slice
        CH = Pr::CHUNK,             // elements a 16-byte chunk
        M = G::N * G::OH * G::OW, K = G::KH * G::KW * G::C,
        KT = (K + BK - 1) / BK
    };
    __shared__ __align__(16) char As[STAGES][BM * ROWB];
    __shared__ __align__(16) char Bs[STAGES][BN * ROWB];
    const T* x = at<T>(arena, o.in);
    const T* wt = at<T>(w, o.wt);
    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    const int wm = warp / 2, wn = warp % 2;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    // This thread's two A rows and two B rows (chunk column t % 4).
    const int col = t % 4;
    int an[2], ay[2], ax[2], arow[2];
    bool am[2];
    RC_PRAGMA_UNROLL
    for (int i = 0; i < 2; i++) {
        arow[i] = t / 4 + i * 32;
        int m = m0 + arow[i];
        am[i] = m < M;
        int mm = am[i] ? m : 0;
        an[i] = mm / (G::OH * G::OW);
        int p = mm % (G::OH * G::OW);
        ay[i] = (p / G::OW) * G::S - G::P;
        ax[i] = (p % G::OW) * G::S - G::P;
    }
    auto load = [&](int stage, int kt) {
        int k = kt * BK + col * CH;
        int c = k % G::C, q = k / G::C, kh = q / G::KW, kw = q % G::KW;
        RC_PRAGMA_UNROLL
        for (int i = 0; i < 2; i++) {
            int ih = ay[i] + kh * G::D, iw = ax[i] + kw * G::D;
            bool ok = am[i] && k < K && ih >= 0 && ih < G::H && iw >= 0 && iw < G::W;
            const T* src = ok ? x + (((i64)an[i] * G::H + ih) * G::W + iw) * G::C + c : x;
            cp_async16(&As[stage][arow[i] * ROWB + col * 16], src, ok);
            int oc = n0 + arow[i];
            bool okb = oc < G::O && k < K;
            const T* wsrc = okb ? wt + (i64)oc * K + k : wt;
            cp_async16(&Bs[stage][arow[i] * ROWB + col * 16], wsrc, okb);
        }
    };
    float acc[2][4][4];
    RC_PRAGMA_UNROLL
    for (int i = 0; i < 2; i++)
        RC_PRAGMA_UNROLL
        for (int j = 0; j < 4; j++)
            RC_PRAGMA_UNROLL
            for (int r = 0; r < 4; r++) acc[i][j][r] = 0.0f;
    RC_PRAGMA_UNROLL
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < KT) load(s, s);
        cp_async_commit();
    }
    // ldmatrix rows: A lane -> row lane % 16, byte column (lane / 16) * 16;
    // B lane -> row (lane & 7) + (lane >> 4) * 8, byte column ((lane >> 3) & 1) * 16.
    const int a_row = lane % 16, a_col = (lane / 16) * 16;
    const int b_row = (lane & 7) + (lane >> 4) * 8, b_col = ((lane >> 3) & 1) * 16;
    for (int kt = 0; kt < KT; kt++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        // The slot read in the last iteration is free now: fetch ahead into it.
        int next = kt + STAGES - 1;
        if (next < KT) load(next % STAGES, next);
        cp_async_commit();
        const char* as = As[kt % STAGES];
        const char* bs = Bs[kt % STAGES];
        RC_PRAGMA_UNROLL
        for (int ks = 0; ks < BKB / 32; ks++) {
            u32 a[2][4], b[2][4];
            RC_PRAGMA_UNROLL
            for (int i = 0; i < 2; i++) {
                ldmatrix_x4(a[i], as + (wm * 32 + i * 16 + a_row) * ROWB + ks * 32 + a_col);
                Pr::round_a(a[i]);
            }
            RC_PRAGMA_UNROLL
            for (int j = 0; j < 2; j++)
                ldmatrix_x4(b[j], bs + (wn * 32 + j * 16 + b_row) * ROWB + ks * 32 + b_col);
            RC_PRAGMA_UNROLL
            for (int i = 0; i < 2; i++)
                RC_PRAGMA_UNROLL
                for (int j = 0; j < 4; j++)
                    Pr::mma(acc[i][j], a[i], b[j / 2][(j % 2) * 2], b[j / 2][(j % 2) * 2 + 1]);
        }
    }
    cp_async_wait<0>();
    // Fragment (i, j, r): row g (+8 for r >= 2), column 2 * (lane % 4) + r % 2.
    const int g = lane / 4, tc = lane % 4;
    RC_PRAGMA_UNROLL
    for (int i = 0; i < 2; i++)
        RC_PRAGMA_UNROLL
        for (int j = 0; j < 4; j++)
            RC_PRAGMA_UNROLL
            for (int r = 0; r < 4; r++) {
                int m = m0 + wm * 32 + i * 16 + g + (r >= 2 ? 8 : 0);
                int oc = n0 + wn * 32 + j * 8 + 2 * tc + (r % 2);
                if (m < M && oc < G::O) epilogue<T, G>(w, arena, o, m, oc, acc[i][j][r]);
            }
}

// ---- everything else, one thread an output element -----------------------

// x (NCHW f32, the caller's) to the arena's NHWC input.
template <class T, int N, int C, int HW>
__device__ __forceinline__ void to_nhwc(const float* x, char* arena, const Off& o) {
    i64 i = global_index();
    if (i >= (i64)N * C * HW) return;
    int c = i % C;
    i64 p = (i / C) % HW, n = i / ((i64)C * HW);
    act<T>::store(at<T>(arena, o.out) + i, x[(n * C + c) * HW + p]);
}

// An NHWC value to the caller's f32 y, in NCHW order.
template <class T, int N, int C, int HW>
__device__ __forceinline__ void to_output(char* arena, float* y, const Off& o) {
    i64 i = global_index();
    if (i >= (i64)N * C * HW) return;
    int c = i % C;
    i64 p = (i / C) % HW, n = i / ((i64)C * HW);
    y[(n * C + c) * HW + p] = act<T>::load(at<T>(arena, o.in) + i);
}

// Max (-inf padding, NaN kept) or average (zero padding counted) pooling.
// A window that ceil mode runs past the padding averages over its taps
// inside the padded map, as PyTorch's does.
template <class T, bool MAX, int N, int C, int H, int W, int KS, int S, int P, int OH, int OW>
__device__ __forceinline__ void pool(char* arena, const Off& o) {
    i64 i = global_index();
    if (i >= (i64)N * OH * OW * C) return;
    int c = i % C;
    i64 q = i / C;
    int ox = q % OW, oy = (q / OW) % OH;
    i64 n = q / ((i64)OW * OH);
    const T* x = at<T>(arena, o.in);
    float acc = MAX ? -__int_as_float(0x7f800000) : 0.0f;
    for (int ky = 0; ky < KS; ky++) {
        int iy = oy * S - P + ky;
        if (iy < 0 || iy >= H) continue;
        for (int kx = 0; kx < KS; kx++) {
            int ix = ox * S - P + kx;
            if (ix < 0 || ix >= W) continue;
            float v = act<T>::load(x + ((n * H + iy) * W + ix) * C + c);
            acc = MAX ? max_nan(acc, v) : acc + v;
        }
    }
    int y0 = oy * S - P, x0 = ox * S - P;
    int ry = (y0 + KS < H + P ? y0 + KS : H + P) - y0;
    int rx = (x0 + KS < W + P ? x0 + KS : W + P) - x0;
    act<T>::store(at<T>(arena, o.out) + i, MAX ? acc : acc / (float)(ry * rx));
}

template <class T, int N, int C, int HW>
__device__ __forceinline__ void global_avg(char* arena, const Off& o) {
    i64 i = global_index();
    if (i >= (i64)N * C) return;
    int c = i % C;
    i64 n = i / C;
    const T* x = at<T>(arena, o.in) + n * HW * C + c;
    float s = 0.0f;
    for (int p = 0; p < HW; p++) s += act<T>::load(x + (i64)p * C);
    act<T>::store(at<T>(arena, o.out) + i, s / (float)HW);
}

// fc: out[n, o] = x[n, :] . W[o, :] + b[o]; weights f32 [out][in]. The
// network's logits go straight to the caller's y, in f32.
template <class T, int N, int F, int OUT, bool BIAS, bool TO_Y>
__device__ __forceinline__ void linear(const char* w, char* arena, float* y, const Off& o) {
    i64 i = global_index();
    if (i >= (i64)N * OUT) return;
    int oc = i % OUT;
    i64 n = i / OUT;
    const T* x = at<T>(arena, o.in) + n * F;
    const float* wr = at<float>(w, o.wt) + (i64)oc * F;
    float s = 0.0f;
    for (int f = 0; f < F; f++) s += act<T>::load(x + f) * wr[f];
    if (BIAS) s += at<float>(w, o.bias)[oc];
    if (TO_Y)
        y[i] = s;
    else
        act<T>::store(at<T>(arena, o.out) + i, s);
}

// relu?(x * scale[c] + shift[c]), c the innermost (NHWC) index.
template <class T, int LEN, int C, bool RELU>
__device__ __forceinline__ void scale_shift(const char* w, char* arena, const Off& o) {
    i64 i = global_index();
    if (i >= LEN) return;
    int c = i % C;
    float v = act<T>::load(at<T>(arena, o.in) + i) * at<float>(w, o.scale)[c] +
              at<float>(w, o.shift)[c];
    act<T>::store(at<T>(arena, o.out) + i, RELU ? relu(v) : v);
}

template <class T, int LEN>
__device__ __forceinline__ void relu_map(char* arena, const Off& o) {
    i64 i = global_index();
    if (i >= LEN) return;
    act<T>::store(at<T>(arena, o.out) + i, relu(act<T>::load(at<T>(arena, o.in) + i)));
}

template <class T, int LEN>
__device__ __forceinline__ void add(char* arena, const Off& o) {
    i64 i = global_index();
    if (i >= LEN) return;
    float v = act<T>::load(at<T>(arena, o.in) + i) + act<T>::load(at<T>(arena, o.res) + i);
    act<T>::store(at<T>(arena, o.out) + i, v);
}

// The option A shortcut, built: every S-th pixel, channels from B on.
template <class T, int N, int C, int H, int W, int S, int B, int OC, int OH, int OW>
__device__ __forceinline__ void shortcut_pad(char* arena, const Off& o) {
    i64 i = global_index();
    if (i >= (i64)N * OH * OW * OC) return;
    int oc = i % OC;
    i64 q = i / OC;
    int ox = q % OW, oy = (q / OW) % OH;
    i64 n = q / ((i64)OW * OH);
    int c = oc - B;
    float v = 0.0f;
    if (c >= 0 && c < C)
        v = act<T>::load(at<T>(arena, o.in) + ((n * H + oy * S) * W + ox * S) * C + c);
    act<T>::store(at<T>(arena, o.out) + i, v);
}

// NHWC [N, HW, C] to PyTorch's flatten order [N, C * HW].
template <class T, int N, int C, int HW>
__device__ __forceinline__ void flatten(char* arena, const Off& o) {
    i64 i = global_index();
    if (i >= (i64)N * C * HW) return;
    int c = i % C;
    i64 p = (i / C) % HW, n = i / ((i64)C * HW);
    act<T>::store(at<T>(arena, o.out) + (n * C + c) * HW + p, act<T>::load(at<T>(arena, o.in) + i));
}

}  // namespace rc
