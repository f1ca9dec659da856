/* im2win on GPUs (Lu et al., "Im2win: An Efficient Convolution Paradigm on GPU", Euro-Par 2023),
 * generalised to any batch, channels, filter, stride and zero padding, and bounds-checked everywhere
 * (the authors' kernel needs K % 128 == 0 and C*R*S % 8 == 0; this one has no such condition).
 *
 * Compiled as CUDA C++ by NVRTC and, through portability.h, as OpenCL C for verification on the CPU.
 *
 * Layouts (NHWC window, as the CPU kernel; Wu = (Q-1)*sx + S, RC = R*C, T = S*R*C):
 *   window  Iw[N][P][Wu][R][C]     Iw[n][p][w][r][c] = x[n][c][p*sy + r - py][w - px] (0 outside)
 *   filter  Fw[T][K]               Fw[t][k] = F[k][c][r][s] for t = (s, r, c)
 *   output  O[N][P][Q][K]          (a channels_last NCHW tensor)
 *   GEMM    O[m][k] = sum_t A[m][t] * Fw[t][k],  A[m][t] = Iw[base(m) + t],
 *           base(m = (n, p, q)) = ((n*P + p)*Wu + q*sx)*RC: each output pixel's window is one
 *           contiguous run of T floats, and neighbouring pixels' windows overlap.
 *
 * Split-K (compiled in with SPLIT_K=1, so the unsplit kernel keeps its registers): where a layer has
 * too few BM x BN tiles to fill the GPU, grid z splits the reduction into slices of t_split steps
 * (a multiple of 2 * BK); slice 0 writes the output (with the bias), slice z > 0 its partial sums
 * to partial[z - 1][M][K], and splitk_reduce adds those into the output.
 *
 * im2win_conv thread mapping: a block computes a BM (pixels) x BN (output channels) tile with
 * THREADS = (BM/TM)*(BN/TN) threads in warps of 32; each warp owns a WM x WN warp tile (LY x LX
 * lanes, LX = 4 where the tile allows), and each lane a TM x TN micro-tile made of 4 x 4 sub-tiles
 * spread over the warp tile (see tile_row), as in CUTLASS's SIMT GEMMs: every shared-memory read
 * is a conflict-free float4 and every output store a float4. The reduction runs in BK-deep steps
 * through shared memory (As[BK][BM + 4] transposed and padded, Bs[BK][BN]).
 *
 * Compile-time switches (the ablation of the paper, each a -D option):
 *   SMEM           shared-memory tiling (0: every thread reads global memory directly)
 *   TM, TN         register micro-kernel (TM = TN = 1: one output per thread)
 *   DOUBLE_BUFFER  two shared-memory buffers: one barrier per step instead of two
 *   PREFETCH       global loads of the next step issued before computing the current one
 *   VEC_LOAD       float4 global loads where the launch says alignment allows (vec_a, vec_b)
 *   ASYNC_COPY     (not in the paper) cp.async copies global -> shared, no registers in between,
 *                  STAGES - 1 steps ahead in STAGES buffers (sm_80+; the OpenCL emulation copies
 *                  at once)
 *   BAND           (not in the paper) im2win_conv from im2win_band.cu instead: a block stages the
 *                  window band its pixels share once per step, not one window row per pixel
 *   FUSED          (not in the paper) the window transform fused into im2win_conv: its first
 *                  buffer is x itself, and each A value Iw[base(m) + t] is read where the
 *                  transform would have taken it from, x[n][c][p*sy + r - py][q*sx + s - px]
 *                  (zero outside x), through x's strides: no window tensor, no transform kernel
 */

#ifndef BM
#define BM 128
#endif
#ifndef BN
#define BN 128
#endif
#ifndef BK
#define BK 8
#endif
#ifndef TM
#define TM 8
#endif
#ifndef TN
#define TN 8
#endif
#ifndef SMEM
#define SMEM 1
#endif
#ifndef DOUBLE_BUFFER
#define DOUBLE_BUFFER 1
#endif
#ifndef PREFETCH
#define PREFETCH 1
#endif
#ifndef VEC_LOAD
#define VEC_LOAD 1
#endif
#ifndef WIDE_INDEX
#define WIDE_INDEX 1 /* 64-bit element offsets; 0 when every buffer has < 2^31 elements */
#endif
#if WIDE_INDEX
typedef i64 idx;
#else
typedef int idx;
#endif
#ifndef ASYNC_COPY
#define ASYNC_COPY 0 /* 1: cp.async global -> shared copies (sm_80+), needs SMEM and DOUBLE_BUFFER */
#endif
#ifndef STAGES
#define STAGES 2 /* with ASYNC_COPY: shared-memory buffers, STAGES - 1 steps' copies in flight */
#endif
#ifndef SPLIT_K
#define SPLIT_K 0 /* 1: block z reduces one slice of the reduction (split-K); see im2win_conv */
#endif
#ifndef BAND
#define BAND 0 /* 1: im2win_conv stages window bands (im2win_band.cu), for BAND_S and BAND_SX */
#endif
#ifndef FUSED
#define FUSED 0 /* 1: im2win_conv reads its A values from x, not from a window tensor */
#endif
#if FUSED && (BAND || ASYNC_COPY || !SMEM)
#error "FUSED loads A through registers into shared memory: not with BAND, ASYNC_COPY or SMEM=0"
#endif
#ifndef MIN_BLOCKS
#define MIN_BLOCKS 1 /* blocks per SM the compiler must fit (caps registers per thread) */
#endif

