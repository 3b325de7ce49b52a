/*
 * rnncli._kernel -- compiled hot loop of the simple (Elman) RNN recurrence.
 *
 *   recur(buf, U, h, activation, clip, leak, reverse) -> None
 *   project(x, W, out, bias=None) -> None
 *
 * buf (T, B, H) holds x_t W_ih^T + b on entry and the outputs on return;
 * U (H, H) is W_hh in PyTorch layout (pre = buf[t, b] + U @ h[b]);
 * h (B, H) is the initial state on entry and the final state on return.
 * All three are C-contiguous buffers of one dtype, float32 or float64.
 * project computes out = x @ W + bias (the input projection) with a
 * summation order that does not depend on the number of rows (see proj_t).
 *
 * Arrays come in through the buffer protocol only, so building needs no
 * numpy headers.
 *
 * Layout of this file:
 *   1. scalar path: plain C with libm, for any compiler and CPU;
 *   2. SIMD path in GCC/Clang generic vector types (no intrinsics).  One
 *      always-inline body per dtype and vector width is instantiated in
 *      small entry points compiled with target attributes: AVX-512F and
 *      AVX2+FMA on x86-64, 16-byte vectors for the baseline (SSE2 on
 *      x86-64, NEON on aarch64, ...).  No -march flag is needed; the
 *      module itself is baseline code;
 *   3. dispatch: the CPU is probed once at import with
 *      __builtin_cpu_supports (which also checks that the OS enables the
 *      AVX register state), so no instruction the CPU lacks ever runs;
 *   4. argument checking and the Python module.
 *
 * Tests force each code path with _set_isa(); benchmarks/bench_kernel.py
 * times them against numpy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ACT_TANH = 0, ACT_RELU = 1, ACT_SIGMOID = 2, ACT_LINEAR = 3 };

typedef struct {
    Py_ssize_t nsteps, B, H;
    Py_ssize_t ts, bs; /* element strides of buf between steps, batch rows */
    int act;
    int reverse;
    int do_clip;
    int do_leak;
    double clip;
    double leak;
    void *buf;     /* (T, B, H), rows of H contiguous; read and written */
    const void *U; /* (H, H), read only */
    void *h;       /* (B, H), read and written */
} job_t;

/* Every implementation returns 0, or -1 when it could not allocate its
 * scratch memory (the caller raises MemoryError once it holds the GIL). */
typedef int (*impl_fn)(const job_t *job);

/* The input projection out[n, :] = x[n, :] @ W + b.  Every element is
 * summed over f = 0 .. F-1 in that order, one multiply-add per term, and b
 * is added last (the bits of adding it in a second pass), by the same code
 * for every row: the last, partial tile of rows goes through a
 * zero-padded copy.  So a row's result does not depend on how many rows
 * came with it (BLAS kernels round differently at the edges of their
 * blocks), and a sequence run in two pieces projects to the same bits as
 * the whole. */
typedef struct {
    Py_ssize_t N, F, H;
    Py_ssize_t xs, os; /* element strides between rows of x and of out */
    const void *x;     /* (N, F), rows contiguous */
    const void *W;     /* (F, H), C-contiguous */
    const void *b;     /* (H,) or NULL */
    void *out;         /* (N, H), rows contiguous; written */
} proj_t;

typedef int (*proj_fn)(const proj_t *p);

/* Scratch memory aligned to 64 bytes without aligned_alloc (absent on
 * MSVC).  The offset to the block malloc returned is kept just before the
 * aligned pointer. */
static void *
scratch_alloc(size_t nbytes)
{
    unsigned char *raw = (unsigned char *)malloc(nbytes + 64);
    unsigned char *p;
    if (raw == NULL) {
        return NULL;
    }
    p = raw + (64 - ((uintptr_t)raw & 63));
    p[-1] = (unsigned char)(p - raw);
    return p;
}

static void
scratch_free(void *ptr)
{
    unsigned char *p = (unsigned char *)ptr;
    if (p != NULL) {
        free(p - p[-1]);
    }
}

/* The final state: B rows of `row_bytes` from `src` (rows `stride_bytes`
 * apart, the last step's rows of buf) into the contiguous (B, H) h. */
static void
copy_rows(void *dst, const void *src, Py_ssize_t B, size_t row_bytes,
          Py_ssize_t stride_bytes)
{
    Py_ssize_t b;
    for (b = 0; b < B; b++) {
        memcpy((char *)dst + b * (Py_ssize_t)row_bytes,
               (const char *)src + b * stride_bytes, row_bytes);
    }
}

/* ------------------------------------------------------------------ */
/* 1. Scalar path: plain C, libm activations.                          */
/* ------------------------------------------------------------------ */

/* Comparisons are written so that a NaN falls through unchanged
 * (fmin/fmax would drop it). */
#define SCALAR_RECUR(NAME, T, TANH, EXP)                                      \
    static int NAME(const job_t *jb)                                          \
    {                                                                         \
        const Py_ssize_t TT = jb->nsteps, B = jb->B, H = jb->H;                    \
        T *buf = (T *)jb->buf;                                                \
        const T *U = (const T *)jb->U;                                        \
        T *hout = (T *)jb->h;                                                 \
        const T clip = (T)jb->clip, lk = (T)jb->leak;                         \
        const T om = (T)(1.0 - jb->leak);                                     \
        T *h0;                                                                \
        const T *hprev;                                                       \
        Py_ssize_t s, b, i, j, hs;                                            \
        if (TT == 0 || B == 0 || H == 0) {                                    \
            return 0;                                                         \
        }                                                                     \
        /* private copy of the initial state: h may alias buf */              \
        h0 = (T *)scratch_alloc((size_t)(B * H) * sizeof(T));                 \
        if (h0 == NULL) {                                                     \
            return -1;                                                        \
        }                                                                     \
        memcpy(h0, hout, (size_t)(B * H) * sizeof(T));                        \
        hprev = h0;                                                           \
        hs = H; /* h0, then rows of buf */                                    \
        for (s = 0; s < TT; s++) {                                            \
            const Py_ssize_t t = jb->reverse ? TT - 1 - s : s;                \
            T *out = buf + t * jb->ts;                                        \
            for (b = 0; b < B; b++) {                                         \
                const T *hp = hprev + b * hs;                                 \
                T *o = out + b * jb->bs;                                      \
                for (i = 0; i < H; i++) {                                     \
                    const T *u = U + i * H;                                   \
                    T acc = o[i], v;                                          \
                    for (j = 0; j < H; j++) {                                 \
                        acc += u[j] * hp[j];                                  \
                    }                                                         \
                    if (jb->do_clip) {                                        \
                        acc = acc > clip ? clip : acc;                        \
                        acc = acc < -clip ? -clip : acc;                      \
                    }                                                         \
                    switch (jb->act) {                                        \
                    case ACT_TANH: v = TANH(acc); break;                      \
                    case ACT_RELU: v = acc < 0 ? (T)0 : acc; break;           \
                    case ACT_SIGMOID: v = (T)1 / ((T)1 + EXP(-acc)); break;   \
                    default: v = acc; break;                                  \
                    }                                                         \
                    if (jb->do_leak) {                                        \
                        v = om * hp[i] + lk * v;                              \
                    }                                                         \
                    o[i] = v;                                                 \
                }                                                             \
            }                                                                 \
            hprev = out;                                                      \
            hs = jb->bs;                                                      \
        }                                                                     \
        copy_rows(hout, hprev, B, (size_t)H * sizeof(T),                      \
                  hs * (Py_ssize_t)sizeof(T));                                \
        scratch_free(h0);                                                     \
        return 0;                                                             \
    }

