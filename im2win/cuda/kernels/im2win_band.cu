/* im2win_conv with window bands (compiled instead of the row kernel when BAND = 1; beyond the
 * authors' kernel, which loads each pixel's window on its own).
 *
 * Neighbouring pixels of one output row read overlapping windows: pixel q reads window columns
 * q*sx .. q*sx + S - 1 of Iw[n][p]. Here a block's pixels are taken four at a time (a quad: pixels
 * 4*qq .. 4*qq + 3 of one output row), and each quad's band, window columns 4*qq*sx ..
 * 4*qq*sx + 3*sx + S - 1, is staged in shared memory once: 3*sx + S columns per 4 pixels instead of
 * 4*S (conv6-conv12: 6 against 12).
 *
 * The reduction runs over rc = r*C + c (contiguous in Iw) in BK-deep steps, and over the filter
 * columns s inside each step. A step stages, per rc, the bands of the block's BM / 4 quads
 * (As[rc][quad * LP + column], transposed, as the row kernel's A tile) and the filter rows
 * t = s*R*C + rc of every s (Bs[s * BK + rc][BN]). The micro-kernel loads a quad's band columns
 * once per rc and slides over them in registers: pixel i of the quad at filter column s reads band
 * column i*sx + s (BAND_S and BAND_SX are compile-time, so the slide is register indexing). Per rc,
 * an 8 x 8 micro-tile takes 2 * ceil((3*sx + S) / 4) float4 band loads and 2 * S float4 filter
 * loads for 64 * S FFMA (conv6-conv12: 19 FFMA per shared load; the row kernel: 16).
 *
 * Tile rows are numbered by quads: row m' = 4 * quad + i, quad = (n * P + p) * Q4 + qq with
 * Q4 = ceil(Q / 4). Pixels past Q in an output row's last quad are computed on zeros and never
 * stored. Split-K slices the rc range. Needs SMEM, DOUBLE_BUFFER and 4 x 4 sub-tiles (TM and TN
 * multiples of 4), so that each sub-tile's rows are one quad (tile_row).
 */
#if BAND
#define SX BAND_SX
#define FS BAND_S
#define QUAD_COLS (3 * SX + FS)             /* window columns a quad's 4 pixels read */
#define LP0 ((QUAD_COLS + 3) / 4 * 4)
#define LP (LP0 % 32 ? LP0 : LP0 + 4)       /* a quad's band in As: float4-aligned, and the two quads
                                               a quarter warp reads never share a bank */
#define A_ROWS (BM / 4 * LP)                /* band columns of the block's quads */
#define AB_ROW (A_ROWS + 4)                 /* As rows padded: conflict-free transposed stores */
#define A_RUN (BK < 4 ? BK : 4)             /* consecutive rc a thread loads of one band column */
#define A_RUNS_ALL (A_ROWS * (BK / A_RUN))
#define A_RUNS ((A_RUNS_ALL + THREADS - 1) / THREADS)
#define B_ROWS (FS * BK)
#define B_RUNS_ALL (B_ROWS * (BN / 4))      /* float4 runs of filter rows */
#define B_RUNS ((B_RUNS_ALL + THREADS - 1) / THREADS)
#define SC (FS < 4 ? FS : 4)                /* filter columns per slide of the micro-kernel */
#define VL ((3 * SX + SC + 3) / 4 * 4)      /* band columns a slide loads, at most */

/* Start in Iw of band column `col` of the block's quads (quad col / LP from the block's first,
 * window column col % LP of its band), or -1 outside the problem and in the padding of a band
 * (nothing reads it: its zeros are never loaded). */
DEVICE idx band_base(idx m0, int col, idx quads, int Q4, int Wu, idx RC) {
  const idx quad = m0 / 4 + col / LP;
  const int w = (int)(quad % Q4) * 4 * SX + col % LP;
  if (quad >= quads || w >= Wu || col % LP >= QUAD_COLS) return -1;
  return ((quad / Q4) * Wu + w) * RC;
}

/* Output pixel n*P*Q + p*Q + q of tile row mq (numbered by quads), or -1 past Q or the batch. */
DEVICE idx band_pixel(idx mq, idx quads, int Q4, int Q) {
  const idx quad = mq / 4;
  const int q = (int)(quad % Q4) * 4 + (int)(mq % 4);
  return quad < quads && q < Q ? (quad / Q4) * Q + q : -1;
}

/* Global -> registers for the step at rc = t0: ra[i] = the A_RUN values of run tid + i*THREADS
 * (band column id / (BK / A_RUN), rc from t0 + (id % (BK / A_RUN)) * A_RUN), rb[i] = 4 filter values
 * of run tid + i*THREADS (Bs row id / (BN / 4), channels from k0 + (id % (BN / 4)) * 4); zeros
 * outside the problem, float4 loads where the launch says addresses align. */