#define THREADS ((BM / TM) * (BN / TN))
#define LX ((BN / TN) < 4 ? (BN / TN) : 4) /* lanes of a warp along the channels */
#define LY (32 / LX)                         /* lanes along the pixels */
#define WM (LY * TM)                         /* the warp tile: WM pixels x WN channels */
#define WN (LX * TN)
#define TMS (TM < 4 ? TM : 4) /* a sub-tile: TMS x TNS outputs, one float4 per row/column */
#define TNS (TN < 4 ? TN : 4)
#define MSUB (TM / TMS)
#define NSUB (TN / TNS)
#define AS_ROW (BM + 4) /* As rows padded by 4 floats: conflict-free transposed stores, 16-B rows */
#define A_LOADS (BM * BK / THREADS) /* A-tile elements each thread loads per step */
/* ... as ROW_RUNS runs of ROW_RUN consecutive t of one tile row (runs of 4: 16 bytes). Consecutive
 * threads take the SECTOR_RUNS runs of one 32-byte sector of a row, so that a warp's request reads
 * whole sectors (a run of 8 would read halves of 32 rows' sectors). Run id = tid + r * THREADS is
 * run id % SECTOR_RUNS of sector (id / SECTOR_RUNS) / BM of row (id / SECTOR_RUNS) % BM. Where a
 * row has more sectors in a step than one (A_ROUNDS > 1: BK = 16), they come in rounds of the
 * tile's rows, so that a warp's transposed stores stay within two groups of 16 banks (one run a
 * row for all of BK stored 2-way conflicted). */
/* (the band kernel, whose tiles these do not describe, may load no A or B element a thread this
 * way: runs of 1 then, so that nothing divides by zero) */
#define ROW_RUN (A_LOADS < 4 ? (A_LOADS > 0 ? A_LOADS : 1) : 4)
#define ROW_RUNS (A_LOADS / ROW_RUN)
#define RUNS_PER_ROW (BK / ROW_RUN)
#define SECTOR_RUNS (8 / ROW_RUN < RUNS_PER_ROW ? 8 / ROW_RUN : RUNS_PER_ROW)
#define A_ROUNDS (RUNS_PER_ROW / SECTOR_RUNS)
#define A_ROWS_APART (THREADS / RUNS_PER_ROW) /* A_ROUNDS == 1: tile rows between a thread's runs */
#if A_ROUNDS == 1
typedef int a_t_arg; /* the t of every run of a thread */
#define RUN_T(r) a_t
#else
typedef const int* a_t_arg; /* the t of each run of a thread */
#define RUN_T(r) a_t[r]
#endif
#define B_LOADS (BK * BN / THREADS) /* B-tile elements each thread loads per step */
/* ... as FILTER_RUNS runs of FILTER_RUN channels of one filter row: one run, or where a thread loads
 * more than 4 (a multiple of 4), runs of 4 with consecutive threads on consecutive runs, so that
 * the float4 stores of a quarter warp fill 32 banks and its loads whole sectors; a thread's runs
 * FILTER_ROWS_APART filter rows apart, at the same channels */
#define FILTER_RUN (B_LOADS > 4 && B_LOADS % 4 == 0 ? 4 : B_LOADS > 0 ? B_LOADS : 1)
#define FILTER_RUNS (B_LOADS / FILTER_RUN)
#define FILTER_ROWS_APART (THREADS * FILTER_RUN / BN)
#define NBUF (ASYNC_COPY ? STAGES : DOUBLE_BUFFER ? 2 : 1)
#define VEC_A (VEC_LOAD && ROW_RUN == 4) /* float4 loads need runs of 4 */
#define VEC_B (VEC_LOAD && FILTER_RUN % 4 == 0)

/* Phase "transform": Iw[n][p][w][r][c] = x[n][c][p*sy + r - py][w - px], zero outside the input.
 * Block (n*P + p, y, z) copies a tile of TR window rows x TC channels x TW window columns of output
 * row p of image n (window columns w0 = y*TW .., z = channel tile + row tile * channel tiles):
 * rows r0 = z / tiles_c * TR .., channels c0 = (z % tiles_c) * TC ..; TC and TW powers of 2, at
 * most WIN_THREADS (im2win/cuda/launch.py window_tile picks them). x is read through its strides
 * along its innermost axis (w for NCHW, c where c_inner: channels_last), as runs of TW (or TC)
 * floats; Iw is written along c, where TR = R and TC >= C (most layers) as one contiguous run of
 * TW*R*C floats a block. Shared memory holds value (r, c, w) at w * w_pitch + (r*TC + c) *
 * rc_pitch, padded so that the lanes of a request fall in distinct banks (window_tile: rc rows of
 * TW + 1 floats, or for few channels columns of TR*TC + 1). Index math is shifts and masks and,
 * for the stores' (w, r), one division a thread, then steps. */