SCALAR_RECUR(recur_scalar_f32, float, tanhf, expf)
SCALAR_RECUR(recur_scalar_f64, double, tanh, exp)

#define SCALAR_PROJECT(NAME, T)                                               \
    static int NAME(const proj_t *p)                                          \
    {                                                                         \
        const T *x = (const T *)p->x, *W = (const T *)p->W;                   \
        const T *b = (const T *)p->b;                                         \
        Py_ssize_t n, f, j;                                                   \
        for (n = 0; n < p->N; n++) {                                          \
            T *o = (T *)p->out + n * p->os;                                   \
            for (j = 0; j < p->H; j++) {                                      \
                o[j] = (T)0;                                                  \
            }                                                                 \
            for (f = 0; f < p->F; f++) {                                      \
                const T xf = x[n * p->xs + f];                                \
                const T *w = W + f * p->H;                                    \
                for (j = 0; j < p->H; j++) {                                  \
                    o[j] += xf * w[j];                                        \
                }                                                             \
            }                                                                 \
            if (b != NULL) {                                                  \
                for (j = 0; j < p->H; j++) {                                  \
                    o[j] += b[j];                                             \
                }                                                             \
            }                                                                 \
        }                                                                     \
        return 0;                                                             \
    }

SCALAR_PROJECT(project_scalar_f32, float)
SCALAR_PROJECT(project_scalar_f64, double)

/* ------------------------------------------------------------------ */
/* 2. SIMD path (GCC / Clang generic vectors).                         */
/* ------------------------------------------------------------------ */
#if defined(__GNUC__) || defined(__clang__)
#define RNN_HAVE_VECTOR 1

/* Each ISA gets vectors of its native register width (64 bytes for
 * AVX-512, 32 for AVX2, 16 for SSE2 / NEON / the rest): wider generic
 * vectors would be split by the compiler, badly for comparisons. */
#define DEFINE_VTYPES(N)                                                      \
    typedef float f32v##N __attribute__((vector_size(N)));                    \
    typedef int32_t i32v##N __attribute__((vector_size(N)));                  \
    typedef uint32_t u32v##N __attribute__((vector_size(N)));                 \
    typedef double f64v##N __attribute__((vector_size(N)));                   \
    typedef int64_t i64v##N __attribute__((vector_size(N)));                  \
    typedef uint64_t u64v##N __attribute__((vector_size(N)));
DEFINE_VTYPES(16)
DEFINE_VTYPES(32)
DEFINE_VTYPES(64)

#define INLINE static inline __attribute__((always_inline))

#if defined(__clang__)
#define RNN_UNROLL _Pragma("clang loop unroll(full)")
#else
#define RNN_UNROLL _Pragma("GCC unroll 16")
#endif

/* Everything below is always inlined into the per-ISA entry points at the
 * end of this section, so it is compiled once per ISA.  Vectors travel
 * between helpers by pointer: passing them by value from code compiled
 * for the baseline ISA would change the ABI (GCC warns about that). */

/* bit select: m ? a : b, lane by lane (m from a vector comparison) */
#define VSEL(VF, VI, m, a, b) ((VF)(((VI)(a) & (m)) | ((VI)(b) & ~(m))))

/* Loads and stores of the last, partial vector of a row go through a
 * zero-filled bounce array; full vectors use memcpy, which the compiler
 * turns into one unaligned vector move. */
#define DEFINE_MEM(SFX, T, VF)                                                \
    INLINE void vload_##SFX(VF *v, const T *p, Py_ssize_t n)                  \
    {                                                                         \
        enum { L = sizeof(VF) / sizeof(T) };                                  \
        if (n >= L) {                                                         \
            memcpy(v, p, sizeof(VF));                                         \
        }                                                                     \
        else {                                                                \
            T tmp[L];                                                         \
            Py_ssize_t k;                                                     \
            for (k = 0; k < L; k++) {                                         \
                tmp[k] = k < n ? p[k] : (T)0;                                 \
            }                                                                 \
            memcpy(v, tmp, sizeof(VF));                                       \
        }                                                                     \
    }                                                                         \
    INLINE void vstore_##SFX(T *p, const VF *v, Py_ssize_t n)                 \
    {                                                                         \
        enum { L = sizeof(VF) / sizeof(T) };                                  \
        if (n >= L) {                                                         \
            memcpy(p, v, sizeof(VF));                                         \
        }                                                                     \
        else {                                                                \
            T tmp[L];                                                         \
            Py_ssize_t k;                                                     \
            memcpy(tmp, v, sizeof(VF));                                       \
            for (k = 0; k < n; k++) {                                         \
                p[k] = tmp[k];                                                \
            }                                                                 \
        }                                                                     \
    }

/*
 * Activations from one exp kernel.  For y <= 0 (or NaN), vexp_parts gives
 * s = 2^n and q = e^r - 1 with y = n ln2 + r, |r| <= ln2/2, so that
 *     exp(y) = s + s q   and   expm1(y) = (s - 1) + s q.
 * n comes from the round-to-nearest shifter trick (the low mantissa bits
 * of k = y log2(e) + 1.5 2^p hold n in two's complement, so
 * (bits(k) + bias) << p is the bit pattern of 2^n); ln2 is split in two so
 * that n ln2_hi is exact; e^r - 1 = r + r^2 P(r) with P the Taylor series
 * (degree 7 for float, 13 for double: truncation below 2e-8 resp. 2e-17
 * relative).  Requires 2^n normal: n >= -126 (float), -1022 (double).
 */
#define DEFINE_EXP_F32(SFX, VF, VU)                                           \
    INLINE void vexp_parts_##SFX(const VF *py, VF *ps, VF *pq)                \
    {                                                                         \
        const VF y = *py;                                                     \
        VF k, n, r, p;                                                        \
        k = y * 1.44269502163f + 12582912.0f; /* 0x1.8p23 */                  \
        n = k - 12582912.0f;                                                  \
        r = y - n * 0.693145751953125f;     /* ln2_hi, 17 bits */             \
        r = r - n * 1.428606765330187e-06f; /* ln2_lo */                      \
        p = (VF){0} + 1.0f / 40320.0f;                                        \
        p = p * r + 1.0f / 5040.0f;                                           \
        p = p * r + 1.0f / 720.0f;                                            \
        p = p * r + 1.0f / 120.0f;                                            \
        p = p * r + 1.0f / 24.0f;                                             \
        p = p * r + 1.0f / 6.0f;                                              \
        p = p * r + 0.5f;                                                     \
        *pq = (r * r) * p + r;                                                \
        *ps = (VF)(((VU)k + 127u) << 23);                                     \
    }