DEVICE void band_load(CONST_GLOBAL float* iw, CONST_GLOBAL float* fw, const idx* a_base, int tid,
                      int k0, int K, idx RC, int T, int t0, int vec_a, int vec_b, float* ra,
                      float* rb) {
  for (int i = 0; i < A_RUNS; ++i) {
    const int ta = t0 + ((tid + i * THREADS) % (BK / A_RUN)) * A_RUN;
    const idx base = a_base[i];
#if A_RUN == 4 && VEC_LOAD
    if (vec_a && base >= 0 && ta + 4 <= T) {
      const float4 v = LOAD4(iw + base + ta);
      ra[i * 4] = v.x, ra[i * 4 + 1] = v.y, ra[i * 4 + 2] = v.z, ra[i * 4 + 3] = v.w;
      continue;
    }
#endif
    for (int j = 0; j < A_RUN; ++j)
      ra[i * A_RUN + j] = base >= 0 && ta + j < T ? iw[base + ta + j] : 0.0f;
  }
  for (int i = 0; i < B_RUNS; ++i) {
    const int id = tid + i * THREADS, row = id / (BN / 4);
    const int rc = t0 + row % BK, k = k0 + (id % (BN / 4)) * 4;
    const int ok = row < B_ROWS && rc < T;
    const idx src = ok ? ((row / BK) * RC + rc) * K + k : 0;
#if VEC_LOAD
    if (vec_b && ok && k + 4 <= K) {
      const float4 v = LOAD4(fw + src);
      rb[i * 4] = v.x, rb[i * 4 + 1] = v.y, rb[i * 4 + 2] = v.z, rb[i * 4 + 3] = v.w;
      continue;
    }
#endif
    for (int j = 0; j < 4; ++j) rb[i * 4 + j] = ok && k + j < K ? fw[src + j] : 0.0f;
  }
}

/* grid = (ceil(N * P * Q4 * 4 / BM), ceil(K / BN), slices), block = THREADS; block z reduces
 * rc in [z * t_split, min(R*C, (z + 1) * t_split)) (t_split: a multiple of 2 * BK). */
IM2WIN_CONV_ENTRY {
  const idx M = (idx)N * P * Q;
  const idx RC = (idx)R * C;
  const int Q4 = (Q + 3) / 4;
  const idx quads = (idx)N * P * Q4;
  BLOCK_START(R * C)

  SHARED ALIGN16 float As[2][BK][AB_ROW]; /* bands transposed: As[rc][quad * LP + column] */
  SHARED ALIGN16 float Bs[2][B_ROWS][BN]; /* Bs[s * BK + rc][channel] */
  idx a_base[A_RUNS];
  for (int i = 0; i < A_RUNS; ++i) {
    const int id = tid + i * THREADS;
    a_base[i] = id < A_RUNS_ALL ? band_base(m0, id / (BK / A_RUN), quads, Q4, Wu, RC) : -1;
  }
  float ra[A_RUNS * A_RUN], rb[B_RUNS * 4];
#define BAND_STORE(buf)                                                                      \
  {                                                                                          \
    for (int i = 0; i < A_RUNS; ++i) {                                                       \
      const int id = tid + i * THREADS;                                                      \
      if (A_RUNS_ALL % THREADS == 0 || id < A_RUNS_ALL)                                      \
        for (int j = 0; j < A_RUN; ++j)                                                      \
          As[buf][(id % (BK / A_RUN)) * A_RUN + j][id / (BK / A_RUN)] = ra[i * A_RUN + j];   \
    }                                                                                        \
    for (int i = 0; i < B_RUNS; ++i) {                                                       \
      const int id = tid + i * THREADS;                                                      \
      if (B_RUNS_ALL % THREADS == 0 || id < B_RUNS_ALL)                                      \
        STORE4(&Bs[buf][id / (BN / 4)][(id % (BN / 4)) * 4],                                 \
               MAKE4(rb[i * 4], rb[i * 4 + 1], rb[i * 4 + 2], rb[i * 4 + 3]));               \
    }                                                                                        \
  }
  band_load(iw, fw, a_base, tid, k0, K, RC, T, t_begin, vec_a, vec_b, ra, rb);
  BAND_STORE(0)
  SYNC();
  for (int t0 = t_begin; t0 < T; t0 += BK) {
    const int cur = ((t0 - t_begin) / BK) & 1;
    const int more = t0 + BK < T;
    if (PREFETCH && more) /* loads in flight while computing below */
      band_load(iw, fw, a_base, tid, k0, K, RC, T, t0 + BK, vec_a, vec_b, ra, rb);
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) { /* the micro-kernel, one rc at a time */
#pragma unroll
      for (int s0 = 0; s0 < FS; s0 += SC) { /* a slide: filter columns s0 .. s0 + SC - 1 */
        const int vl = (3 * SX + (FS - s0 < SC ? FS - s0 : SC) + 3) / 4 * 4;
        float v[MSUB][VL];
        for (int u = 0; u < MSUB; ++u)
          for (int e = 0; e < VL; e += 4)
            if (e < vl) {
              const float4 w = LOAD4(&As[cur][kk][(wm0 / 4 + u * LY + ly) * LP + s0 + e]);
              v[u][e] = w.x, v[u][e + 1] = w.y, v[u][e + 2] = w.z, v[u][e + 3] = w.w;
            }
        for (int s = s0; s < s0 + SC && s < FS; ++s) {
          float b[TN];
          for (int u = 0; u < NSUB; ++u) {
            const float4 w = LOAD4(&Bs[cur][s * BK + kk][tile_col(wn0, lx, u * 4)]);
            b[u * 4] = w.x, b[u * 4 + 1] = w.y, b[u * 4 + 2] = w.z, b[u * 4 + 3] = w.w;
          }
          for (int u = 0; u < MSUB; ++u)
            for (int i = 0; i < 4; ++i)
              for (int j = 0; j < TN; ++j) acc[u * 4 + i][j] += v[u][i * SX + s - s0] * b[j];
        }
      }
    }
    if (more) {
      if (!PREFETCH) band_load(iw, fw, a_base, tid, k0, K, RC, T, t0 + BK, vec_a, vec_b, ra, rb);
      BAND_STORE(cur ^ 1)
      SYNC();
    }
  }
#undef BAND_STORE

#define OUT_PIXEL(row) band_pixel(m0 + (row), quads, Q4, Q)
  STORE_OUTPUT
#undef OUT_PIXEL
}
#endif /* BAND */