#define WIN_FLOATS 8192
#define WIN_THREADS 256
#define WIN_BATCH 8 /* loads a thread has in flight */
KERNEL void im2win_window(CONST_GLOBAL float* x, GLOBAL float* iw, i64 sn, i64 sc, i64 sh, i64 sw,
                          int C, int H, int W, int R, int sy, int py, int px, int P, int Wu,
                          int tc_log2, int tw_log2, int TR, int tiles_c, int w_pitch,
                          int rc_pitch, int c_inner) {
  SHARED float tile[WIN_FLOATS];
  const int TC = 1 << tc_log2, TW = 1 << tw_log2;
  const int np = BLOCK_ID_X, p = np % P, w0 = BLOCK_ID_Y * TW;
  const int c0 = (BLOCK_ID_Z % tiles_c) * TC, r0 = (BLOCK_ID_Z / tiles_c) * TR;
  const int tr = R - r0 < TR ? R - r0 : TR, tc = C - c0 < TC ? C - c0 : TC;
  const int tw = Wu - w0 < TW ? Wu - w0 : TW;
  const int h0 = p * sy + r0 - py; /* input row of the tile's first window row */
  const i64 n = np / P;
  /* the tile's (0, 0, 0) in x; w - px may be negative: read only where in the input */
  CONST_GLOBAL float* src = x + n * sn + (i64)c0 * sc + (i64)h0 * sh + (i64)(w0 - px) * sw;
  /* Each loop steps its thread's (r, c, w), its address in x and its place in the tile by
   * constant increments, carrying at most once a step (the steps and tile sides are powers of 2,
   * or for the stores' r any step below 2 * tr), so that no address is multiplied out anew. The
   * loads go WIN_BATCH at a time into registers before any is stored, so that a thread keeps that
   * many in flight (one at a time, a block's 256 threads wait out the memory latency for each). */
  float v[WIN_BATCH];
  int at[WIN_BATCH]; /* the tile index of v[k], -1 past the tile */
  if (c_inner) {     /* (r, w, c), c fastest: each thread keeps one channel */
    const int c = THREAD_ID & (TC - 1), step = WIN_THREADS >> tc_log2;
    const int dw = step & (TW - 1), dr = step >> tw_log2;
    int w = (THREAD_ID >> tc_log2) & (TW - 1), r = THREAD_ID >> (tc_log2 + tw_log2);
    CONST_GLOBAL float* s = src + c * sc + r * sh + w * sw;
    int t = w * w_pitch + ((r << tc_log2) + c) * rc_pitch;
    const i64 ds = dw * sw + dr * sh, ds_carry = sh - TW * sw;
    const int dt = dw * w_pitch + (dr << tc_log2) * rc_pitch;
    const int dt_carry = (TC * rc_pitch) - TW * w_pitch;
    while (r < tr) {
#pragma unroll
      for (int k = 0; k < WIN_BATCH; ++k) {
        const int h = h0 + r, wi = w0 + w - px;
        v[k] = r < tr && c < tc && w < tw && (unsigned)h < (unsigned)H && (unsigned)wi < (unsigned)W
                   ? *s
                   : 0.0f;
        at[k] = r < tr ? t : -1;
        w += dw, r += dr, s += ds, t += dt;
        if (w >= TW) w -= TW, ++r, s += ds_carry, t += dt_carry;
      }
#pragma unroll
      for (int k = 0; k < WIN_BATCH; ++k)
        if (at[k] >= 0) tile[at[k]] = v[k];
    }
  } else { /* (r, c, w), w fastest: each thread keeps one window column */
    const int w = THREAD_ID & (TW - 1), step = WIN_THREADS >> tw_log2, wi = w0 + w - px;
    const int w_in = w < tw && wi >= 0 && wi < W;
    const int dc = step & (TC - 1), dr = step >> tc_log2;
    int c = (THREAD_ID >> tw_log2) & (TC - 1), r = THREAD_ID >> (tw_log2 + tc_log2);
    CONST_GLOBAL float* s = src + c * sc + r * sh + w * sw;
    int t = w * w_pitch + ((r << tc_log2) + c) * rc_pitch;
    const i64 ds = dc * sc + dr * sh, ds_carry = sh - TC * sc;
    const int dt = step * rc_pitch;
    while (r < tr) {
#pragma unroll
      for (int k = 0; k < WIN_BATCH; ++k) {
        const int h = h0 + r;
        v[k] = r < tr && w_in && c < tc && (unsigned)h < (unsigned)H ? *s : 0.0f;
        at[k] = r < tr ? t : -1;
        c += dc, r += dr, s += ds, t += dt;
        if (c >= TC) c -= TC, ++r, s += ds_carry;
      }
#pragma unroll
      for (int k = 0; k < WIN_BATCH; ++k)
        if (at[k] >= 0) tile[at[k]] = v[k];
    }
  }
  SYNC();
  /* stores in Iw's order (w, r, c), c fastest: each thread keeps one channel and steps (w, r);
   * WIN_BATCH shared loads before their global stores, for the same reason */
  const int c = THREAD_ID & (TC - 1), step = WIN_THREADS >> tc_log2;
  const int dw = step / tr, dr = step - dw * tr;
  int w = (THREAD_ID >> tc_log2) / tr, r = (THREAD_ID >> tc_log2) - w * tr;
  GLOBAL float* d = iw + (((i64)np * Wu + w0 + w) * R + r0 + r) * C + c0 + c;
  int t = w * w_pitch + ((r << tc_log2) + c) * rc_pitch;
  const i64 dd = ((i64)dw * R + dr) * C, dd_carry = (i64)(R - tr) * C;
  const int dt = dw * w_pitch + (dr << tc_log2) * rc_pitch;
  const int dt_carry = w_pitch - (tr << tc_log2) * rc_pitch;
  if (c >= tc) return;
  /* the thread's pairs w * tr + r: THREAD_ID >> tc_log2, that + step, .. below tw * tr, counted
   * ahead (left), so that one compare a value guards it: in NVRTC's SASS, far fewer instructions
   * a value than stepping w and testing it */
  for (int left = (tw * tr - (THREAD_ID >> tc_log2) + step - 1) / step; left > 0;
       left -= WIN_BATCH) {
    GLOBAL float* to[WIN_BATCH];
#pragma unroll
    for (int k = 0; k < WIN_BATCH; ++k) {
      v[k] = k < left ? tile[t] : 0.0f;
      to[k] = d;
      r += dr, d += dd, t += dt;
      if (r >= tr) r -= tr, d += dd_carry, t += dt_carry;
    }
#pragma unroll
    for (int k = 0; k < WIN_BATCH; ++k)
      if (k < left) *to[k] = v[k];
  }
}

/* The window transform as it was up to c72bc28, kept to be timed beside im2win_window in the GPU
 * run ("The window transform on its own") until a GPU has measured the two: a tiled transpose.
 * Block (row, y, z) copies window row r of output row p of image n (row = (n*P + p)*R + r, input
 * row h = p*sy + r - py), window columns w0 = y*TW .. and channels c0 = z*TC .., into
 * Iw[n][p][w][r][c]: a TC x TW tile of 2^WIN_ROWS_LOG2 floats (TC = 2^tc_log2, the least power of
 * 2 >= C up to 32) through shared memory, read along the input's innermost axis (w for NCHW, c
 * where c_inner: channels_last) and written along c, so both sides are coalesced and the index
 * math is shifts and masks, not a 64-bit division per element. x is read through its strides (any
 * memory format); zeros outside the input. */