#define DEFINE_EXP_F64(SFX, VF, VU)                                           \
    INLINE void vexp_parts_##SFX(const VF *py, VF *ps, VF *pq)                \
    {                                                                         \
        const VF y = *py;                                                     \
        VF k, n, r, p;                                                        \
        k = y * 1.4426950408889634 + 6755399441055744.0; /* 0x1.8p52 */       \
        n = k - 6755399441055744.0;                                           \
        r = y - n * 0.6931471805592082;    /* ln2_hi, 41 bits */              \
        r = r - n * 7.371002565167799e-13; /* ln2_lo */                       \
        p = (VF){0} + 1.6059043836821613e-10; /* 1/13! */                     \
        p = p * r + 2.08767569878681e-09;     /* 1/12! */                     \
        p = p * r + 2.505210838544172e-08;    /* 1/11! */                     \
        p = p * r + 2.755731922398589e-07;    /* 1/10! */                     \
        p = p * r + 2.7557319223985893e-06;   /* 1/9! */                      \
        p = p * r + 2.48015873015873e-05;     /* 1/8! */                      \
        p = p * r + 0.0001984126984126984;    /* 1/7! */                      \
        p = p * r + 0.001388888888888889;     /* 1/6! */                      \
        p = p * r + 0.008333333333333333;     /* 1/5! */                      \
        p = p * r + 0.041666666666666664;     /* 1/4! */                      \
        p = p * r + 0.16666666666666666;      /* 1/3! */                      \
        p = p * r + 0.5;                                                      \
        *pq = (r * r) * p + r;                                                \
        *ps = (VF)(((VU)k + 1023u) << 52);                                    \
    }

/* tanh(x) = sign(x) * (-e / (2 + e)), e = expm1(-2 min(|x|, A));
 * sigmoid(x) = 1 / (1 + E) for x >= 0 and E / (1 + E) for x < 0,
 * E = exp(-|x|) (0 beyond A').  Both keep full relative accuracy, near 0
 * and in the tails.  A = 9 / 20 (tanh rounds to 1 beyond, in float /
 * double); A' = 87 / 708 keeps 2^n normal.  A NaN passes the clamps (a
 * comparison with NaN is false) and propagates; +-inf give +-1 / 0, 1.
 * Measured: float tanh within 1.5e-7 absolute of the true value, double
 * tanh within 3 ulp of numpy's. */
#define DEFINE_ACTS(SFX, T, VF, VI, VU, SIGNBIT, TANH_MAX, SIG_MAX)           \
    INLINE void vtanh_##SFX(VF *px)                                           \
    {                                                                         \
        const VF x = *px;                                                     \
        const VU sign = (VU)x & SIGNBIT;                                      \
        VF a = (VF)((VU)x & ~SIGNBIT), y, s, q, e, t;                         \
        a = VSEL(VF, VI, a > (T)TANH_MAX, (VF){0} + (T)TANH_MAX, a);          \
        y = (T)-2 * a;                                                        \
        vexp_parts_##SFX(&y, &s, &q);                                         \
        e = (s - (T)1) + s * q;                                               \
        t = -e / ((T)2 + e);                                                  \
        /* t >= 0 (clear the sign of a -0), then give it the sign of x */     \
        *px = (VF)(((VU)t & ~SIGNBIT) | sign);                                \
    }                                                                         \
    INLINE void vsigmoid_##SFX(VF *px)                                        \
    {                                                                         \
        const VF x = *px;                                                     \
        const VF a = (VF)((VU)x & ~SIGNBIT);                                  \
        const VI big = a > (T)SIG_MAX;                                        \
        VF y, s, q, E, d;                                                     \
        y = -VSEL(VF, VI, big, (VF){0} + (T)SIG_MAX, a);                      \
        vexp_parts_##SFX(&y, &s, &q);                                         \
        E = VSEL(VF, VI, big, (VF){0}, s + s * q);                            \
        d = (T)1 + E;                                                         \
        *px = VSEL(VF, VI, x < (T)0, E / d, (T)1 / d);                        \
    }

/* clip, activation and leak for one output vector; hp points at the same
 * columns of the previous state (n valid lanes) */
#define DEFINE_EPILOGUE(SFX, T, VF, VI)                                       \
    INLINE void epilogue_##SFX(VF *pv, const T *hp, Py_ssize_t n,             \
                               const job_t *jb)                               \
    {                                                                         \
        VF v = *pv;                                                           \
        if (jb->do_clip) {                                                    \
            const T c = (T)jb->clip;                                          \
            v = VSEL(VF, VI, v > c, (VF){0} + c, v);                          \
            v = VSEL(VF, VI, v < -c, (VF){0} - c, v);                         \
        }                                                                     \
        switch (jb->act) {                                                    \
        case ACT_TANH:                                                        \
            vtanh_##SFX(&v);                                                  \
            break;                                                            \
        case ACT_RELU:                                                        \
            v = VSEL(VF, VI, v < (T)0, (VF){0}, v); /* NaN stays NaN */       \
            break;                                                            \
        case ACT_SIGMOID:                                                     \
            vsigmoid_##SFX(&v);                                               \
            break;                                                            \
        default:                                                              \
            break;                                                            \
        }                                                                     \
        if (jb->do_leak) {                                                    \
            VF hv;                                                            \
            vload_##SFX(&hv, hp, n);                                          \
            v = (T)(1.0 - jb->leak) * hv + (T)jb->leak * v;                   \
        }                                                                     \
        *pv = v;                                                              \
    }

/*
 * The driver.  Per step, out[b, :] = act(in[b, :] + U @ hprev[b, :]) is a
 * small GEMM done in register tiles of RB batch rows x CT vectors of
 * output columns: the accumulators stay in registers for the whole
 * reduction over j; each j costs CT vector loads of U^T[j, tile], RB
 * broadcasts of hprev[b, j] and RB*CT fused multiply-adds.  With KS = 2
 * the j range is split over two sets of accumulators (summed at the end),
 * doubling the independent FMA chains for a single row.  U is transposed
 * once per call into Ut, packed panel by panel (each panel: H rows of CT
 * vectors, zero-padded past column H) so that a tile reads its panel
 * sequentially, with full vectors only, and large H does not stride
 * through memory in multiples of 4 KiB.  For batches the column panels are
 * the outer loop, so one panel of Ut (H x CT vectors) stays in L1 while
 * every block of rows uses it.  hprev is the previous output row inside
 * buf (or a private copy of the initial state), so a step costs no
 * copies.  RB, CT and KS are compile-time constants in every
 * instantiation: the tile loops unroll fully and the accumulator arrays
 * live in registers.
 */