#define WIN_ROWS_LOG2 10
KERNEL void im2win_window_rows(CONST_GLOBAL float* x, GLOBAL float* iw, i64 sn, i64 sc, i64 sh,
                               i64 sw, int C, int H, int W, int R, int sy, int py, int px, int P,
                               int Wu, int tc_log2, int c_inner) {
  SHARED float tile[(1 << WIN_ROWS_LOG2) + 32]; /* tile[cl * (TW + 1) + wl]: rows padded by one */
  const int tw_log2 = WIN_ROWS_LOG2 - tc_log2, TC = 1 << tc_log2, TW = 1 << tw_log2;
  const int row = BLOCK_ID_X, r = row % R, np = row / R, p = np % P;
  const i64 n = np / P;
  const int h = p * sy + r - py, w0 = BLOCK_ID_Y * TW, c0 = BLOCK_ID_Z * TC;
  const int in_rows = h >= 0 && h < H;
  CONST_GLOBAL float* src = x + n * sn + h * sh + c0 * sc + (i64)(w0 - px) * sw; /* tile (0, 0) */
  GLOBAL float* dst = iw + (((i64)np * Wu + w0) * R + r) * C + c0;
  const i64 dst_w = (i64)R * C; /* between window columns in Iw */
  for (int i = THREAD_ID; i < (1 << WIN_ROWS_LOG2); i += WIN_THREADS) {
    const int cl = c_inner ? (i & (TC - 1)) : (i >> tw_log2);
    const int wl = c_inner ? (i >> tc_log2) : (i & (TW - 1));
    const int wi = w0 + wl - px;
    tile[cl * (TW + 1) + wl] =
        in_rows && c0 + cl < C && wi >= 0 && wi < W ? src[cl * sc + wl * sw] : 0.0f;
  }
  SYNC();
  for (int i = THREAD_ID; i < (1 << WIN_ROWS_LOG2); i += WIN_THREADS) {
    const int cl = i & (TC - 1), wl = i >> tc_log2;
    if (c0 + cl < C && w0 + wl < Wu) dst[wl * dst_w + cl] = tile[cl * (TW + 1) + wl];
  }
}

/* Phase "filter": Fw[t][k] = F[k][c][r][s], t = (s, r, c); one thread per element, along k. */
KERNEL void im2win_filter(CONST_GLOBAL float* f, GLOBAL float* fw, int K, int C, int R, int S,
                          i64 total) {
  const i64 i = GLOBAL_ID;
  if (i >= total) return;
  const int k = (int)(i % K);
  const i64 t = i / K;
  const int c = (int)(t % C), r = (int)((t / C) % R), s = (int)(t / ((i64)C * R));
  fw[i] = f[(((i64)k * C + c) * R + r) * S + s];
}

/* Window start of pixel m, or -1 past the last pixel. */
DEVICE idx window_base(idx m, idx M, int P, int Q, int Wu, int sx, idx RC) {
  if (m >= M) return -1;
  const idx n = m / ((idx)P * Q);
  const int p = (int)((m / Q) % P), q = (int)(m % Q);
  return ((n * P + p) * Wu + (idx)q * sx) * RC;
}

/* Global -> registers for one BK-deep step at t0: ra[r * ROW_RUN ..] = A[row of run r][t0 + RUN_T(r)
 * ..] (a_base[r]: that row's window start; pixel 0's for rows past the last pixel, whose sums are
 * never stored); zero past the reduction. float4 loads when compiled in and the launch says
 * addresses align. Where every run of a thread has the same t (A_ROUNDS == 1), one bounds check
 * serves them all: checked run by run, as 16-deep steps must, the main loop of sgemm_tile, fit_k
 * and wide_thread_tile grew by 13-38 instructions on sm_90. */
DEVICE void load_a(CONST_GLOBAL float* iw, const idx* a_base, a_t_arg a_t, int T, int t0,
                   int vec_a, float* ra) {
#if A_ROUNDS > 1
  for (int r = 0; r < ROW_RUNS; ++r) {
    const int ta = t0 + a_t[r];
#if VEC_A
    if (vec_a && ta + 4 <= T) {
      const float4 v = LOAD4(iw + a_base[r] + ta);
      ra[r * 4] = v.x, ra[r * 4 + 1] = v.y, ra[r * 4 + 2] = v.z, ra[r * 4 + 3] = v.w;
    } else
#endif
      for (int j = 0; j < ROW_RUN; ++j)
        ra[r * ROW_RUN + j] = ta + j < T ? iw[a_base[r] + ta + j] : 0.0f;
  }
#else
  const int ta = t0 + a_t;
#if VEC_A
  if (vec_a && ta + 4 <= T) {
    for (int r = 0; r < ROW_RUNS; ++r) {
      const float4 v = LOAD4(iw + a_base[r] + ta);
      ra[r * 4] = v.x, ra[r * 4 + 1] = v.y, ra[r * 4 + 2] = v.z, ra[r * 4 + 3] = v.w;
    }
  } else
#endif
    for (int r = 0; r < ROW_RUNS; ++r)
      for (int j = 0; j < ROW_RUN; ++j)
        ra[r * ROW_RUN + j] = ta + j < T ? iw[a_base[r] + ta + j] : 0.0f;
#endif
}

#if FUSED
/* Where a thread's A values lie in x (FUSED): t = (s*R + r)*C + c, as (s, r, c). A thread keeps
 * the place of each distinct t it loads (one where A_ROUNDS == 1) and steps it by BK a step, so
 * that only the block's first step divides. */
#define A_PLACES (A_ROUNDS > 1 ? ROW_RUNS : 1)
typedef struct {
  int c, r, s;
} tplace;
DEVICE tplace tplace_at(int t, int C, int R) {
  tplace at;
  at.s = t / (R * C);
  t -= at.s * R * C;
  at.r = t / C;
  at.c = t - at.r * C;
  return at;
}
DEVICE void tplace_step(tplace* at, int d, int C, int R) {
  at->c += d;
  while (at->c >= C) { /* at most once where C >= d (BK: every paper layer but C = 3's) */
    at->c -= C;
    if (++at->r == R) at->r = 0, ++at->s;
  }
}

/* load_a for FUSED: run r's values t = t0 + RUN_T(r) .. of tile row RUN_ROW(r), whose window's
 * (r, s) = (0, 0) corner is x + a_base[r] at input row a_h[r] and column a_w[r] (negative in the
 * padding; rows past the last pixel: pixel 0's), read where the window transform would read them,
 * zero outside x and past the reduction. vec_a (the launch's): 0: each value's (s, r, c) apart; 1:
 * C % 4 == 0, so a run's values are channels c .. of one (r, s); 2: and float4 loads (x
 * channels_last, 16-byte aligned). Then every place steps to the next step's t. Where all runs
 * share one t (A_PLACES == 1), each value's place and offset serve every run (worked out run by
 * run, the main loop of sgemm_tile_fit_k_fused held well over half as many other instructions
 * again as it has now; results/im2win-nvrtc has its mix). */
DEVICE idx tplace_offset(tplace v, idx xc, idx xh, idx xw) { /* from the window's corner */
  return v.s * xw + v.r * xh + v.c * xc;
}
DEVICE int tplace_in(tplace v, int h0, int w0, int H, int W) { /* inside x, not in the padding */
  return (unsigned)(h0 + v.r) < (unsigned)H && (unsigned)(w0 + v.s) < (unsigned)W;
}
DEVICE void tplace_next(tplace* v, int C, int R) { /* one value on: one carry at most */
  if (++v->c == C) {
    v->c = 0;
    if (++v->r == R) v->r = 0, ++v->s;
  }
}
/* A run of ROW_RUN values that are channels of one (r, s), from x[at] (an index, not a pointer:
 * one IMAD.WIDE an address on sm_90, where pointer steps took two 64-bit instructions), zero where
 * not `in`: one float4 where vec_a == 2 and compiled in, else loads xc apart. */
DEVICE void load_run_x(CONST_GLOBAL float* x, idx at, int in, int vec_a, idx xc, float* run) {
#if VEC_A
  if (vec_a == 2) {
    const float4 f = in ? LOAD4(x + at) : MAKE4(0.0f, 0.0f, 0.0f, 0.0f);
    run[0] = f.x, run[1] = f.y, run[2] = f.z, run[3] = f.w;
    return;
  }
#endif
  for (int j = 0; j < ROW_RUN; ++j) run[j] = in ? x[at + j * xc] : 0.0f;
}
DEVICE void load_a_x(CONST_GLOBAL float* x, const idx* a_base, const int* a_h, const int* a_w,
                     tplace* place, a_t_arg a_t, int T, int t0, int vec_a, idx xc, idx xh,
                     idx xw, int C, int R, int H, int W, float* ra) {
#if A_PLACES == 1
  /* every run at the same t: each value's place and offset worked out once, for all the runs */
  const int ta = t0 + a_t;
  tplace v = place[0];
  if (vec_a && ta + ROW_RUN <= T) {
    const idx o = tplace_offset(v, xc, xh, xw);
    for (int r = 0; r < ROW_RUNS; ++r)
      load_run_x(x, a_base[r] + o, tplace_in(v, a_h[r], a_w[r], H, W), vec_a, xc,
                 ra + r * ROW_RUN);
  } else {
    for (int j = 0; j < ROW_RUN; ++j, tplace_next(&v, C, R)) {
      const idx o = tplace_offset(v, xc, xh, xw);
      for (int r = 0; r < ROW_RUNS; ++r)
        ra[r * ROW_RUN + j] =
            ta + j < T && tplace_in(v, a_h[r], a_w[r], H, W) ? x[a_base[r] + o] : 0.0f;
    }
  }
#else
  for (int r = 0; r < ROW_RUNS; ++r) { /* each run at a t of its own, as above run by run */
    tplace v = place[r];
    const int ta = t0 + RUN_T(r);
    if (vec_a && ta + ROW_RUN <= T) {
      load_run_x(x, a_base[r] + tplace_offset(v, xc, xh, xw),
                 tplace_in(v, a_h[r], a_w[r], H, W), vec_a, xc, ra + r * ROW_RUN);
      continue;
    }
    for (int j = 0; j < ROW_RUN; ++j, tplace_next(&v, C, R))
      ra[r * ROW_RUN + j] = ta + j < T && tplace_in(v, a_h[r], a_w[r], H, W)
                                ? x[a_base[r] + tplace_offset(v, xc, xh, xw)]
                                : 0.0f;
  }
#endif
  for (int i = 0; i < A_PLACES; ++i) tplace_step(&place[i], BK, C, R);
}
#endif

/* rb[r * FILTER_RUN ..] = Fw[t0 + b_t + r * FILTER_ROWS_APART][kb ..]; zero past the reduction and
 * K; float4 loads when compiled in and the launch says addresses align. */
DEVICE void load_b(CONST_GLOBAL float* fw, int b_t, int kb, int T, int K, int t0, int vec_b,
                   float* rb) {
  const int tb = t0 + b_t;
  for (int r = 0; r < FILTER_RUNS; ++r) {
    const int tr = tb + r * FILTER_ROWS_APART;
    float* run = rb + r * FILTER_RUN;
#if VEC_B
    if (vec_b && tr < T && kb + FILTER_RUN <= K) {
      for (int j = 0; j < FILTER_RUN; j += 4) {
        const float4 v = LOAD4(fw + (idx)tr * K + kb + j);
        run[j] = v.x, run[j + 1] = v.y, run[j + 2] = v.z, run[j + 3] = v.w;
      }
    } else
#endif
      for (int j = 0; j < FILTER_RUN; ++j) run[j] = (tr < T && kb + j < K) ? fw[(idx)tr * K + kb + j] : 0.0f;
  }
}

/* This thread's output rows and columns inside the block tile: the warp's WM x WN tile at (wm0,
 * wn0), lane (ly, lx) of its LY x LX lanes; the TM x TN micro-tile is split into MSUB x NSUB
 * sub-tiles of TMS x TNS (4 x 4 when TM, TN >= 4), WM / MSUB rows and WN / NSUB columns apart, so
 * a sub-tile's rows (columns) are one float4 in shared memory and a quarter warp reads 2 (4) distinct
 * float4s there: no bank conflict. */
DEVICE int tile_row(int wm0, int ly, int i) {
  return wm0 + (i / TMS) * (WM / MSUB) + ly * TMS + i % TMS;
}
DEVICE int tile_col(int wn0, int lx, int j) {
  return wn0 + (j / TNS) * (WN / NSUB) + lx * TNS + j % TNS;
}

/* Phase "store" of both im2win_conv kernels: bounds-checked, the bias added by slice 0 only; a
 * sub-tile row is one float4 store when K is a multiple of 4 (the output rows, K floats each, are
 * then 16-byte aligned). OUT_PIXEL(row) is the kernel's output pixel of tile row `row` (-1: none).
 * With split-K, a kernel expands it twice, so that neither copy keeps a chosen destination pointer
 * live beside the accumulators (that pushed the default tile past its 128 registers). */