#define DEFINE_DRIVER(SFX, T, VF)                                             \
    typedef struct {                                                          \
        const job_t *jb;                                                      \
        const T *Ut;                                                          \
        Py_ssize_t H;                                                         \
        Py_ssize_t os, hs; /* row strides of out and of hprev */              \
    } ctx_##SFX;                                                              \
                                                                              \
    INLINE void tile_##SFX(const ctx_##SFX *cx, T *out, const T *hprev,       \
                           Py_ssize_t b0, Py_ssize_t v0, const int RB,        \
                           const int CT, const int KS)                        \
    {                                                                         \
        enum { L = sizeof(VF) / sizeof(T) };                                  \
        const Py_ssize_t H = cx->H;                                           \
        /* the panel holding vectors v0 .. v0+CT-1: H rows of CT vectors */   \
        const T *Ut = cx->Ut + H * v0 * L;                                    \
        VF acc[2][4][8]; /* KS <= 2, RB <= 4, CT <= 8 */                      \
        int r, c, k;                                                          \
        Py_ssize_t j = 0;                                                     \
        RNN_UNROLL for (r = 0; r < RB; r++)                                   \
        {                                                                     \
            RNN_UNROLL for (c = 0; c < CT; c++)                               \
            {                                                                 \
                vload_##SFX(&acc[0][r][c],                                    \
                            out + (b0 + r) * cx->os + (v0 + c) * L,           \
                            H - (v0 + c) * L);                                \
                RNN_UNROLL for (k = 1; k < KS; k++)                           \
                {                                                             \
                    acc[k][r][c] = (VF){0};                                   \
                }                                                             \
            }                                                                 \
        }                                                                     \
        for (; j + KS <= H; j += KS) {                                        \
            RNN_UNROLL for (k = 0; k < KS; k++)                               \
            {                                                                 \
                const T *u = Ut + (j + k) * (CT * L);                         \
                VF uv[8];                                                     \
                RNN_UNROLL for (c = 0; c < CT; c++)                           \
                {                                                             \
                    memcpy(&uv[c], u + c * L, sizeof(VF));                    \
                }                                                             \
                RNN_UNROLL for (r = 0; r < RB; r++)                           \
                {                                                             \
                    const T hj = hprev[(b0 + r) * cx->hs + j + k];            \
                    RNN_UNROLL for (c = 0; c < CT; c++)                       \
                    {                                                         \
                        acc[k][r][c] += uv[c] * hj;                           \
                    }                                                         \
                }                                                             \
            }                                                                 \
        }                                                                     \
        for (; j < H; j++) { /* KS == 2 and H odd */                          \
            const T *u = Ut + j * (CT * L);                                   \
            RNN_UNROLL for (r = 0; r < RB; r++)                               \
            {                                                                 \
                const T hj = hprev[(b0 + r) * cx->hs + j];                    \
                RNN_UNROLL for (c = 0; c < CT; c++)                           \
                {                                                             \
                    VF uv;                                                    \
                    memcpy(&uv, u + c * L, sizeof(VF));                       \
                    acc[0][r][c] += uv * hj;                                  \
                }                                                             \
            }                                                                 \
        }                                                                     \
        RNN_UNROLL for (r = 0; r < RB; r++)                                   \
        {                                                                     \
            RNN_UNROLL for (c = 0; c < CT; c++)                               \
            {                                                                 \
                const Py_ssize_t col = (v0 + c) * L;                          \
                RNN_UNROLL for (k = 1; k < KS; k++)                           \
                {                                                             \
                    acc[0][r][c] += acc[k][r][c];                             \
                }                                                             \
                epilogue_##SFX(&acc[0][r][c],                                 \
                               hprev + (b0 + r) * cx->hs + col, H - col,      \
                               cx->jb);                                       \
                vstore_##SFX(out + (b0 + r) * cx->os + col, &acc[0][r][c],    \
                             H - col);                                        \
            }                                                                 \
        }                                                                     \
    }                                                                         \
                                                                              \
    /* one batch row, all columns: tiles of CT vectors, then 4, 2, 1 */     \
    INLINE void row_##SFX(const ctx_##SFX *cx, T *out, const T *hprev,        \
                          Py_ssize_t b, const int CT, const int KS)           \
    {                                                                         \
        enum { L = sizeof(VF) / sizeof(T) };                                  \
        const Py_ssize_t nv = (cx->H + L - 1) / L;                            \
        Py_ssize_t v0 = 0;                                                    \
        for (; v0 + CT <= nv; v0 += CT) {                                     \
            tile_##SFX(cx, out, hprev, b, v0, 1, CT, KS);                     \
        }                                                                     \
        if (CT > 4 && v0 + 4 <= nv) {                                         \
            tile_##SFX(cx, out, hprev, b, v0, 1, 4, KS);                      \
            v0 += 4;                                                          \
        }                                                                     \
        if (CT > 2 && v0 + 2 <= nv) {                                         \
            tile_##SFX(cx, out, hprev, b, v0, 1, 2, KS);                      \
            v0 += 2;                                                          \
        }                                                                     \
        if (CT > 1 && v0 < nv) {                                              \
            tile_##SFX(cx, out, hprev, b, v0, 1, 1, KS);                      \
        }                                                                     \
    }                                                                         \
                                                                              \
    /* one panel of CT column vectors, all batch rows (RB at a time): the     \
     * panel of Ut is reused from L1 by every row block */                    \
    INLINE void panel_##SFX(const ctx_##SFX *cx, T *out, const T *hprev,      \
                            Py_ssize_t B, Py_ssize_t v0, const int RB,        \
                            const int CT)                                     \
    {                                                                         \
        Py_ssize_t b0 = 0;                                                    \
        for (; b0 + RB <= B; b0 += RB) {                                      \
            tile_##SFX(cx, out, hprev, b0, v0, RB, CT, 1);                    \
        }                                                                     \
        for (; b0 < B; b0++) {                                                \
            tile_##SFX(cx, out, hprev, b0, v0, 1, CT, 1);                     \
        }                                                                     \
    }                                                                         \
                                                                              \
    /* one time step, B >= RB: panels of CT column vectors, then 2, 1 */      \
    INLINE void batch_##SFX(const ctx_##SFX *cx, T *out, const T *hprev,      \
                            Py_ssize_t B, const int RB, const int CT)         \
    {                                                                         \
        enum { L = sizeof(VF) / sizeof(T) };                                  \
        const Py_ssize_t nv = (cx->H + L - 1) / L;                            \
        Py_ssize_t v0 = 0;                                                    \
        for (; v0 + CT <= nv; v0 += CT) {                                     \
            panel_##SFX(cx, out, hprev, B, v0, RB, CT);                       \
        }                                                                     \
        if (CT > 2 && v0 + 2 <= nv) {                                         \
            panel_##SFX(cx, out, hprev, B, v0, RB, 2);                        \
            v0 += 2;                                                          \
        }                                                                     \
        if (CT > 1 && v0 < nv) {                                              \
            panel_##SFX(cx, out, hprev, B, v0, RB, 1);                        \
        }                                                                     \
    }                                                                         \
                                                                              \
    INLINE int recur_body_##SFX(const job_t *jb, const int RB, const int CTN, \
                                const int CT1, const int KS1)                 \
    {                                                                         \
        enum { L = sizeof(VF) / sizeof(T) };                                  \
        const Py_ssize_t TT = jb->nsteps, B = jb->B, H = jb->H;               \
        const Py_ssize_t Hp = (H + L - 1) / L * L;                            \
        T *buf = (T *)jb->buf;                                                \
        const T *U = (const T *)jb->U;                                        \
        const Py_ssize_t nv = Hp / L;                                         \
        /* the column tiling the loops below will use */                      \
        const int CT = B < RB ? CT1 : CTN;                                    \
        T *Ut, *h0;                                                           \
        const T *hprev;                                                       \
        ctx_##SFX cx;                                                         \
        Py_ssize_t s, i, j, b0, v0, w;                                        \
        if (TT == 0 || B == 0 || H == 0) {                                    \
            return 0;                                                         \
        }                                                                     \
        Ut = (T *)scratch_alloc((size_t)(H * Hp + B * H) * sizeof(T));        \
        if (Ut == NULL) {                                                     \
            return -1;                                                        \
        }                                                                     \
        h0 = Ut + H * Hp;                                                     \
        /* pack U^T panel by panel, in the order the tiles read it */         \
        for (v0 = 0; v0 < nv; v0 += w) {                                     \
            const Py_ssize_t rem = nv - v0;                                   \
            T *panel = Ut + H * v0 * L;                                       \
            w = rem >= CT ? CT : (CT > 4 && rem >= 4) ? 4                     \
                           : (CT > 2 && rem >= 2) ? 2 : 1;                    \
            for (j = 0; j < H; j++) {                                         \
                T *row = panel + j * w * L;                                   \
                for (i = 0; i < w * L; i++) {                                 \
                    const Py_ssize_t col = v0 * L + i;                        \
                    row[i] = col < H ? U[col * H + j] : (T)0;                 \
                }                                                             \
            }                                                                 \
        }                                                                     \
        /* private copy of the initial state: h may alias buf */              \
        memcpy(h0, jb->h, (size_t)(B * H) * sizeof(T));                       \
        cx.jb = jb;                                                           \
        cx.Ut = Ut;                                                           \
        cx.H = H;                                                             \
        cx.os = jb->bs;                                                       \
        cx.hs = H; /* h0, then rows of buf */                                 \
        hprev = h0;                                                           \
        for (s = 0; s < TT; s++) {                                            \
            const Py_ssize_t t = jb->reverse ? TT - 1 - s : s;                \
            T *out = buf + t * jb->ts;                                        \
            if (B < RB) {                                                     \
                for (b0 = 0; b0 < B; b0++) {                                  \
                    row_##SFX(&cx, out, hprev, b0, CT1, KS1);                 \
                }                                                             \
            }                                                                 \
            else {                                                            \
                batch_##SFX(&cx, out, hprev, B, RB, CTN);                     \
            }                                                                 \
            hprev = out;                                                      \
            cx.hs = jb->bs;                                                   \
        }                                                                     \
        copy_rows(jb->h, hprev, B, (size_t)H * sizeof(T),                     \
                  cx.hs * (Py_ssize_t)sizeof(T));                             \
        scratch_free(Ut);                                                     \
        return 0;                                                             \
    }