#if TNS == 4
#define STORE_V4(p)                                     \
  if (K % 4 == 0 && k + 4 <= K) {                       \
    STORE4((p), MAKE4(v[0], v[1], v[2], v[3]));         \
    continue;                                           \
  }
#else
#define STORE_V4(p)
#endif
/* Tiles of more than 64 accumulators unroll the store loops, or the compiler leaves them rolled
 * and keeps acc in local memory for them (SGEMM_TILE's 16 x 8: a 512-byte stack frame). Not the
 * others: there the unrolled stores left the main loop of no_vector_load and wide_index spilling
 * at sm_90's 128-register cap (async_copy and the split-K kernels keep a 256-byte frame instead,
 * read and written once a tile, after the main loop). */
#if TM * TN > 64
#define STORE_UNROLL _Pragma("unroll")
#else
#define STORE_UNROLL
#endif
#define STORE_TILE(dst, add_bias)                                                                \
  STORE_UNROLL for (int i = 0; i < TM; ++i) {                                                    \
    const idx m = OUT_PIXEL(tile_row(wm0, ly, i));                                               \
    if (m < 0) continue;                                                                         \
    STORE_UNROLL for (int u = 0; u < NSUB; ++u) {                                                \
      const int k = k0 + tile_col(wn0, lx, u * TNS);                                             \
      float v[TNS];                                                                              \
      for (int j = 0; j < TNS; ++j)                                                              \
        v[j] = acc[i][u * TNS + j] + ((add_bias) && k + j < K ? bias[k + j] : 0.0f);             \
      STORE_V4((dst) + m * K + k)                                                                \
      for (int j = 0; j < TNS; ++j)                                                              \
        if (k + j < K) (dst)[m * K + k + j] = v[j];                                              \
    }                                                                                            \
  }
#if SPLIT_K
#define STORE_OUTPUT                                                                             \
  if (BLOCK_ID_Z == 0) {                                                                         \
    STORE_TILE(out, has_bias)                                                                    \
  } else {                                                                                       \
    STORE_TILE(partial + (i64)(BLOCK_ID_Z - 1) * M * K, 0)                                       \
  }
#else
#define STORE_OUTPUT STORE_TILE(out, has_bias)
#endif

/* The start of both im2win_conv kernels: this block's share [t_begin, T) of a reduction `length`
 * long (block z's slice with split-K; t_split unused without), its tile's origin (m0 pixels, k0
 * channels), this thread's warp tile (wm0, wn0) and lane (ly, lx), and zeroed accumulators. */
#if SPLIT_K
#define REDUCTION_RANGE(length)             \
  const int t_begin = BLOCK_ID_Z * t_split; \
  const int T = (length) < t_begin + t_split ? (length) : t_begin + t_split;
#else
#define REDUCTION_RANGE(length) const int t_begin = 0, T = (length);
#endif
#define BLOCK_START(length)                                                 \
  REDUCTION_RANGE(length)                                                   \
  const idx m0 = (idx)BLOCK_ID_X * BM;                                      \
  const int k0 = BLOCK_ID_Y * BN;                                           \
  const int tid = THREAD_ID;                                                \
  const int warp = tid / 32, lane = tid % 32;                               \
  const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;   \
  const int ly = lane / LX, lx = lane % LX;                                 \
  float acc[TM][TN];                                                        \
  for (int i = 0; i < TM; ++i)                                              \
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;

/* The convolution kernel's entry point, one for the row kernel below and the window-band kernel
 * (im2win_band.cu, BAND): the same buffers and scalars, so that one launch serves both. iw is the
 * window tensor, or where FUSED the input x, read through its strides xn, xc, xh, xw (with H, W,
 * sy, py and px, which only FUSED reads). */
#define IM2WIN_CONV_ENTRY                                                                      \
  KERNEL LAUNCH_BOUNDS(THREADS, MIN_BLOCKS) void im2win_conv(                                  \
      CONST_GLOBAL float* iw, CONST_GLOBAL float* fw, CONST_GLOBAL float* bias,                \
      GLOBAL float* out, GLOBAL float* partial, int has_bias, int N, int C, int K, int R,      \
      int S, int sx, int P, int Q, int Wu, int vec_a, int vec_b, int t_split, i64 xn, i64 xc,  \
      i64 xh, i64 xw, int H, int W, int sy, int py, int px)

#if !BAND
/* Phase "convolve". grid = (ceil(M / BM), ceil(K / BN), slices), block = THREADS; block z reduces
 * steps [z * t_split, min(T, (z + 1) * t_split)) (t_split: a multiple of 2 * BK).
 * Kernels take their buffers first, then scalars (im2win/cuda/launch.py builds the scalars). */
IM2WIN_CONV_ENTRY {
  const idx M = (idx)N * P * Q;
  const idx RC = (idx)R * C;
  BLOCK_START(S * R * C)

#if SMEM
#if !FUSED
  SHARED idx row_base[BM];
#endif
  SHARED ALIGN16 float As[NBUF][BK][AS_ROW]; /* A transposed: As[t][row], rows padded */
  SHARED ALIGN16 float Bs[NBUF][BK][BN];
#if !FUSED
  for (int i = tid; i < BM; i += THREADS) { /* rows past the last pixel: pixel 0's (see load_a) */
    const idx base = window_base(m0 + i, M, P, Q, Wu, sx, RC);
    row_base[i] = base < 0 ? 0 : base;
  }
  SYNC();
#endif

  /* This thread's share of a step: A runs id = tid + r*THREADS -> (row id / RUNS_PER_ROW,
   * t (id % RUNS_PER_ROW) * ROW_RUN ..), rows A_ROWS_APART apart,
   * B runs (row tid * FILTER_RUN / BN + r * FILTER_ROWS_APART, channels tid * FILTER_RUN % BN ..). */
#if !ASYNC_COPY
  float ra[A_LOADS], rb[B_LOADS];
#endif
#if A_ROUNDS == 1
  const int a_row = tid / RUNS_PER_ROW, a_t = tid % RUNS_PER_ROW * ROW_RUN;
#define RUN_ROW(r) (a_row + (r) * A_ROWS_APART)
#else
  int a_row[ROW_RUNS], a_t[ROW_RUNS]; /* run r's tile row and first t (see SECTOR_RUNS) */
  for (int r = 0; r < ROW_RUNS; ++r) {
    const int sector = tid / SECTOR_RUNS + r * (THREADS / SECTOR_RUNS);
    a_row[r] = sector % BM;
    a_t[r] = (sector / BM * SECTOR_RUNS + tid % SECTOR_RUNS) * ROW_RUN;
  }
#define RUN_ROW(r) a_row[r]
#endif
  const int b_t = tid * FILTER_RUN / BN, b_k = tid * FILTER_RUN % BN;
  idx a_base[ROW_RUNS];
#if FUSED
  /* each run's window corner in x (its row's pixel; pixel 0's past the last), and its place */
  const idx xc_ = (idx)xc, xh_ = (idx)xh, xw_ = (idx)xw;
  int a_h[ROW_RUNS], a_w[ROW_RUNS];
  for (int r = 0; r < ROW_RUNS; ++r) {
    const idx m = m0 + RUN_ROW(r) < M ? m0 + RUN_ROW(r) : 0;
    const idx n = m / ((idx)P * Q);
    const int pq = (int)(m - n * P * Q), p = pq / Q;
    a_h[r] = p * sy - py, a_w[r] = (pq - p * Q) * sx - px;
    a_base[r] = n * (idx)xn + a_h[r] * xh_ + a_w[r] * xw_;
  }
  tplace place[A_PLACES];
  for (int i = 0; i < A_PLACES; ++i) place[i] = tplace_at(t_begin + RUN_T(i), C, R);
#define LOAD_A(t0) \
  load_a_x(iw, a_base, a_h, a_w, place, a_t, T, t0, vec_a, xc_, xh_, xw_, C, R, H, W, ra)
#else
  for (int r = 0; r < ROW_RUNS; ++r) a_base[r] = row_base[RUN_ROW(r)];
#define LOAD_A(t0) load_a(iw, a_base, a_t, T, t0, vec_a, ra)
#endif
#define LOAD_STEP(t0) \
  LOAD_A(t0);         \
  load_b(fw, b_t, k0 + b_k, T, K, t0, vec_b, rb)
#define B_ROW(buf, r) Bs[buf][b_t + (r) * FILTER_ROWS_APART]
#if VEC_B
#define STORE_B(buf)                                                                           \
  for (int r = 0; r < FILTER_RUNS; ++r)                                                             \
    for (int j = 0; j < FILTER_RUN; j += 4)                                                         \
      STORE4(&B_ROW(buf, r)[b_k + j],                                                          \
             MAKE4(rb[r * FILTER_RUN + j], rb[r * FILTER_RUN + j + 1],                         \
                   rb[r * FILTER_RUN + j + 2], rb[r * FILTER_RUN + j + 3]));
#elif FILTER_RUN % 2 == 0 /* float2 stores: a half warp covers 32 consecutive words */
#define STORE_B(buf)                                                                           \
  for (int r = 0; r < FILTER_RUNS; ++r)                                                             \
    for (int j = 0; j < FILTER_RUN; j += 2)                                                         \
      STORE2(&B_ROW(buf, r)[b_k + j], rb[r * FILTER_RUN + j], rb[r * FILTER_RUN + j + 1]);
#else
#define STORE_B(buf)                                                                           \
  for (int r = 0; r < FILTER_RUNS; ++r)                                                             \
    for (int j = 0; j < FILTER_RUN; ++j) B_ROW(buf, r)[b_k + j] = rb[r * FILTER_RUN + j];
#endif
#define STORE_STEP(buf)                                                  \
  {                                                                      \
    for (int r = 0; r < ROW_RUNS; ++r)                                   \
      for (int j = 0; j < ROW_RUN; ++j)                                  \
        As[buf][RUN_T(r) + j][RUN_ROW(r)] = ra[r * ROW_RUN + j];        \
    STORE_B(buf)                                                         \
  }

#if ASYNC_COPY
  /* The step at t0 copied by cp.async straight into buffer buf: this thread's A run one float at a
   * time (the tile is stored transposed), its B run as 16-byte copies where whole and aligned;
   * zeros outside the problem. */
#define COPY_STEP(buf, t0)                                                                    \
  {                                                                                           \
    const int tb = (t0) + b_t, kb = k0 + b_k;                                                \
    for (int r = 0; r < ROW_RUNS; ++r)                                                        \
      for (int j = 0; j < ROW_RUN; ++j) {                                                     \
        const int ta = (t0) + RUN_T(r), ok = ta + j < T;                                      \
        CP_ASYNC4(&As[buf][RUN_T(r) + j][RUN_ROW(r)], iw + (ok ? a_base[r] + ta + j : 0), ok);  \
      }                                                                                       \
    for (int r = 0; r < FILTER_RUNS; ++r) {                                                        \
      const int tr = tb + r * FILTER_ROWS_APART;                                                   \
      if (VEC_B && vec_b && tr < T && kb + FILTER_RUN <= K) {                                      \
        for (int j = 0; j < FILTER_RUN; j += 4)                                                    \
          CP_ASYNC16(&B_ROW(buf, r)[b_k + j], fw + (idx)tr * K + kb + j);                     \
      } else {                                                                                \
        for (int j = 0; j < FILTER_RUN; ++j) {                                                     \
          const int ok = tr < T && kb + j < K;                                                \
          CP_ASYNC4(&B_ROW(buf, r)[b_k + j], fw + (ok ? (idx)tr * K + kb + j : 0), ok);       \
        }                                                                                     \
      }                                                                                       \
    }                                                                                         \
    CP_ASYNC_COMMIT();                                                                        \
  }
  for (int st = 0; st < STAGES - 1; ++st) { /* steps 0 .. STAGES-2 in flight, a group each */
    if (t_begin + st * BK < T)
      COPY_STEP(st, t_begin + st * BK)
    else
      CP_ASYNC_COMMIT(); /* an empty group keeps the count of groups per step */
  }
  CP_ASYNC_WAIT(STAGES - 2); /* step 0 has landed */
#else
  LOAD_STEP(t_begin);
  STORE_STEP(0);
#endif
  SYNC();
  for (int t0 = t_begin; t0 < T; t0 += BK) {
#if ASYNC_COPY
    const int more = t0 + BK < T;
    const int step = (t0 - t_begin) / BK, cur = step % STAGES;
    /* the step STAGES-1 ahead, into the buffer the previous step read (every thread is past it:
     * the barrier that ended that step) */
    if (t0 + (STAGES - 1) * BK < T)
      COPY_STEP((step + STAGES - 1) % STAGES, t0 + (STAGES - 1) * BK)
    else
      CP_ASYNC_COMMIT();
#else
    const int cur = DOUBLE_BUFFER ? (t0 / BK) & 1 : 0; /* t_begin / BK is even: 0 first */
    const int more = t0 + BK < T;
    if (PREFETCH && more) { /* loads in flight while computing below */
      LOAD_STEP(t0 + BK);
    }
#endif
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {                 /* phase "compute": the micro-kernel */
      float a[TM], b[TN];
      for (int u = 0; u < MSUB; ++u) {
#if TMS == 4
        const float4 v = LOAD4(&As[cur][kk][tile_row(wm0, ly, u * 4)]);
        a[u * 4] = v.x, a[u * 4 + 1] = v.y, a[u * 4 + 2] = v.z, a[u * 4 + 3] = v.w;
#else
        for (int i = 0; i < TMS; ++i) a[u * TMS + i] = As[cur][kk][tile_row(wm0, ly, u * TMS + i)];
#endif
      }
      for (int u = 0; u < NSUB; ++u) {
#if TNS == 4
        const float4 v = LOAD4(&Bs[cur][kk][tile_col(wn0, lx, u * 4)]);
        b[u * 4] = v.x, b[u * 4 + 1] = v.y, b[u * 4 + 2] = v.z, b[u * 4 + 3] = v.w;
#else
        for (int j = 0; j < TNS; ++j) b[u * TNS + j] = Bs[cur][kk][tile_col(wn0, lx, u * TNS + j)];
#endif
      }
      for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
    }
    if (more) {
#if ASYNC_COPY
      CP_ASYNC_WAIT(STAGES - 2); /* the next step has landed */
#else
      if (!PREFETCH) {
        LOAD_STEP(t0 + BK);
      }
      if (!DOUBLE_BUFFER) SYNC(); /* all reads of the only buffer done before it is refilled */
      STORE_STEP(DOUBLE_BUFFER ? (cur ^ 1) : 0);
#endif
      SYNC();
    }
  }
#else
  /* No shared memory: each thread streams its rows' windows and the filter from global memory. */
  idx base[TM];
  for (int i = 0; i < TM; ++i) base[i] = window_base(m0 + tile_row(wm0, ly, i), M, P, Q, Wu, sx, RC);
  for (int t = t_begin; t < T; ++t) {
    float a[TM], b[TN];
    for (int i = 0; i < TM; ++i) a[i] = base[i] >= 0 ? iw[base[i] + t] : 0.0f;
    for (int j = 0; j < TN; ++j) {
      const int k = k0 + tile_col(wn0, lx, j);
      b[j] = k < K ? fw[(idx)t * K + k] : 0.0f;
    }
    for (int i = 0; i < TM; ++i)
      for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
  }
#endif

#define OUT_PIXEL(row) (m0 + (row) < M ? m0 + (row) : -1)
  STORE_OUTPUT
#undef OUT_PIXEL
}
#endif /* !BAND */