/* The projection in tiles of PR rows x C vectors of columns.  For many
 * rows W is first copied into zero-padded panels of C*L columns (F rows
 * each), so every load of W is a full vector and a panel stays in L1/L2
 * while all row tiles pass over it; for a few rows (a stream of single
 * steps) the copy would cost more than the product, and W is read in place
 * (the partial last vector of a row through vload).  Either way every
 * element sees the same operations in the same order: the same bits. */
#define DEFINE_PROJECT(SFX, T, VF)                                            \
    INLINE int project_body_##SFX(const proj_t *p, const int C,               \
                                  const int packed)                           \
    {                                                                         \
        enum { L = sizeof(VF) / sizeof(T), PR = 4 };                          \
        const Py_ssize_t N = p->N, F = p->F, H = p->H, PW = C * L;            \
        const Py_ssize_t npanels = (H + PW - 1) / PW;                         \
        const T *x = (const T *)p->x, *W = (const T *)p->W;                   \
        const T *b = (const T *)p->b;                                         \
        T *panels = NULL, *pad, *bias = NULL;                                 \
        Py_ssize_t q, n0, f, k;                                               \
        int r, c;                                                             \
        if (N == 0 || H == 0) {                                               \
            return 0;                                                         \
        }                                                                     \
        if (packed) {                                                         \
            panels = (T *)scratch_alloc(                                      \
                (size_t)(npanels * PW * (F + 1) + 1) * sizeof(T));            \
            if (panels == NULL) {                                             \
                return -1;                                                    \
            }                                                                 \
        }                                                                     \
        pad = (T *)scratch_alloc((size_t)(PR * F + 1) * sizeof(T));           \
        if (pad == NULL) {                                                    \
            scratch_free(panels);                                             \
            return -1;                                                        \
        }                                                                     \
        if (packed) {                                                         \
            for (q = 0; q < npanels; q++) {                                   \
                for (f = 0; f < F; f++) {                                     \
                    for (k = 0; k < PW; k++) {                                \
                        const Py_ssize_t col = q * PW + k;                    \
                        panels[(q * F + f) * PW + k] =                        \
                            col < H ? W[f * H + col] : (T)0;                  \
                    }                                                         \
                }                                                             \
            }                                                                 \
            bias = panels + npanels * PW * F; /* zero-padded too */           \
            for (k = 0; k < npanels * PW; k++) {                              \
                bias[k] = b != NULL && k < H ? b[k] : (T)0;                   \
            }                                                                 \
        }                                                                     \
        memset(pad, 0, (size_t)(PR * F) * sizeof(T));                         \
        for (q = 0; q < npanels; q++) {                                       \
            const T *panel = packed ? panels + q * F * PW : W + q * PW;       \
            const Py_ssize_t cols = H - q * PW < PW ? H - q * PW : PW;        \
            const Py_ssize_t wstride = packed ? PW : H;                       \
            for (n0 = 0; n0 < N; n0 += PR) {                                  \
                const int rows = N - n0 < PR ? (int)(N - n0) : PR;            \
                const T *xr[PR];                                              \
                VF acc[PR][4]; /* C <= 4 */                                   \
                RNN_UNROLL for (r = 0; r < PR; r++)                           \
                {                                                             \
                    xr[r] = rows == PR ? x + (n0 + r) * p->xs : pad + r * F;  \
                    RNN_UNROLL for (c = 0; c < C; c++)                        \
                    {                                                         \
                        acc[r][c] = (VF){0};                                  \
                    }                                                         \
                }                                                             \
                if (rows < PR) { /* the same code on zero-padded rows */      \
                    for (r = 0; r < rows; r++) {                              \
                        memcpy(pad + r * F, x + (n0 + r) * p->xs,             \
                               (size_t)F * sizeof(T));                        \
                    }                                                         \
                }                                                             \
                for (f = 0; f < F; f++) {                                     \
                    VF w[4];                                                  \
                    RNN_UNROLL for (c = 0; c < C; c++)                        \
                    {                                                         \
                        if (packed) {                                         \
                            memcpy(&w[c], panel + f * wstride + c * L,        \
                                   sizeof(VF));                               \
                        }                                                     \
                        else {                                                \
                            vload_##SFX(&w[c], panel + f * wstride + c * L,   \
                                        cols - c * L);                        \
                        }                                                     \
                    }                                                         \
                    RNN_UNROLL for (r = 0; r < PR; r++)                       \
                    {                                                         \
                        const T xf = xr[r][f];                                \
                        RNN_UNROLL for (c = 0; c < C; c++)                    \
                        {                                                     \
                            acc[r][c] += w[c] * xf;                           \
                        }                                                     \
                    }                                                         \
                }                                                             \
                if (b != NULL) {                                              \
                    RNN_UNROLL for (c = 0; c < C; c++)                        \
                    {                                                         \
                        VF bv;                                                \
                        if (packed) {                                         \
                            memcpy(&bv, bias + q * PW + c * L, sizeof(VF));   \
                        }                                                     \
                        else {                                                \
                            vload_##SFX(&bv, b + q * PW + c * L,              \
                                        cols - c * L);                        \
                        }                                                     \
                        RNN_UNROLL for (r = 0; r < PR; r++)                   \
                        {                                                     \
                            acc[r][c] += bv;                                  \
                        }                                                     \
                    }                                                         \
                }                                                             \
                for (r = 0; r < rows; r++) {                                  \
                    T *o = (T *)p->out + (n0 + r) * p->os + q * PW;           \
                    RNN_UNROLL for (c = 0; c < C; c++)                        \
                    {                                                         \
                        if (c * L < cols) {                                   \
                            vstore_##SFX(o + c * L, &acc[r][c],               \
                                         cols - c * L);                       \
                        }                                                     \
                    }                                                         \
                }                                                             \
            }                                                                 \
        }                                                                     \
        scratch_free(panels);                                                 \
        scratch_free(pad);                                                    \
        return 0;                                                             \
    }