/* Split-K's last phase: out[i] += partial[z][i] for the slices z > 0; one thread per output. */
KERNEL void splitk_reduce(GLOBAL float* out, CONST_GLOBAL float* partial, int extra_slices,
                          i64 total) {
  const i64 i = GLOBAL_ID;
  if (i >= total) return;
  float v = out[i];
  for (int z = 0; z < extra_slices; ++z) v += partial[z * total + i];
  out[i] = v;
}

/* The direct-convolution peer: no transform, no workspace. One thread per output pixel (n, p, q)
 * and DIRECT_K consecutive output channels; consecutive threads take consecutive q (coalesced input
 * reads along a row and coalesced NCHW output writes); each input value loaded feeds DIRECT_K FMAs,
 * and a warp reads the same filter values (cached broadcast). x through its strides; f, out
 * contiguous (out is NCHW). grid = ceil(N * ceil(K / DIRECT_K) * P * Q / 256), block = 256. */
#ifndef DIRECT_K
#define DIRECT_K 4
#endif
KERNEL void direct_conv(CONST_GLOBAL float* x, CONST_GLOBAL float* f, CONST_GLOBAL float* bias,
                        GLOBAL float* out, int has_bias, i64 sn, i64 sc, i64 sh, i64 sw, int N, int C,
                        int H, int W, int K, int R, int S, int sy, int sx, int py, int px, int P,
                        int Q) {
  const int kgroups = (K + DIRECT_K - 1) / DIRECT_K;
  const i64 i = GLOBAL_ID;
  if (i >= (i64)N * kgroups * P * Q) return;
  const int q = (int)(i % Q), p = (int)((i / Q) % P), kg = (int)((i / ((i64)P * Q)) % kgroups);
  const i64 n = i / ((i64)P * Q * kgroups);
  const int k0 = kg * DIRECT_K;
  float acc[DIRECT_K];
  for (int j = 0; j < DIRECT_K; ++j) acc[j] = (has_bias && k0 + j < K) ? bias[k0 + j] : 0.0f;
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r) {
      const int h = p * sy + r - py;
      if (h < 0 || h >= H) continue;
      for (int s = 0; s < S; ++s) {
        const int w = q * sx + s - px;
        if (w < 0 || w >= W) continue;
        const float v = x[n * sn + c * sc + h * sh + w * sw];
        for (int j = 0; j < DIRECT_K; ++j)
          if (k0 + j < K) acc[j] += v * f[(((i64)(k0 + j) * C + c) * R + r) * S + s];
      }
    }
  for (int j = 0; j < DIRECT_K; ++j)
    if (k0 + j < K) out[((n * K + k0 + j) * P + p) * Q + q] = acc[j];
}