#define DEFINE_F32(N)                                                         \
    DEFINE_MEM(f32v##N, float, f32v##N)                                       \
    DEFINE_EXP_F32(f32v##N, f32v##N, u32v##N)                                 \
    DEFINE_ACTS(f32v##N, float, f32v##N, i32v##N, u32v##N, 0x80000000u, 9.0f, \
                87.0f)                                                        \
    DEFINE_EPILOGUE(f32v##N, float, f32v##N, i32v##N)                         \
    DEFINE_DRIVER(f32v##N, float, f32v##N)                                    \
    DEFINE_PROJECT(f32v##N, float, f32v##N)

#define DEFINE_F64(N)                                                         \
    DEFINE_MEM(f64v##N, double, f64v##N)                                      \
    DEFINE_EXP_F64(f64v##N, f64v##N, u64v##N)                                 \
    DEFINE_ACTS(f64v##N, double, f64v##N, i64v##N, u64v##N,                   \
                0x8000000000000000ull, 20.0, 708.0)                           \
    DEFINE_EPILOGUE(f64v##N, double, f64v##N, i64v##N)                        \
    DEFINE_DRIVER(f64v##N, double, f64v##N)                                   \
    DEFINE_PROJECT(f64v##N, double, f64v##N)

/* Rows from which the projection copies W into panels first (measured:
 * below it the copy costs more than it saves). */
#define PROJECT_PACK_ROWS 24

static int packs_panels(const proj_t *p) { return p->N > PROJECT_PACK_ROWS; }

/* Entry points per ISA.  N: vector bytes.  Tiles: RB x CTN vectors when
 * B >= RB (CTN <= 4), else 1 x CT1 per row with the j range split KS1
 * ways (KS1 <= 2); chosen so the accumulators and loaded U vectors fit the
 * register file (32 zmm / 16 ymm / 16 xmm) and a single row still has 8
 * or more independent FMA chains.  Measured on this project's CI machine
 * (AVX-512): 4x4 beat 6x4, 8x2, 4x2 and 8x3 for batches; 1x8 with KS=2
 * beat 1x4 and KS=1 for single rows.  PC: vectors per projection tile
 * (4 rows x PC accumulators, PC <= 4). */
#define DEFINE_ISA(NAME, ATTR, N, RB, CTN, CT1, KS1, PC)                      \
    ATTR static int recur_##NAME##_f32(const job_t *jb)                       \
    {                                                                         \
        return recur_body_f32v##N(jb, RB, CTN, CT1, KS1);                     \
    }                                                                         \
    ATTR static int recur_##NAME##_f64(const job_t *jb)                       \
    {                                                                         \
        return recur_body_f64v##N(jb, RB, CTN, CT1, KS1);                     \
    }                                                                         \
    ATTR static int project_##NAME##_f32(const proj_t *p)                     \
    {                                                                         \
        return packs_panels(p) ? project_body_f32v##N(p, PC, 1)               \
                               : project_body_f32v##N(p, PC, 0);              \
    }                                                                         \
    ATTR static int project_##NAME##_f64(const proj_t *p)                     \
    {                                                                         \
        return packs_panels(p) ? project_body_f64v##N(p, PC, 1)               \
                               : project_body_f64v##N(p, PC, 0);              \
    }

DEFINE_F32(16)
DEFINE_F64(16)
DEFINE_ISA(generic, , 16, 4, 2, 4, 2, 2)

#if defined(__x86_64__)
#define RNN_HAVE_X86 1
DEFINE_F32(32)
DEFINE_F64(32)
DEFINE_F32(64)
DEFINE_F64(64)
DEFINE_ISA(avx2, __attribute__((target("avx2,fma"))), 32, 4, 2, 4, 2, 2)
DEFINE_ISA(avx512, __attribute__((target("avx512f,avx2,fma"))), 64, 4, 4, 8,
           2, 4)
#endif

#endif /* vector path */

/* ------------------------------------------------------------------ */
/* 3. Dispatch.                                                        */
/* ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    impl_fn f32;
    impl_fn f64;
    proj_fn p32;
    proj_fn p64;
    int supported;
} isa_t;

static isa_t isas[] = {
#if defined(RNN_HAVE_X86)
    {"avx512f", recur_avx512_f32, recur_avx512_f64, project_avx512_f32,
     project_avx512_f64, 0},
    {"avx2", recur_avx2_f32, recur_avx2_f64, project_avx2_f32,
     project_avx2_f64, 0},
#endif
#if defined(RNN_HAVE_VECTOR)
    {"generic", recur_generic_f32, recur_generic_f64, project_generic_f32,
     project_generic_f64, 1},
#endif
    {"scalar", recur_scalar_f32, recur_scalar_f64, project_scalar_f32,
     project_scalar_f64, 1},
};
#define N_ISAS ((int)(sizeof(isas) / sizeof(isas[0])))

static const isa_t *current_isa = NULL;

static void
detect_isas(void)
{
    int i;
#if defined(RNN_HAVE_X86)
    /* libgcc / compiler-rt check the OS enables the register state too */
    __builtin_cpu_init();
    isas[0].supported = __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx2") &&
                        __builtin_cpu_supports("fma");
    isas[1].supported = __builtin_cpu_supports("avx2") &&
                        __builtin_cpu_supports("fma");
#endif
    for (i = 0; i < N_ISAS; i++) {
        if (isas[i].supported) {
            current_isa = &isas[i];
            return;
        }
    }
}

/* ------------------------------------------------------------------ */
/* 4. Python interface.                                                */
/* ------------------------------------------------------------------ */

/* 'f' / 'd' in native byte order, else 0 */
static char
buffer_kind(const Py_buffer *v)
{
    const char *f = v->format ? v->format : "B";
    if (*f == '@' || *f == '=') {
        f++;
    }
#if PY_LITTLE_ENDIAN
    else if (*f == '<') {
        f++;
    }
#else
    else if (*f == '>' || *f == '!') {
        f++;
    }
#endif
    if (f[0] == 'f' && f[1] == '\0' && v->itemsize == 4) {
        return 'f';
    }
    if (f[0] == 'd' && f[1] == '\0' && v->itemsize == 8) {
        return 'd';
    }
    return 0;
}

static const char *
kind_name(const Py_buffer *v)
{
    switch (buffer_kind(v)) {
    case 'f': return "float32";
    case 'd': return "float64";
    default: return v->format ? v->format : "B";
    }
}

/* "(2, 3, 4)" */
static PyObject *
shape_str(const Py_buffer *v)
{
    PyObject *parts, *sep, *joined, *res;
    int i;
    parts = PyList_New(0);
    if (parts == NULL) {
        return NULL;
    }
    for (i = 0; i < v->ndim; i++) {
        PyObject *s = PyUnicode_FromFormat("%zd", v->shape[i]);
        if (s == NULL || PyList_Append(parts, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(s);
    }
    sep = PyUnicode_FromString(", ");
    joined = sep ? PyUnicode_Join(sep, parts) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(parts);
    if (joined == NULL) {
        return NULL;
    }
    res = PyUnicode_FromFormat(v->ndim == 1 ? "(%U,)" : "(%U)", joined);
    Py_DECREF(joined);
    return res;
}

/* Export `obj` into `view` and check ndim, layout and writability: C
 * order, or with rows_only, contiguous rows at any whole-element strides
 * (a transposed view).  Shapes and dtypes are checked later, across the
 * three arrays. */
static int
get_array(PyObject *obj, Py_buffer *view, const char *name, int ndim,
          const char *dims, int writable, int rows_only)
{
    int i, laid_out;
    if (PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "%s must be a float32 or float64 array of shape "
                     "%s supporting the buffer protocol, not %.200s",
                     name, dims, Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (view->ndim != ndim) {
        PyObject *sh = shape_str(view);
        if (sh != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "%s must be %dD with shape %s, got shape %U",
                         name, ndim, dims, sh);
            Py_DECREF(sh);
        }
        PyBuffer_Release(view);
        return -1;
    }
    laid_out = PyBuffer_IsContiguous(view, 'C');
    if (rows_only && !laid_out) { /* strides of size-1 axes are never used */
        laid_out = view->shape[ndim - 1] <= 1 ||
                   view->strides[ndim - 1] == view->itemsize;
        for (i = 0; i < ndim - 1; i++) {
            laid_out = laid_out && (view->shape[i] <= 1 ||
                                    view->strides[i] % view->itemsize == 0);
        }
    }
    if (!laid_out) {
        PyObject *sh = shape_str(view);
        if (sh != NULL) {
            PyErr_Format(PyExc_ValueError,
                         "%s of shape %U must be %s "
                         "(use numpy.ascontiguousarray)",
                         name, sh,
                         rows_only ? "made of contiguous rows"
                                   : "C-contiguous");
            Py_DECREF(sh);
        }
        PyBuffer_Release(view);
        return -1;
    }
    if (writable && view->readonly) {
        PyErr_Format(PyExc_ValueError,
                     "%s is read-only; it is updated in place", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *
shape_error(const Py_buffer *vb, const Py_buffer *vu, const Py_buffer *vh)
{
    PyObject *sb = shape_str(vb), *su = shape_str(vu), *sh = shape_str(vh);
    if (sb && su && sh) {
        PyErr_Format(PyExc_ValueError,
                     "recur: shapes do not match: buf %U is (T, B, H), so U "
                     "must be (%zd, %zd) and h (%zd, %zd); got U %U and h %U",
                     sb, vb->shape[2], vb->shape[2], vb->shape[1],
                     vb->shape[2], su, sh);
    }
    Py_XDECREF(sb);
    Py_XDECREF(su);
    Py_XDECREF(sh);
    return NULL;
}

PyDoc_STRVAR(recur_doc,
"recur($module, buf, U, h, activation, clip, leak, reverse)\n"
"--\n"
"\n"
"Run the simple-RNN recurrence in place; returns None.\n"
"\n"
"buf: (T, B, H) float32/float64, writable, rows of H contiguous (any\n"
"     strides between steps and batch rows: a batch-first (B, T, H) array\n"
"     transposed to (T, B, H) works in place). On entry\n"
"     buf[t, b] = x[t, b] @ W_ih.T + bias; on return the outputs.\n"
"U:   (H, H) same dtype, C-contiguous: W_hh in PyTorch layout.\n"
"h:   (B, H) same dtype, C-contiguous, writable: initial state on entry,\n"
"     final state on return.\n"
"activation: 0 tanh, 1 relu, 2 sigmoid, 3 linear.\n"
"clip: if > 0, pre-activations are clamped to [-clip, clip].\n"
"leak: if != 1, new = (1 - leak) * h + leak * act(pre).\n"
"reverse: run t = T-1 .. 0 instead of 0 .. T-1.\n"
"\n"
"For each step t and row b:\n"
"    pre = buf[t, b] + U @ h[b]; h[b] = buf[t, b] = leak-mix(act(clip(pre)))\n"
"The GIL is released while the loop runs.");

static PyObject *
kernel_recur(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"buf", "U", "h", "activation", "clip", "leak",
                             "reverse", NULL};
    PyObject *obuf, *oU, *oh;
    int act, reverse, rc;
    double clip, leak;
    Py_buffer vb, vu, vh;
    job_t jb;
    char kind;
    impl_fn fn;
    (void)self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOiddp:recur", kwlist,
                                     &obuf, &oU, &oh, &act, &clip, &leak,
                                     &reverse)) {
        return NULL;
    }
    if (act < ACT_TANH || act > ACT_LINEAR) {
        PyErr_Format(PyExc_ValueError,
                     "recur: activation must be 0 (tanh), 1 (relu), "
                     "2 (sigmoid) or 3 (linear), got %d",
                     act);
        return NULL;
    }
    if (get_array(obuf, &vb, "recur: buf", 3, "(T, B, H)", 1, 1) < 0) {
        return NULL;
    }
    if (get_array(oU, &vu, "recur: U", 2, "(H, H)", 0, 0) < 0) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    if (get_array(oh, &vh, "recur: h", 2, "(B, H)", 1, 0) < 0) {
        PyBuffer_Release(&vb);
        PyBuffer_Release(&vu);
        return NULL;
    }
    kind = buffer_kind(&vb);
    if (kind == 0 || buffer_kind(&vu) != kind || buffer_kind(&vh) != kind) {
        PyErr_Format(PyExc_TypeError,
                     "recur: buf, U and h must share one dtype, float32 or "
                     "float64; got buf %s, U %s, h %s",
                     kind_name(&vb), kind_name(&vu), kind_name(&vh));
        goto fail;
    }
    if (vu.shape[0] != vb.shape[2] || vu.shape[1] != vb.shape[2] ||
        vh.shape[0] != vb.shape[1] || vh.shape[1] != vb.shape[2]) {
        shape_error(&vb, &vu, &vh);
        goto fail;
    }

    jb.nsteps = vb.shape[0];
    jb.B = vb.shape[1];
    jb.H = vb.shape[2];
    jb.ts = vb.strides[0] / vb.itemsize;
    jb.bs = vb.strides[1] / vb.itemsize;
    jb.act = act;
    jb.reverse = reverse;
    jb.do_clip = clip > 0.0;
    jb.do_leak = leak != 1.0;
    jb.clip = clip;
    jb.leak = leak;
    jb.buf = vb.buf;
    jb.U = vu.buf;
    jb.h = vh.buf;
    fn = kind == 'f' ? current_isa->f32 : current_isa->f64;

    Py_BEGIN_ALLOW_THREADS
    rc = fn(&jb);
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&vb);
    PyBuffer_Release(&vu);
    PyBuffer_Release(&vh);
    if (rc < 0) {
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;

fail:
    PyBuffer_Release(&vb);
    PyBuffer_Release(&vu);
    PyBuffer_Release(&vh);
    return NULL;
}

PyDoc_STRVAR(project_doc,
"project($module, x, W, out, bias=None)\n"
"--\n"
"\n"
"out = x @ W + bias in place; returns None.\n"
"\n"
"x:    (N, F) float32/float64, rows contiguous (any stride between rows).\n"
"W:    (F, H) same dtype, C-contiguous (W_ih transposed).\n"
"out:  (N, H) same dtype, writable, rows contiguous.\n"
"bias: (H,) same dtype, C-contiguous, or None.\n"
"\n"
"Each element is summed over f = 0 .. F-1 in order by the same code for\n"
"every row, so a row's result does not depend on N or on its position\n"
"(unlike a BLAS product); bias is added last, with the bits of a second\n"
"pass `out += bias`. The GIL is released while it runs, so threads can\n"
"project disjoint rows at once.");

static PyObject *
kernel_project(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"x", "W", "out", "bias", NULL};
    PyObject *ox, *oW, *oout, *obias = Py_None;
    Py_buffer vx, vw, vo, vb;
    proj_t pj;
    char kind;
    int rc;
    (void)self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:project", keywords, &ox,
                                     &oW, &oout, &obias)) {
        return NULL;
    }
    vb.obj = NULL;
    if (get_array(ox, &vx, "project: x", 2, "(N, F)", 0, 1) < 0) {
        return NULL;
    }
    if (get_array(oW, &vw, "project: W", 2, "(F, H)", 0, 0) < 0) {
        PyBuffer_Release(&vx);
        return NULL;
    }
    if (get_array(oout, &vo, "project: out", 2, "(N, H)", 1, 1) < 0) {
        PyBuffer_Release(&vx);
        PyBuffer_Release(&vw);
        return NULL;
    }
    if (obias != Py_None &&
        get_array(obias, &vb, "project: bias", 1, "(H,)", 0, 0) < 0) {
        vb.obj = NULL;
        goto fail;
    }
    kind = buffer_kind(&vx);
    if (kind == 0 || buffer_kind(&vw) != kind || buffer_kind(&vo) != kind ||
        (vb.obj != NULL && buffer_kind(&vb) != kind)) {
        PyErr_Format(PyExc_TypeError,
                     "project: x, W, out and bias must share one dtype, "
                     "float32 or float64; got x %s, W %s, out %s, bias %s",
                     kind_name(&vx), kind_name(&vw), kind_name(&vo),
                     vb.obj != NULL ? kind_name(&vb) : "None");
        goto fail;
    }
    if (vb.obj != NULL && vb.shape[0] != vw.shape[1]) {
        PyErr_Format(PyExc_ValueError,
                     "project: bias has %zd entries, W has %zd columns",
                     vb.shape[0], vw.shape[1]);
        goto fail;
    }
    if (vw.shape[0] != vx.shape[1] || vo.shape[0] != vx.shape[0] ||
        vo.shape[1] != vw.shape[1]) {
        PyErr_Format(PyExc_ValueError,
                     "project: shapes do not match: x (%zd, %zd), W (%zd, "
                     "%zd), out (%zd, %zd); need x (N, F), W (F, H), out "
                     "(N, H)",
                     vx.shape[0], vx.shape[1], vw.shape[0], vw.shape[1],
                     vo.shape[0], vo.shape[1]);
        goto fail;
    }
    pj.N = vx.shape[0];
    pj.F = vx.shape[1];
    pj.H = vw.shape[1];
    pj.xs = vx.strides[0] / vx.itemsize;
    pj.os = vo.strides[0] / vo.itemsize;
    pj.x = vx.buf;
    pj.W = vw.buf;
    pj.b = vb.obj != NULL ? vb.buf : NULL;
    pj.out = vo.buf;

    Py_BEGIN_ALLOW_THREADS
    rc = (kind == 'f' ? current_isa->p32 : current_isa->p64)(&pj);
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&vx);
    PyBuffer_Release(&vw);
    PyBuffer_Release(&vo);
    if (vb.obj != NULL) {
        PyBuffer_Release(&vb);
    }
    if (rc < 0) {
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;

fail:
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vw);
    PyBuffer_Release(&vo);
    if (vb.obj != NULL) {
        PyBuffer_Release(&vb);
    }
    return NULL;
}

PyDoc_STRVAR(isa_doc,
"isa($module, /)\n--\n\nName of the code path recur uses: 'avx512f', 'avx2', "
"'generic' (portable SIMD) or 'scalar'.");

static PyObject *
kernel_isa(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyUnicode_FromString(current_isa->name);
}

PyDoc_STRVAR(available_isas_doc,
"available_isas($module, /)\n--\n\nCode paths this CPU can run, "
"fastest first.");

static PyObject *
kernel_available_isas(PyObject *self, PyObject *unused)
{
    PyObject *names = PyList_New(0), *res;
    int i;
    (void)self;
    (void)unused;
    if (names == NULL) {
        return NULL;
    }
    for (i = 0; i < N_ISAS; i++) {
        if (isas[i].supported) {
            PyObject *s = PyUnicode_FromString(isas[i].name);
            if (s == NULL || PyList_Append(names, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(names);
                return NULL;
            }
            Py_DECREF(s);
        }
    }
    res = PyList_AsTuple(names);
    Py_DECREF(names);
    return res;
}

PyDoc_STRVAR(set_isa_doc,
"_set_isa($module, name, /)\n--\n\nForce one code path (for tests and benchmarks); "
"name must be in available_isas().");

static PyObject *
kernel_set_isa(PyObject *self, PyObject *arg)
{
    const char *name;
    int i;
    (void)self;
    name = PyUnicode_AsUTF8(arg);
    if (name == NULL) {
        return NULL;
    }
    for (i = 0; i < N_ISAS; i++) {
        if (strcmp(isas[i].name, name) == 0) {
            if (!isas[i].supported) {
                PyErr_Format(PyExc_ValueError,
                             "_set_isa: this CPU cannot run '%s'", name);
                return NULL;
            }
            current_isa = &isas[i];
            Py_RETURN_NONE;
        }
    }
    PyErr_Format(PyExc_ValueError, "_set_isa: unknown code path '%s'", name);
    return NULL;
}

static PyMethodDef kernel_methods[] = {
    {"recur", (PyCFunction)(void (*)(void))kernel_recur,
     METH_VARARGS | METH_KEYWORDS, recur_doc},
    {"project", (PyCFunction)(void (*)(void))kernel_project,
     METH_VARARGS | METH_KEYWORDS, project_doc},
    {"isa", kernel_isa, METH_NOARGS, isa_doc},
    {"available_isas", kernel_available_isas, METH_NOARGS,
     available_isas_doc},
    {"_set_isa", kernel_set_isa, METH_O, set_isa_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT,
    "rnncli._kernel",
    "Compiled loops of the simple RNN: recur (the recurrence) and project.",
    -1,
    kernel_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__kernel(void)
{
    PyObject *m;
    detect_isas();
    m = PyModule_Create(&kernel_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "TANH", ACT_TANH) < 0 ||
        PyModule_AddIntConstant(m, "RELU", ACT_RELU) < 0 ||
        PyModule_AddIntConstant(m, "SIGMOID", ACT_SIGMOID) < 0 ||
        PyModule_AddIntConstant(m, "LINEAR", ACT_LINEAR) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
