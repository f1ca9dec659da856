// im2win and its CPU peers: window transforms and convolution kernels, FP32, OpenMP + SIMD.
//
// Implements the im2win convolution of Lu et al., "Im2win: Memory Efficient Convolution On SIMD
// Architectures" (HPEC 2022), generalised to zero padding and a stride per axis, in two layouts:
//
//   * NCHW window ("im2win_nchw", the paper's own formulation):
//       Iw[n][c][p][w*R + r] = I[n][c][p*sy + r - py][w - px]          w < Wu = (Q-1)*sx + S
//       Fw[k][c][s*R + r]   = F[k][c][r][s]
//       O[n][k][p][q]       = sum_c sum_{t < R*S} Iw[n][c][p][q*sx*R + t] * Fw[k][c][t]
//   * NHWC window ("im2win", the layout of the follow-up paper, arXiv 2408.00278):
//       Iw[n][p][w][r][c]   = I[n][c][p*sy + r - py][w - px]
//     The window of output pixel (n, p, q) is one contiguous run of S*R*C floats starting at
//     Iw[n][p][q*sx][0][0]; neighbouring windows overlap by (S - sx)*R*C floats. The convolution is a
//     GEMM  O[m][k] = sum_t A[m][t] * B[t][k]  over pixels m = (n, p, q) whose A rows are those
//     overlapping windows (never copied again) and B[t][k] = F[k][c][r][s] for t = (s, r, c).
//
// The direct convolution is the fair peer: the same compiler, flags, threads and SIMD width, register
// blocking over output channels and vectorisation over output columns.
//
// Every entry point takes the thread count; nothing here allocates: the Python side passes the output
// and every workspace, so that what each implementation needs is visible and measured there.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>
#include <omp.h>
#include <unistd.h>

// What differs between the architectures, kept here: the vector code is GCC's vector extensions,
// which compile to SSE, AVX2 or AVX-512 on x86 and to NEON on 64-bit ARM (AArch64: 4 lanes, the
// SSE path's register block). x86 adds non-temporal stores (store_stream, stream_fence), the
// vendor's tuning (kIntel) and the spin-wait hint; elsewhere those are plain stores, a release
// fence, AMD's tuning and the architecture's own hint.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define IM2WIN_X86 1
#define IM2WIN_VREG "+v"       // an asm operand in a vector register
#define IM2WIN_ASM_NOTE "# "   // an assembler comment (im2win.cpu.isa reads the markers)
#else
#define IM2WIN_X86 0
#if defined(__aarch64__)
#define IM2WIN_VREG "+w"
#define IM2WIN_ASM_NOTE "// "
#else
#error "im2win's CPU kernels build for x86-64 and AArch64"
#endif
#endif

namespace {

// The register block: MR pixels x NR vectors of output channels, MR x NR accumulators + NR + 1 live
// vector registers. -DIM2WIN_MR=.. -DIM2WIN_NR=.. build another block, to read and model its main
// loop (python -m im2win.cpu.isa --block MRxNR) or time it as a variant (python -m
// im2win.cpu.kernel_ab).
#if defined(__AVX512F__)
// Other AVX-512 register blocks, read from GCC 12's assembly (python -m im2win.cpu.isa --block):
// 14 x 2 needs 16 general registers for its row pointers, panel and step and spills (3 stack
// accesses a pass); 6 x 4 fits, with 10 loads per 24 FMAs against 12 x 2's 14, but a 64-channel
// block leaves conv1-conv2 (K = 96) a half-empty last block. LLVM 19's models (python -m
// im2win.cpu.isa --model): on Zen 4 and Zen 5 each vbroadcastss zmm takes a slot on FP1, one of
// the two FMA pipes, so 12 x 2 issues at 67% of the FMA peak and 6 x 4 at 80%; on Skylake-AVX512
// 92% and 100%. Timed on Zen 5 (python -m im2win.cpu.kernel_ab im2win_cpu.cpp --blocks 12x2 6x4
// 8x3, 20 interleaved rounds, batch 4), the model is wrong there: 12 x 2 was the fastest on every
// layer but conv6 and conv11 (level), 6 x 4 ran 0.70-1.01x and 8x3 0.64-1.00x, and 12 x 2's
// micro-kernel alone in L1 reaches 96-98% of the FMA probe. A 12 x 2 loop whose FMAs broadcast
// from memory ({1to16}, inline assembly: 29 instructions a pass against 41), which models at 100%
// on Zen 4, ran 0.86-0.95x on every layer on Zen 5 (kernel_ab, 20 interleaved rounds: conv1-3
// 0.86-0.87x, conv8 0.91x, conv11 0.93x). On Zen 4 (AMD EPYC family 25 model 17, 32 KB L1d;
// its AVX-512 runs on 256-bit pipes) 12 x 2 and 6 x 4 are level within the noise: two runs (12
// and 25 interleaved rounds) gave 6 x 4 1.01-1.04x on conv8 and conv9 in both, 0.96-0.99x on
// conv4 and conv5, 0.93-1.05x on conv3, conv6, conv7 and conv10-conv12 (on both sides of 1.0 from
// one run to the other), 0.77x on conv1-conv2 (K = 96); 8 x 3 0.56-1.03x. There the AVX2 code
// (8 lanes, 6 x 2; this source built without __AVX512F__) ran 0.86-0.96x of the AVX-512 code on
// every layer (15 rounds). On a Xeon (Intel family 6 model 167, 48 KB L1d, 2 MB L2; kernel_ab,
// 25-30 interleaved rounds, two runs) 6 x 4 ran 0.65-0.71x on conv1-conv2 (K = 96), 1.06-1.09x
// on conv7 and 1.00-1.07x on conv3, conv6, conv9, 0.97-1.02x on the others; 8 x 3 0.37-0.98x.
// Nor a band tile, tried on that Xeon for the stride-1 3 x 3 layers: 12 pixels side by side in one
// output row, whose windows are shifted views of one band (pixel i's tap s is column i + s), so
// each step broadcasts each of the 14 columns once for its 3 taps against the taps' 6 B vectors:
// 72 FMAs from 14 broadcasts and 6 loads, where 12 x 2 takes 36 and 6 (31 vector registers, no
// spills; each row's last pixels went to 12 x 2 tiles gathered across rows). Alone in L1 it ran
// 204-208 GFLOP/s on one thread against 12 x 2's 191-197 (405-412 against 380-392 on two), but
// not in the layers: kernel_ab with it built in and out, 150 interleaved rounds, torch_cl between,
// two runs: conv8-conv11 0.98-1.03x at best and 0.99-1.01x at the median; one thread (100
// rounds): 0.99-1.02x, where conv8 ran at 205 GFLOP/s either way, above both kernels' L1 probes.
// Nor with its B rows in L1: each band tile's reduction in slices of 64 or 32 steps (the 3 taps'
// B rows 24 or 12 KB), a slice over every band tile of the work item before the next: 0.90x and
// 0.86x on conv8, 0.91-0.95x on conv9-conv10, 0.97x and 0.95x on conv11 against 12 x 2 (the
// whole band tile 1.00-1.04x at best, level at the median in the same run; 150 rounds).
// What holds 12 x 2 below the FMA peak in L1 on that Xeon, when it is held, is its broadcasts of
// the window rows, not its FMAs nor its B loads. Its loop taken apart (im2win_ukernel_part_gflops,
// timed by every `repro run im2win-cpu`: "The micro-kernel taken apart"), two threads, beside the
// FMA probe: the multiply-adds alone on registers 101-102% of the probe, with the 2 B loads
// 100-103%, the whole micro-kernel 86-90% (8 and 20 rounds; the quick run at 856ef2e: 101%, 101%,
// 87%). What the broadcasts cost there depends on the machine's state, not on the code: in the
// quick run at 51f4289 (a fresh clone; the threads' round trip 120 ns, the FMA probe 481-495
// GFLOP/s) the same loops ran at 101%, 101% and 97%, and the micro-kernel in the layers' rounds
// at 92-98% of the probe, against 88-95% (medians of the layers) in the 12 quick runs before. Blocks
// with fewer broadcasts a multiply-add run no faster there (built with -DIM2WIN_MR/-DIM2WIN_NR,
// 10 interleaved rounds, medians): the whole micro-kernel at 91-93% of the probe for every block
// (12 x 2 91.5%, 6 x 4 91.6%, 8 x 3 92.9%, 10 x 2 92.9%, 8 x 2 91.0%), its B-loads part at
// 98-106%; 6 x 4 loses less to its 6 broadcasts (0.94x its B-loads part against 12 x 2's 0.86x)
// but more to its 4 B loads. Nor does broadcasting through the integer domain (vpbroadcastd,
// inline asm: level with vbroadcastss).
// A standalone copy of the loop (intrinsics, one core; not part of this repository) with each
// FMA broadcasting from memory ({1to16}: 24 loads a step) ran at 69-74% of the same FMAs on
// registers. Its AVX2 build (6 x 2) loses nothing to its broadcasts there: 99%, 99%, 99% of the
// AVX2 probe (the quick run at 856ef2e, --isa x86-64-v3).
constexpr int VL = 16;
#define IM2WIN_DEFAULT_MR 12
#elif defined(__AVX__)
// AVX2's 16 vector registers: 6 x 2 (12 accumulators, 8 loads per 12 FMAs). 3 x 4 (7 loads per 12
// FMAs, 32 channels a panel as on AVX-512) was timed against it on Zen 4 (kernel_ab --march
// x86-64-v3 --blocks 6x2 3x4 --between torch_cl, three runs of 30 interleaved rounds): conv7
// 1.03-1.11x and conv9 1.02-1.04x in all three, conv4 0.98-0.99x and conv12 0.97-0.99x in all
// three, the others on both sides of 1.0 (conv5 0.96-1.04x, conv8 0.98-1.07x): not kept. 4 x 3
// (24-channel panels) ran 0.90-0.93x on conv8-conv11, 5 x 2 0.91-1.02x (12 rounds).
constexpr int VL = 8;
#define IM2WIN_DEFAULT_MR 6
#elif defined(__aarch64__)
// NEON: 4 lanes, 32 registers. 8 x 2 (16 accumulators, 9 loads per 16 FMAs), chosen from GCC 12's
// assembly and llvm-mca 19's models (python -m im2win.cpu.aarch64 --model), not timed on
// an ARM core: of each model's FMA peak, Neoverse N1 100%, V1 99%, V2 99%, against SSE's 6 x 2 at
// 99%, 75% (its 12 chains too few for V1's latency), 99%. 12 x 2, 8 x 3 and 6 x 4 move
// accumulators through the stack, 11, 6 and 3 accesses a step: 72-96%.
constexpr int VL = 4;
#define IM2WIN_DEFAULT_MR 8
#else
constexpr int VL = 4;
#define IM2WIN_DEFAULT_MR 6
#endif
#ifndef IM2WIN_MR
#define IM2WIN_MR IM2WIN_DEFAULT_MR
#endif
#ifndef IM2WIN_NR
#define IM2WIN_NR 2
#endif
constexpr int MR = IM2WIN_MR;  // pixels per micro-tile
constexpr int NR = IM2WIN_NR;  // vectors of output channels per micro-tile
constexpr int KB = NR * VL;   // output channels per B panel
constexpr int TC = 192;       // reduction depth per B panel: TC * KB floats stay in L1
// Reduction steps a micro-kernel call takes from the filter packed once (its B rows a slice of that
// one buffer, nothing packed per call): the whole reduction of every paper layer (T <= 4608). Its B
// rows stream from L2 (AVX-512: 18-590 KB), each output tile is loaded and stored once, and the
// window rows are swept once. Against slices of TC steps (B in L1), the AVX-512 code on Zen 5 (48
// KB L1, 1 MB L2), 30 interleaved rounds: conv1 1.03x, conv2 1.02x, conv4 1.05x, conv5 1.05x, conv8
// 1.03x, conv9 1.04x, conv10 1.05x; 576 and 1152 steps gave 1.02-1.04x. The AVX2 code on Zen 5
// (kernel_ab --march x86-64-v3, 20 and 30 rounds): conv11 1.07x and 1.09x, conv5 1.06x, conv10
// 1.04x and 1.05x, conv4 1.02x and 1.04x, conv8 1.01x and 1.02x, conv7 0.98x and 0.99x (the same
// code: its 27 steps are one slice either way), the others level. (Not timed on Zen 3.) On a Xeon
// (48 KB L1d, 2 MB L2; 25 rounds) against 192 and 576 steps: conv1-conv2 1.03-1.05x, conv9-conv11
// 1.01-1.04x, the others 0.98-1.02x. Zen 4 (32 KB L1: TC x KB is 24 KB of it),
// 20 rounds, against 192 and 576 steps: conv5 0.95x and 0.96x, conv10 0.95x and 0.97x, conv11
// 0.95x and 0.99x, conv9 0.98x and 1.00x, conv8 0.99x and 1.02x, conv1 level: kept there too.
// Where the rest of the time goes on the Xeon: each work item's gemm_block run twice over the
// same bands (the second pass hot: bands in L2, B rows from L2; kernel_ab, 100 rounds, whole call
// time twice minus once) ran conv8 372, conv9 362, conv10 386 and conv11 391 GFLOP/s against
// 324-358 for the whole call in the same rounds; in the reproduction's rounds of these layers the
// micro-kernel alone in L1 ran 371-431 and the FMA probe 403-471 (two runs): the micro-kernel on
// the layer's own bands and B rows (from L2), not what surrounds it, is most of the gap.
// Retimed on the Xeon with ukernel_wide's pairs of panels (conv8-conv10: 4 B vectors a step, twice
// 12 x 2's B rows from L2 a multiply-add), slices of 96, 192 and 288 steps (a pair's slice 24-72
// KB) against the whole reduction: conv8 0.94x, 0.98x, 0.99x at best, conv9 0.94x, 0.98x, 0.98x,
// conv10 0.92x, 0.96x, 0.96x, conv11 (12 x 2) 0.93x, 0.95x, 0.97x (kernel_ab, torch_cl between,
// 40 rounds; the medians alike).
constexpr int TC_PACKED = 4608;
constexpr int MC = 64 * MR;   // pixels per work item: amortises packing, A block stays in L2
// Floats of the filter panel a thread packs for itself where the filter is not packed once (18 KB
// of L1 with AVX2): a TC x KB slice (the streamed kernel's and gemm_block's), or every tap of a
// block of input channels (gemm_block_taps), whose blocks im2win_window_block sizes to fit it or,
// where the memory allows, a larger panel.
constexpr int PANEL_FLOATS = std::max(TC * KB, 4608);

// Floats of the panel a thread of im2win_conv_nhwc packs for itself where the filter is not packed
// once, on a window in blocks of cb channels: every tap of a block (cb < C: gemm_block_taps), else
// TC x KB (gemm_block). (A whole PANEL_FLOATS a thread, the most either takes, put conv12's
// workspace at 0.493 of its im2col matrix and its measured extra memory at 0.499, against the
// goal's 0.5; its taps panel, 18 KB a thread with AVX-512, leaves 0.487.)
long nhwc_panel_floats(int C, int R, int S, int cb) {
  return cb < C ? static_cast<long>(R) * S * cb * KB : static_cast<long>(TC) * KB;
}

typedef float V __attribute__((vector_size(VL * 4)));
typedef float Vu __attribute__((vector_size(VL * 4), aligned(4)));  // unaligned load/store view

inline V loadu(const float* p) { return *reinterpret_cast<const Vu*>(p); }
inline void storeu(float* p, V v) { *reinterpret_cast<Vu*>(p) = v; }
// A non-temporal store of a whole aligned vector: written to memory without first reading its cache
// line in (no write-allocate), and not kept in the cache.
inline void store_stream(float* p, V v) {
#if defined(__AVX512F__)
  _mm512_stream_ps(p, (__m512)v);
#elif defined(__AVX__)
  _mm256_stream_ps(p, (__m256)v);
#elif IM2WIN_X86
  _mm_stream_ps(p, (__m128)v);
#else  // no store that skips the read of its line: a plain one
  *reinterpret_cast<V*>(p) = v;
#endif
}
// Orders the non-temporal stores before whatever follows (x86's sfence; elsewhere the stores were
// plain, and a release fence orders them).
inline void stream_fence() {
#if IM2WIN_X86
  _mm_sfence();
#else
  std::atomic_thread_fence(std::memory_order_release);
#endif
}
// In a spin-wait loop: lets the core know (x86 pause, AArch64 yield).
inline void spin_hint() {
#if IM2WIN_X86
  __builtin_ia32_pause();
#else
  __asm__ volatile("yield");
#endif
}
bool aligned(const float* p) { return reinterpret_cast<std::uintptr_t>(p) % sizeof(V) == 0; }

long cdiv(long a, long b) { return (a + b - 1) / b; }

// Tuning that differs between the x86 vendors' cores, from the CPU this runs on; -DIM2WIN_INTEL=0
// or =1 builds the other's (the tests run both on any host). Intel's cores issue scalar integer
// ops on the ports of the vector FMAs (0 and 5), AMD's Zen on separate integer pipes: on Intel the
// micro-kernel's main loop runs two reduction steps a pass (ukernel_full), so that its counter and
// panel pointer cost one FMA slot every two steps instead of every step, and prefetches its B rows
// where a tile's window rows fill most of L1 (tuned on Intel only). And the packed filter is
// written with plain stores on Intel, where the threads' cores share one last-level cache that the
// next reads then hit, and non-temporal ones on AMD (pack_filter).
#ifdef IM2WIN_INTEL
constexpr bool kIntel = IM2WIN_INTEL;
#else
bool cpu_is_intel() {
#if IM2WIN_X86
  __builtin_cpu_init();  // before main: the loader runs this initialiser
  return __builtin_cpu_is("intel");
#else
  return false;
#endif
}
const bool kIntel = cpu_is_intel();
#endif
// A cache's size in bytes (sysconf `name`), or `otherwise` where the system does not say.
long cache_bytes(int name, long otherwise) {
  const long bytes = sysconf(name);
  return bytes > 0 ? bytes : otherwise;
}
const long kL1Bytes = cache_bytes(_SC_LEVEL1_DCACHE_SIZE, 32l << 10);  // the L1 data cache

// Split n units into blocks of at most `target` (and at least `align`-aligned) units such that the
// number of blocks is a multiple of nthreads and blocks are near-equal: on threads that run at the
// same speed, every thread then gets the same amount of work. Returns the block size.
long balanced_block(long n, long target, int nthreads, long align = 1) {
  if (n <= 0) return align;  // nothing to split (an empty batch): no division by zero blocks
  const long blocks = nthreads * cdiv(n, nthreads * std::max(target, 1l));
  return std::max(align, cdiv(cdiv(n, blocks), align) * align);
}

// Micro-kernel, phase "compute": C[i][0:KB] (+)= sum_t a[i][t] * b[t][0:KB] for i < M.
// a: M row pointers (each row contiguous in t), b: packed panel [tc][KB], c: rows at stride ldc.
// First panel (first = true) starts from the bias (or zero), later ones accumulate into C.
// ukernel_full: a whole tile of KB output channels; ukernel: any tile, the last channel block's
// (kvalid < KB) through a whole scratch tile. Every loop over the tile is unrolled, so the
// accumulators go from memory (or the bias) straight into registers and back. (When the
// partial tile's masked copies were part of the same function, GCC 12 kept the accumulators in a
// stack array on AVX-512 and moved the whole tile through it before and after the main loop: 23%
// of the micro-kernel's samples on conv7 (perf), whose 27-step reductions make each call short.
// Split, with the opaque pointers below, on Zen 5 (20 interleaved rounds, two runs): conv7 1.17x
// and 1.13x, conv1 1.04x, conv3 1.02-1.04x, conv6 and conv12 1.01-1.02x, the others level; as
// AVX2 code there (the split alone): conv11 1.05x, conv12 1.04x, conv7 1.03x, the others level.)
// stream: the stores are non-temporal (store_stream; c and ldc aligned to the vector).
// Inlined into its callers below AVX-512: with GCC 12's own choice it stayed out of line in
// gemm_block once gemm_block_taps existed, and its calls (register saves, the tile through the
// stack) cost up to 19% on conv7 (1.19x, 1.23x and 1.07x in three runs of 20-40 interleaved
// rounds; conv3 1.06x, 1.01x, 1.08x; conv1, conv8, conv9, conv10, conv12 level; conv4 1.09x
// once). AVX-512 keeps GCC's choice, one out-of-line copy: inlined everywhere, conv7 ran 0.93x on
// Zen 5 (30 interleaved rounds; other layers level), and flattened into gemm_block_taps its
// 12-row loop reloaded a row pointer from the stack every step (python -m im2win.cpu.isa), for no
// measured gain (conv6, conv11, conv12 0.99-1.02x, 40 rounds).
// A micro-kernel's M x N accumulators at the start of a tile: the bias (or zero) where it is the
// first pass over the tile (first), else the tile's partial sums from rows of C at stride ldc.
template <int M, int N>
__attribute__((always_inline)) inline void start_tile(V (&acc)[M][N], const float* c, long ldc,
                                                      bool first, const float* bias) {
  if (first) {
    V b0[N];
#pragma GCC unroll 8
    for (int j = 0; j < N; ++j) b0[j] = bias ? loadu(bias + j * VL) : V{};
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < N; ++j) acc[i][j] = b0[j];
  } else {
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < N; ++j) acc[i][j] = loadu(c + i * ldc + j * VL);
  }
}

// A micro-kernel's M x N accumulators to rows of C at stride ldc: non-temporal stores (stream;
// c and ldc aligned to the vector) or plain ones.
template <int M, int N>
__attribute__((always_inline)) inline void store_tile(const V (&acc)[M][N], float* c, long ldc,
                                                      bool stream) {
  if (stream) {
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < N; ++j) store_stream(c + i * ldc + j * VL, acc[i][j]);
  } else {
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < N; ++j) storeu(c + i * ldc + j * VL, acc[i][j]);
  }
}

#if defined(__AVX512F__)
#define IM2WIN_INLINE_UKERNEL
#define IM2WIN_FLATTEN
#else
#define IM2WIN_INLINE_UKERNEL __attribute__((always_inline)) inline
#define IM2WIN_FLATTEN __attribute__((flatten))
#endif
template <int M, bool RUNS = false>
IM2WIN_INLINE_UKERNEL void ukernel_full(const float* const* a, const float* b, int tc, float* c,
                                        long ldc, bool first, const float* bias, bool stream,
                                        int runs = 1, long run_stride = 0) {
  V acc[M][NR];
  start_tile(acc, c, ldc, first, bias);
  // The step t counts up from -tc to zero, so the loop needs no bound in a register: with M = 12
  // (AVX-512) the row pointers, the panel pointer and t fill 14 general registers, and a bound too
  // made GCC park a row pointer in a vector register and reload the bound from the stack at every
  // step (python -m im2win.cpu.isa).
  const float* ap[M];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) {
    ap[i] = a[i] + tc;
    __asm__("" : "+r"(ap[i]));  // opaque: GCC indexes the rows from these ends, not from a[i]
  }
  const float* bp = b + static_cast<long>(tc) * KB;
  // Assembler comments around the main loop, for its instruction mix (im2win.cpu.isa); they emit
  // no instruction. (Two software prefetches a step of the B rows 8 or 16 steps ahead cost 1-4% on
  // conv4-conv11 on Zen 5: the loop is bound by issue, not by its loads from L2. On Zen 4, 8, 16
  // or 32 steps ahead: level, 0.99-1.02x on most layers, conv12 0.94-0.97x; the 12 window rows
  // prefetched a line (32 or 64 floats) ahead every 16 steps: level, 0.99-1.03x; 25-40 rounds.)
  auto step = [&](long t) __attribute__((always_inline)) {
    V bv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) bv[j] = loadu(bp + t * KB + j * VL);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      const float ai = ap[i][t];
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) acc[i][j] += bv[j] * ai;
    }
  };
  // RUNS (direct_conv_nhwc): `runs` runs of tc steps, each run's rows run_stride floats after the
  // last's and its B rows right after the last's, the accumulators kept in registers across them.
  for (int run = 0;;) {
    long t = -tc;
    if (kIntel && VL >= 8) {  // AVX and wider: SSE's 16 registers spill in two steps a pass
      // Two steps a pass (see kIntel). On a Xeon (Intel family 6 model 167, AVX-512), kernel_ab,
      // 25-30 interleaved rounds, with the filter packed with plain stores in both: conv11
      // 1.04-1.05x, conv6 1.03-1.09x, conv10 1.01-1.04x, conv4 1.02-1.03x, the others level
      // (0.99-1.02x); the AVX2 code (--march x86-64-v3) 1.04-1.06x on conv4-conv6, conv10, conv11
      // and conv12. The micro-kernel alone in L1 stays level (192-step calls: 382 against 380
      // GFLOP/s). On Zen 4 (family 25 model 17), this branch (two steps a pass, the B-row
      // prefetch where it applies) against one step a pass: 0.997-1.004x at best and 0.988-1.005x
      // at the median on every layer (kernel_ab, torch_cl between, 40 rounds): AMD keeps one.
      //
      // Where the tile's window rows span more than two thirds of L1 (from its first row's start to
      // its last row's end: conv4 and conv11 at 52 and 43 KB of the Xeon's 48; with AVX2's 6-row
      // tiles no paper layer's), the B rows are also prefetched 8 steps ahead, as the hardware's
      // prefetches of them into L1 seem not to survive beside the rows there. On the Xeon,
      // kernel_ab, torch_cl between: conv11 1.14x (60 rounds) and 1.13x (250; threads together),
      // 1.14x (400, apart), conv4 1.03x and 1.05x, the others 0.99-1.02x; the AVX2 code 0.98-1.02x.
      // Prefetched at every tile: conv11 1.09x and 1.10x (300 rounds), but 0.92-0.98x on
      // conv1-conv4 and conv7-conv10 (50 rounds). The AVX2 code prefetching where the rows span
      // over half of L1 (conv4 and conv11 with 6-row tiles): conv4 0.99x at best and 1.02x at the
      // median, conv11 1.03x and 1.00x, conv5 1.01x (kernel_ab --march x86-64-v3, torch between, 30
      // rounds).
      const std::uintptr_t first = reinterpret_cast<std::uintptr_t>(ap[0]) - tc * sizeof(float),
                           last = reinterpret_cast<std::uintptr_t>(ap[M - 1]);
      if (3 * static_cast<long>(std::max(first, last) - std::min(first, last)) > 2 * kL1Bytes) {
        // Paired by hand: with the prefetches inside step and `#pragma GCC unroll 2`, GCC 12 built
        // each step's prefetch address apart and parked a row pointer on the stack (isa reads it).
        if (tc & 1) step(t++);
        __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-prefetch-begin M=%c0" ::"i"(M));
        for (; t != 0; t += 2) {  // the two B rows 8 steps ahead, each of their lines
#pragma GCC unroll 8
          for (int j = 0; j < 2 * KB; j += 64 / sizeof(float))
            __builtin_prefetch(bp + (t + 8) * KB + j, 0, 3);
          step(t);
          step(t + 1);
        }
        __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-prefetch-end M=%c0" ::"i"(M));
      } else {
        __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-pairs-begin M=%c0" ::"i"(M));
#pragma GCC unroll 2
        for (; t != 0; ++t) step(t);
        __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-pairs-end M=%c0" ::"i"(M));
      }
    } else {
      __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-loop-begin M=%c0" ::"i"(M));
      for (; t != 0; ++t) step(t);
      __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-loop-end M=%c0" ::"i"(M));
    }
    if (!RUNS || ++run == runs) break;
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) ap[i] += run_stride;
    bp += static_cast<long>(tc) * KB;
  }
  // c and ldc opaque here: the stores compute their addresses anew, instead of GCC computing all
  // 2 * M of them before the main loop and keeping them on the stack, which cost the loop a
  // register (its bound then compared from the stack at every step).
  __asm__("" : "+r"(c), "+r"(ldc));
  store_tile(acc, c, ldc, stream);
}

template <int M, bool RUNS = false>
IM2WIN_INLINE_UKERNEL void ukernel(const float* const* a, const float* b, int tc, float* c,
                                   long ldc, int kvalid, bool first, const float* bias,
                                   bool stream = false, int runs = 1, long run_stride = 0) {
  if (kvalid == KB)
    return ukernel_full<M, RUNS>(a, b, tc, c, ldc, first, bias, stream, runs, run_stride);
  // the last channel block of a K that is not a multiple of KB: through a whole scratch tile
  alignas(64) float scratch[M][KB] = {};
  alignas(64) float b0[KB] = {};
  if (bias) std::memcpy(b0, bias, sizeof(float) * kvalid);
  if (!first)
    for (int i = 0; i < M; ++i) std::memcpy(scratch[i], c + i * ldc, sizeof(float) * kvalid);
  ukernel_full<M, RUNS>(a, b, tc, scratch[0], KB, first, b0, false, runs, run_stride);
  for (int i = 0; i < M; ++i) std::memcpy(c + i * ldc, scratch[i], sizeof(float) * kvalid);
}

template <int M, bool RUNS = false>
void ukernel_dispatch(int m, const float* const* a, const float* b, int tc, float* c, long ldc,
                      int kvalid, bool first, const float* bias, bool stream = false,
                      int runs = 1, long run_stride = 0) {
  if constexpr (M > 0) {
    if (m == M)
      return ukernel<M, RUNS>(a, b, tc, c, ldc, kvalid, first, bias, stream, runs, run_stride);
    return ukernel_dispatch<M - 1, RUNS>(m, a, b, tc, c, ldc, kvalid, first, bias, stream, runs,
                                         run_stride);
  }
}

// Micro-kernel over two whole panels (2 x NR vectors of output channels) a tile, for
// gemm_block's tiles through several channel blocks (item_blocks): C[i][0:2 KB] = bias +
// sum_t a[i][t] * [b0[t] b1[t]] for i < M <= MR / 2, the whole reduction in one call. With
// AVX-512 only: a 6 x 4 tile broadcasts 6 pixel values a step for 24 multiply-adds against
// 12 x 2's 12, and a pixel's 64 channels are one tile. On the Xeon (family 6 model 167),
// kernel_ab, torch_cl between the calls, against two 12 x 2 tiles through the two panels: conv7
// 1.10x at best and 1.11x at the median, conv3 1.02x and 1.02x (100 rounds); on Zen 4 (family 25
// model 17), conv7 1.04x and 1.03x (300 rounds; see item_blocks). (The same with AVX2's 3 x 4:
// conv7 0.84x, conv3 0.66x on the Xeon; its 12 accumulators, 4 B rows and a broadcast overflow
// the 16 vector registers.) Two steps a pass, as Intel's main loop (kIntel), on every CPU (timed
// so on Zen 4). first = false: adds to C (direct_conv_nhwc's runs after the first).
// (Three panels a tile for conv1-conv2's K = 96, 4 x 6: 4 broadcasts a step for 24 multiply-adds,
// each B vector loaded as its 4 multiply-adds need it, 30 vector registers, no spills in the loop:
// conv1 0.99x at best and 1.00x at the median, conv2 1.01x and 1.02x against 12 x 2 (kernel_ab,
// torch_cl between, 60 rounds).) (Both panels' B rows prefetched 8 steps ahead, as ukernel_full's
// prefetch loop: conv3 1.00x, conv8 1.00x, conv9 1.01x, conv10 1.00x at best and 0.99-1.01x at
// the median, conv7 0.97x; the Xeon, 40 rounds, torch_cl between. The hardware's prefetches keep
// up with the pair of panels from L2.)
template <int M, bool RUNS = false>
void ukernel_wide(const float* const* a, const float* b0, const float* b1, int tc, float* c,
                  long ldc, const float* bias, bool stream, bool first, int runs = 1,
                  long run_stride = 0) {
  constexpr int N = 2 * NR;
  V acc[M][N];
  start_tile(acc, c, ldc, first, bias);
  const float* ap[M];  // counted up from -tc to zero, as in ukernel_full
#pragma GCC unroll 8
  for (int i = 0; i < M; ++i) {
    ap[i] = a[i] + tc;
    __asm__("" : "+r"(ap[i]));
  }
  const float* bp0 = b0 + static_cast<long>(tc) * KB;
  const float* bp1 = b1 + static_cast<long>(tc) * KB;
  auto step = [&](long t) __attribute__((always_inline)) {
    V bv[N];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) bv[j] = loadu(bp0 + t * KB + j * VL);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) bv[NR + j] = loadu(bp1 + t * KB + j * VL);
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      const float ai = ap[i][t];
#pragma GCC unroll 8
      for (int j = 0; j < N; ++j) acc[i][j] += bv[j] * ai;
    }
  };
  for (int run = 0;;) {  // RUNS: as ukernel_full's
    long t = -tc;
    if (tc & 1) step(t++);
    __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-wide-begin M=%c0" ::"i"(M));
    for (; t != 0; t += 2) {
      step(t);
      step(t + 1);
    }
    __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-wide-end M=%c0" ::"i"(M));
    if (!RUNS || ++run == runs) break;
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) ap[i] += run_stride;
    bp0 += static_cast<long>(tc) * KB;
    bp1 += static_cast<long>(tc) * KB;
  }
  __asm__("" : "+r"(c), "+r"(ldc));  // as in ukernel_full
  store_tile(acc, c, ldc, stream);
}

template <int M, bool RUNS = false>
void ukernel_wide_dispatch(int m, const float* const* a, const float* b0, const float* b1, int tc,
                           float* c, long ldc, const float* bias, bool stream, bool first,
                           int runs = 1, long run_stride = 0) {
  if constexpr (M > 0) {
    if (m == M)
      return ukernel_wide<M, RUNS>(a, b0, b1, tc, c, ldc, bias, stream, first, runs, run_stride);
    return ukernel_wide_dispatch<M - 1, RUNS>(m, a, b0, b1, tc, c, ldc, bias, stream, first, runs,
                                              run_stride);
  }
}

// Phase "pack": panel[tt][kk] = F[k0 + kk][c][r][s] for the tc reduction steps starting at (s, r, c)
// in window order t = (s, r, c); zero past K. Advances (s, r, c) by tc steps.
void pack_panel(const float* f, long T, int R, int S, int C, int k0, int kvalid, int tc, long& s,
                long& r, long& c, float* panel) {
  for (int tt = 0; tt < tc; ++tt) {
    const float* src = f + static_cast<long>(k0) * T + (c * R + r) * S + s;
    float* dst = panel + tt * KB;
    for (int kk = 0; kk < kvalid; ++kk) dst[kk] = src[kk * T];
    for (int kk = kvalid; kk < KB; ++kk) dst[kk] = 0.0f;
    if (++c == C) {
      c = 0;
      if (++r == R) r = 0, ++s;
    }
  }
}

// Never inlined: flattened into gemm_block_taps (AVX2 and narrower), its row pointers took the
// registers of the micro-kernel's loop there, which then reloaded one from the stack every step.
__attribute__((noinline)) void pack_taps(const float* f, long T, int R, int S, int k0, int kvalid,
                                         int c0, int cn, float* dst, bool rows_first = false);
void pack_taps_stream(const float* f, long T, int R, int S, int k0, int kvalid, int C, float* dst,
                      bool rows_first = false);
// Whether pack_taps_stream can write at dst: a row of KB floats is whole cache lines (not with
// SSE's 8), and dst starts one.
bool streams_rows(const float* dst) {
  return KB * sizeof(float) % 64 == 0 && reinterpret_cast<std::uintptr_t>(dst) % 64 == 0;
}

// The calling OpenMP thread's share [*b0, *b1) of n units: contiguous, in thread order, the first
// n % threads threads one more.
void thread_share(long n, long* b0, long* b1) {
  const long t = omp_get_thread_num(), threads = omp_get_num_threads();
  *b0 = t * (n / threads) + std::min(t, n % threads);
  *b1 = *b0 + n / threads + (t < n % threads);
}

// The whole filter packed once, for every channel block: packed[kb][t][KB] = F[kb*KB + kk][c][r][s]
// in window order t = (s, r, c), zero past K, each block through pack_taps (every tap of all C
// channels). Called by every thread of a parallel region: the threads split the channel blocks,
// and wait for each other at the end; every panel gemm_block needs is then a slice of it. Returns
// this thread's seconds, the wait included. (Through pack_panel's gather, a float at a time:
// conv11's whole filter, 2.4 MB, took 0.13 ms a thread; through pack_taps 0.06 ms.) Written with
// non-temporal stores where the rows are whole cache lines (pack_taps_stream; AVX2 and AVX-512),
// except on Intel (kIntel).
// On Zen 4 with the vCPUs apart, where each line written had been read by the other vCPU in the
// call before, conv11's median packing fell 0.60 -> 0.17 ms with the caches flushed before each
// call, 0.62 -> 0.10 in cache; the calls: conv11 1.06x at best and 1.09x at the median (flushed,
// 746 rounds apart), 1.13x in cache (400 rounds), conv10 1.03x and 1.02x, conv5 1.02-1.03x; AVX2
// code (--march x86-64-v3) conv11 1.12x at best and 1.11x at the median apart. With them
// together, level: conv11 1.00x (254 rounds flushed, 48 AVX2), conv10 1.00x, conv5 0.99x; the
// other layers level in both (kernel_ab, 300-1,000 rounds). (An earlier non-temporal packing,
// timed before kernel_ab told the placements apart, 20-30 rounds: conv5 1.02x, conv10 0.97x,
// conv11 1.00x; with the caches flushed before each call 0.95x, 0.99x, 0.97x.) The blocks split
// between the threads as they come (dynamic) instead of in halves: conv11 0.97x apart (the slower
// packing was both threads', not one waiting for the other). The destination rows prefetched for
// writing 2 or 4 channels ahead: within the noise (conv5, conv10, conv11 0.94-1.06x, both ways;
// 20-30 rounds).
// Packed instead a channel block at a time by the first thread to need it (a claim flag a block,
// no barrier; each thread starting its rows at another block), so that the first use finds the
// block in the packer's L2: level in cache (0.99-1.01x), with the caches flushed conv8 and conv10
// 1.01x, conv11 0.91x, its packing 0.19 -> 0.41 ms waiting on the other thread's blocks (Zen 4,
// 25-30 rounds).
// rows_first: each block's rows in the order of the input's rows (TapRows), direct_conv_nhwc's.
// (Where each thread convolves only the blocks it packed (splits_k), no barrier after them: conv11
// on the Xeon 0.995x at best and 0.99x at the median; kernel_ab, torch_cl between, 150 rounds.)
double pack_filter(const float* f, int K, int C, int R, int S, float* packed,
                   bool rows_first = false) {
  const double start = omp_get_wtime();
  const long T = static_cast<long>(R) * S * C, kblocks = cdiv(K, KB);
  // Non-temporal where every block's T * KB floats are whole lines, but not on Intel (kIntel): on
  // a Xeon (family 6 model 167, the two threads' cores sharing its last-level cache), kernel_ab,
  // 25-30 interleaved rounds with and without torch_cl between the calls, plain stores ran conv11
  // 1.07-1.11x, conv5 1.03-1.06x, conv10 1.01-1.02x, the others level (0.98-1.04x); the AVX2 code
  // conv11 1.08x, conv5 1.06x. With both Intel changes against neither, the threads apart (their
  // round trip 310 ns; torch_cl between, 30 rounds): conv11 1.10x, conv1-conv2 and conv4-conv6
  // 1.04-1.05x, the others 0.98-1.02x; in 150 rounds (round trip 330-370 ns; 30 rounds can be
  // 10% apart on conv11 between two copies of one source): conv11 1.13x, conv5 1.08x, conv6 1.07x,
  // conv10 1.06x, conv12 1.03x, conv1 1.00x.
  const bool stream = !kIntel && streams_rows(packed);
  long kb0, kb1;  // this thread's share, the one im2win_conv_fused then convolves where it splits K
  thread_share(kblocks, &kb0, &kb1);
  for (long kb = kb0; kb < kb1; ++kb) {
    const int k0 = static_cast<int>(kb * KB), kvalid = std::min(KB, K - k0);
    if (stream)
      pack_taps_stream(f, T, R, S, k0, kvalid, C, packed + kb * T * KB, rows_first);
    else
      pack_taps(f, T, R, S, k0, kvalid, 0, C, packed + kb * T * KB, rows_first);
  }
#pragma omp barrier
  return omp_get_wtime() - start;
}

typedef float V8 __attribute__((vector_size(32)));  // 8 lanes whatever the SIMD width
typedef int V8i __attribute__((vector_size(32)));
typedef float V8u __attribute__((vector_size(32), aligned(4)));

// An 8 x 8 transpose in registers (unpack, shuffle, swap halves: vunpck/vshufps/vperm2f128 on AVX):
// on return r[j][i] is the r[i][j] it was given.
inline void transpose8x8(V8 r[8]) {
  V8 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], (V8i){0, 8, 1, 9, 4, 12, 5, 13});
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], (V8i){2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      r[i + j] = __builtin_shuffle(t[i + j], t[i + j + 2], (V8i){0, 1, 8, 9, 4, 5, 12, 13});
      r[i + j + 2] = __builtin_shuffle(t[i + j], t[i + j + 2], (V8i){2, 3, 10, 11, 6, 7, 14, 15});
    }
  // r[0..3] now hold columns (0, 2, 1, 3) of rows 0-3 in their low and columns 4-7 in their high
  // halves, r[4..7] the same for rows 4-7
  const int order[4] = {0, 2, 1, 3};
  for (int j = 0; j < 4; ++j) {
    t[j] = __builtin_shuffle(r[order[j]], r[order[j] + 4], (V8i){0, 1, 2, 3, 8, 9, 10, 11});
    t[j + 4] = __builtin_shuffle(r[order[j]], r[order[j] + 4], (V8i){4, 5, 6, 7, 12, 13, 14, 15});
  }
  for (int j = 0; j < 8; ++j) r[j] = t[j];
}

// Where run position u = (c * R + r) * S + s of an output channel's filter run (its taps of cn
// input channels, in PyTorch's order) goes in a panel of every tap of those channels, in the
// window's order: row (s * R + r) * cn + c of KB floats; rows_first: in the order of the input's
// rows (direct_conv_nhwc), row (r * S + s) * cn + c. next(): that row for u, then u + 1.
struct TapRows {
  float* dst;
  int R, S;
  long cn;
  bool rows_first = false;
  long c = 0;
  int r = 0, s = 0;
  void restart() { c = 0, r = 0, s = 0; }
  float* next() {
    float* d = dst + ((rows_first ? r * S + s : s * R + r) * cn + c) * KB;
    if (++s == S) {
      s = 0;
      if (++r == R) r = 0, ++c;
    }
    return d;
  }
};

// Output channels g .. g + 7 (zero from kvalid on) of 8 runs T floats apart, at run positions
// u .. u + 7, transposed: v[i] holds position u + i's 8 channels. Each run prefetched 4 cache
// lines ahead, a line at a time.
inline void load_runs8(const float* src, long T, long u, int g, int kvalid, V8 v[8]) {
  const int gv = std::clamp(kvalid - g, 0, 8);
  if (u % 16 == 0)
    for (int i = 0; i < gv; ++i) __builtin_prefetch(src + (g + i) * T + u + 64, 0, 3);
  for (int i = 0; i < 8; ++i)
    v[i] = i < gv ? *reinterpret_cast<const V8u*>(src + (g + i) * T + u) : (V8){};
  transpose8x8(v);
}

// The run positions past the last multiple of 8 (of n), a float at a time, into rows' next rows.
inline void pack_run_tail(const float* src, long T, long n, int kvalid, TapRows& rows) {
  for (long u = n / 8 * 8; u < n; ++u) {
    float* d = rows.next();
    for (int kk = 0; kk < KB; ++kk) d[kk] = kk < kvalid ? src[kk * T + u] : 0.0f;
  }
}

// Phase "pack" from the filter's own order: every tap of input channels [c0, c0 + cn) of output
// channels [k0, k0 + kvalid), in the window's order: dst[(j * cn + c - c0) * KB + kk] =
// F[k0 + kk][c][r][s] for tap j = s * R + r, zero for kk >= kvalid. Each output channel's
// F[k][c0 .. c0 + cn) is one run of cn * R * S floats in PyTorch's layout; 8 output channels at a
// time, their runs are read 8 floats at a time and transposed in registers into 8 vectors of 8
// output channels, each stored where its tap and channel go. Each run is prefetched 4 cache lines
// ahead. (pack_panel's gather of TC consecutive window steps, a float at a time at the stride of
// R * S floats, cost 0.7 ns a float with the filter in cache and 2 ns without. Against this order
// without the prefetch, Zen 5, 40 calls: conv6's packing 0.139 -> 0.091 ms with long runs read
// in another order, every KB output channels at each 8 positions so that each row of KB floats was
// written whole; conv5 0.150 -> 0.108, conv11 0.059 -> 0.049. On Zen 4 (32 KB L1d) that order's
// 32 runs at once, T floats apart (conv6 and conv11: 9216 bytes, a quarter of the L1 sets), took
// longer than this order with its prefetch: packing conv6 0.30-0.38 -> 0.18-0.25 ms, conv5
// 0.21-0.29 -> 0.14-0.19 ms, conv11 0.16-0.21 -> 0.14-0.18 ms; the calls conv6 1.02x, 1.04x,
// 1.04x, conv5 1.00x, 1.03x, 1.02x, conv11 1.02x, 1.01x, 1.02x, the others level (kernel_ab, 25-30
// rounds in cache, 20-30 with the caches flushed). Not retimed on Zen 5.)
// (Runs prefetched 8 or 16 lines ahead instead of 4: level on Zen 4, conv5, conv6 and conv11
// 0.99-1.02x in cache and with the caches flushed, 25 rounds each. Specialised for 9 and 25 taps,
// so that every vector's place is fixed and the stores need no counters: 1.3-1.4x faster alone
// with the filter in L2, but level in the calls, conv12 1.01x, conv6 1.00x, conv5 and conv11
// 1.00x in cache (Zen 4, 30 rounds): not kept.)
// 16 output channels a pass (at most KB), not 8: each 64-byte line of a panel row is written whole
// while it is in L1, against two passes over the whole panel, each writing half of every line,
// its lines fetched again from L2 or L3 for the second. On the Xeon (family 6 model 167, 48 KB
// L1d; kernel_ab, torch_cl between, 100 rounds; the packing the slowest thread's, best of the
// rounds): conv12 1.05x at best and 1.06x at the median, its packing 0.33 -> 0.28 ms; conv6
// 1.02x and 1.01x, 0.18 -> 0.14 ms; conv11 1.01x and 1.02x, 0.10 -> 0.07 ms; conv5 1.01x, the
// others 0.99-1.00x. Again with pack_taps never inlined, 60 rounds: conv12 1.02x and 1.08x, conv6
// 1.02x and 1.02x, conv11 1.02x and 1.04x, conv5 1.01x and 1.00x. The AVX2 code (--march x86-64-v3,
// 60 rounds; 16 channels, its whole row): conv12 1.03x and 1.04x, conv6 1.01x and 1.01x, conv5 and
// conv11 0.99-1.00x; packing conv6 0.14 -> 0.10 ms, conv12 0.29 -> 0.23. All 32 channels a pass
// (the whole 128-byte row, as pack_taps_stream): conv11 1.01-1.04x, its packing 0.07-0.08 ms, but
// conv5 0.98-0.99x, its packing 0.12 -> 0.17-0.19 ms; 32 runs read at once. First Intel's only;
// on Zen 4 (family 25 model 17, 32 KB L1d; kernel_ab, torch run between the calls), against 8 a
// pass: conv12 1.03x at best and at the median, its packing 0.34 -> 0.26 ms, conv6 1.01x and
// 1.01x, 0.17 -> 0.13 ms (400 rounds, the vCPUs together); with the caches flushed before each
// call conv12 1.02x and 1.02x, conv6 1.01x and 1.01x (200 rounds); the AVX2 code conv12 1.02x and
// 1.02x, conv6 1.01x and 1.02x (200 rounds, mostly apart); conv5 and conv11 level (150 rounds).
// All 32 there: conv12 1.00x and 0.99x, conv6 1.01x and 1.01x (150 rounds).
void pack_taps(const float* f, long T, int R, int S, int k0, int kvalid, int c0, int cn,
               float* dst, bool rows_first) {
  const long n = static_cast<long>(cn) * R * S;  // floats of one output channel's run
  const float* src = f + static_cast<long>(k0) * T + static_cast<long>(c0) * R * S;
  TapRows rows{dst, R, S, cn, rows_first};
  const int line = std::min(KB, 16);  // output channels a pass: see above
  for (int g0 = 0; g0 < KB; g0 += line) {
    rows.restart();
    for (long u = 0; u < n / 8 * 8; u += 8) {  // at run positions u .. u + 7
      float* d[8];
      for (int i = 0; i < 8; ++i) d[i] = rows.next();
      for (int g = g0; g < g0 + line; g += 8) {  // output channels g .. g + 7
        V8 v[8];
        load_runs8(src, T, u, g, kvalid, v);
        for (int i = 0; i < 8; ++i) *reinterpret_cast<V8u*>(d[i] + g) = v[i];
      }
    }
  }
  pack_run_tail(src, T, n, kvalid, rows);
}

// pack_taps over all C input channels, each row of KB output channels written whole with
// non-temporal stores (streams_rows(dst) must hold): no read for ownership of the destination's
// lines, which on a VM whose vCPUs sit on two core complexes fetches each line back from the
// cache of the other, that read the filter in the call before. At every 8 run positions, all KB
// output channels' runs are transposed 8 at a time into a staging tile in L1, whose 8 rows then
// go out whole. Fenced at the end, so that the stores are visible to every thread after the
// barrier that follows.
void pack_taps_stream(const float* f, long T, int R, int S, int k0, int kvalid, int C,
                      float* dst, bool rows_first) {
  const float* src = f + static_cast<long>(k0) * T;
  TapRows rows{dst, R, S, C, rows_first};
  alignas(64) float stage[8][KB];
  for (long u = 0; u < T / 8 * 8; u += 8) {
    for (int g = 0; g < KB; g += 8) {  // output channels g .. g + 7 at positions u .. u + 7
      V8 v[8];
      load_runs8(src, T, u, g, kvalid, v);
      for (int i = 0; i < 8; ++i) *reinterpret_cast<V8*>(&stage[i][g]) = v[i];
    }
    for (int i = 0; i < 8; ++i) {
      float* d = rows.next();
      for (int kk = 0; kk < KB; kk += VL)
        store_stream(d + kk, *reinterpret_cast<const V*>(&stage[i][kk]));
    }
  }
  pack_run_tail(src, T, T, kvalid, rows);
  stream_fence();
}

// Pixels in the next micro-tile when `left` remain: MR, except that a last MR + 1 .. MR + MR/2
// pixels make two tiles of about equal size (4 + 3, 4 + 4, 5 + 4 on AVX2), not a full one and one of
// 1 .. MR/2 rows, whose few accumulator chains would wait on the FMA latency.
int tile_rows(long left) {
  if (left <= MR) return static_cast<int>(left);
  return left - MR <= MR / 2 ? static_cast<int>((left + 1) / 2) : MR;
}

// One channel block of the GEMM over `rows` pixels whose windows start at arow[0..rows): per step
// of the reduction, the filter panel is either a slice of TC_PACKED steps of the pre-packed filter
// (`packed`: this block's [T][KB]) or TC steps packed here into `panel` (L1; its time added to
// pack_seconds), then the MR x KB micro-kernel runs over the pixels. out points at the first
// pixel's output row (row stride K). Where the window is in blocks of channels, gemm_block_taps
// instead. (Slower or level on the deep layers, measured interleaved: each reduction step over a
// group of 2-4 channel blocks, so that the pixels' rows are read once a group (0.90-0.94x); the
// panel gathered with AVX2 vgatherdps; the next panel's filter lines prefetched during this one.
// pack_panel costs about 0.6 ns a float even from L2: the gather's instructions, not memory.)
// stream: the output tiles go to memory with non-temporal stores (see im2win_streams_output).
// blocks: channel blocks from k0 on, each tile of pixels through all of them before the next tile
// (packed only; see item_blocks).
// run_stride (direct_conv_nhwc; packed only): each pixel's window is R runs of S * C floats,
// run_stride floats apart (its input rows, read in place), in the order of the packed filter's rows
// (pack_filter's rows_first); each tile goes through every run before the next tile, its
// accumulators through its output rows between runs. 0: one run of T floats (im2win's window).
void gemm_block(const float* const* arow, long rows, const float* f, const float* packed, long T,
                int R, int S, int C, int K, int k0, int kvalid, const float* bias, float* out,
                float* panel, double& pack_seconds, bool stream = false, int blocks = 1,
                long run_stride = 0) {
  long s = 0, r = 0, c = 0;  // (s, r, c) of reduction step t0, advanced incrementally
  const float* a[MR];
  const int runs = run_stride ? R : 1;
  const long run_len = T / runs, step = packed ? TC_PACKED : TC;
  for (long t0 = 0; t0 < run_len; t0 += step) {
    const int tc = static_cast<int>(std::min(step, run_len - t0));
    const float* b = packed ? packed + t0 * KB : panel;
    if (!packed) {
      const double t_pack = omp_get_wtime();
      pack_panel(f, T, R, S, C, k0, kvalid, tc, s, r, c, panel);
      pack_seconds += omp_get_wtime() - t_pack;
    }
    // the runs inside each micro-kernel call where a run is one slice (its accumulators then stay
    // in registers from run to run), else a call a run; not with SSE's 16 registers, where that
    // loop spills (im2win.cpu.isa)
    constexpr bool kRunsInside = VL >= 8;
    const bool inside = kRunsInside && runs > 1 && run_len <= step;
    for (long m = 0; m < rows;) {
      const int mr = tile_rows(rows - m);
      for (int run = 0; run < (inside ? 1 : runs); ++run) {
        const bool first = t0 == 0 && run == 0, last = inside || run == runs - 1;
        const float* br = b + run * run_len * KB;  // this run's filter rows
        for (int i = 0; i < mr; ++i) a[i] = arow[m + i] + run * run_stride + t0;
        const bool streams = stream && last;  // earlier runs' tiles are read back
        int j = 0;  // pairs of whole panels first, where ukernel_wide runs
        if (VL == 16)
          for (; j + 1 < blocks && k0 + (j + 2) * KB <= K; j += 2) {
            const int kj = k0 + j * KB;
            for (int i = 0; i < mr; i += MR / 2) {
              // Written with plain stores (on Intel, an output within a quarter of the last-level
              // cache; see im2win_streams_output), the output lines of the tile two on are
              // prefetched for writing: conv7 at batch 4 on the Xeon 1.05x at best and 1.03x at the
              // median against none, conv3 1.00x and 1.01x (kernel_ab, torch_cl between, 150
              // rounds).
              if (!stream && last)
                for (int p = 0; p < MR / 2; ++p)
#pragma GCC unroll 4
                  for (int v = 0; v < 2 * KB; v += 64 / sizeof(float))
                    __builtin_prefetch(out + (m + i + MR + p) * K + kj + v, 1, 3);
              const int mi = std::min(MR / 2, mr - i);
              const float *b0 = br + j * T * KB, *b1 = b0 + T * KB;
              const float* bj = bias ? bias + kj : nullptr;
              if (inside)
                ukernel_wide_dispatch<MR / 2, kRunsInside>(mi, a + i, b0, b1, tc, out + (m + i) * K + kj,
                                                    K, bj, streams, first, runs, run_stride);
              else
                ukernel_wide_dispatch<MR / 2>(mi, a + i, b0, b1, tc, out + (m + i) * K + kj, K, bj,
                                              streams, first);
            }
          }
        for (; j < blocks; ++j) {
          const int kj = k0 + j * KB, kv = j ? std::min(KB, K - kj) : kvalid;
          const float *bj = br + j * T * KB, *bias_j = bias ? bias + kj : nullptr;
          if (inside)
            ukernel_dispatch<MR, kRunsInside>(mr, a, bj, tc, out + m * K + kj, K, kv, first, bias_j,
                                       streams, runs, run_stride);
          else
            ukernel_dispatch<MR>(mr, a, bj, tc, out + m * K + kj, K, kv, first, bias_j, streams);
        }
      }
      m += mr;
    }
  }
  if (stream) stream_fence();  // the streamed stores are ordered before whatever follows
}

// gemm_block over windows in blocks of cb < C input channels (im2win_window_block; arow: the
// windows in the first block, each next block `plane` floats on): one panel a block, every tap of
// its cb channels, packed from the filter's own order (pack_taps: 3x faster than pack_panel's
// gather) and run as one reduction of S*R*cb steps, since each block's window is contiguous too.
// Against the unblocked window with pack_panel, conv6, conv11 and conv12 at batch 4 ran 1.13x,
// 1.09x, 1.23x (30 interleaved rounds; 1.06x, 1.01x, 1.14x in a 15-round run): their filter
// packing fell from 11%, 8% and 38% of the call. (The same panels over the unblocked window, as
// one micro-kernel call a tap's channels, ran 5-15% slower on those layers; as one call a panel
// jumping between taps, 0.65-0.95x: short runs the hardware prefetchers do not follow.)
// conv12's packing is its filter read (9.4 MB a call, 30% of the call in a Zen 4 `repro run`), and
// on Zen 4 it did not hide behind the compute: the next block's filter lines prefetched a share
// per micro-tile took packing from 1.04 to 0.92 ms with the caches flushed, and the call stayed
// level (1.005x; into L2 0.96x); the same lines prefetched while this block is packed, level
// (kernel_ab, 20-30 rounds; as on Zen 5, where the first ran 0.95x). Retimed on Zen 4 one and two
// blocks ahead, and each run prefetched a whole block ahead: 0.96-1.01x with the vCPUs together,
// and with them apart the median packing of 100 s of calls stayed 1.04-1.18 ms (0.38-0.52 ms
// together): on that VM the placement, not the prefetch distance, sets the packing's time.
// Nor the reads' latency or which cache holds the filter, retimed there (kernel_ab, conv12): the
// next 4 or 8 blocks' filter prefetched at each group's start, so in runs of 2.3-4.6 KB that the
// hardware prefetchers follow, left the median packing apart at 0.90 ms against 0.89 (10,625
// rounds apart; together level, 0.37 ms); each thread bound to its vCPU (OMP_PROC_BIND=true) and
// packing the same half of the blocks every call (a static schedule), so its half stays in its
// own caches: 0.97 ms against 0.99 (8,088 rounds apart; together 0.46 ms both).
// Where the time goes: each block packed twice and only the second timed, which finds the
// block's filter in L1 and L2, read a median 0.30 ms apart and 0.18 ms together (10,429 and 4,571
// rounds), against 0.87 and 0.30 ms for the one pack: apart, the copy itself is 1.7x slower and
// the filter's reads from beyond L2 add 0.57 ms against 0.12, 5x (those reads are what the
// prefetches above did not shorten). torch's conv12 ran faster apart in the same runs (182-188
// GFLOP/s against 141-151 together, repro run im2win-cpu, 2026-12-02/03).
// Nor did plain loads: every 8 or 16 blocks, the group's runs read in order (4.6-9.2 KB each,
// as the widened panels read them) before packing: median packing apart 0.98-1.00 ms against
// 0.88, together 0.45 against 0.33; the calls 0.96-0.97x (8,256 and 3,744 rounds).
// Nor sweeping the window less: each work item 2 or 4 channel blocks, the input channel block
// outer, so each item reads the window once, not once a block: median packing apart 0.93 -> 0.78-
// 0.80 ms, but the median call apart 0.95-0.97x (1,946 rounds); together 1.00-1.01x (1,054).
// Nor each thread convolving the pixels whose window it built (the pixels split in halves, a
// static schedule), so no window line crosses between the vCPUs: each then packs the whole
// filter, 0.92x together, and apart 0.97x at best and 0.79x at the median (kernel_ab, conv12,
// 1,500 rounds; conv6 0.96x and 0.99x). Both on Zen 4, 2026-12-03.
// Flattened below AVX-512 (IM2WIN_FLATTEN): its own inlined copy of the micro-kernel. Calling
// gemm_block's made GCC 12 keep that one out of line, and its calls (register saves, the tile
// through the stack) cost 5-13% on the layers of short reductions with AVX2 (conv3, conv7, conv9,
// conv10; 20 interleaved rounds).
// Over input channels [c_first, c_first + C): the window's blocks from arow's on (im2win_conv_nhwc
// passes all of them, im2win_conv_planes one block); the output tiles start from the bias at
// channel 0 and are added to after it.
IM2WIN_FLATTEN void gemm_block_taps(const float* const* arow, long rows, const float* f, long T,
                                    int R, int S, int c_first, int C, int K, int k0, int kvalid,
                                    const float* bias, float* out, float* panel,
                                    double& pack_seconds, int cb, long plane) {
  const float* a[MR];
  for (int c0 = c_first; c0 < c_first + C; c0 += cb) {
    const double t_pack = omp_get_wtime();
    pack_taps(f, T, R, S, k0, kvalid, c0, cb, panel);
    pack_seconds += omp_get_wtime() - t_pack;
    for (long m = 0; m < rows;) {
      const int mr = tile_rows(rows - m);
      for (int i = 0; i < mr; ++i) a[i] = arow[m + i] + (c0 - c_first) / cb * plane;
      ukernel_dispatch<MR>(mr, a, panel, R * S * cb, out + m * K + k0, K, kvalid, c0 == 0,
                           bias ? bias + k0 : nullptr);
      m += mr;
    }
  }
}

// d[w * ld + c] = src[c * sc + w] for c < C, w < cols: 8 channels x 8 columns at a time through
// an 8 x 8 register transpose (transpose8x8); the last columns as the last 8 again (overlapping
// the tile before, the same values), the last channels and rows narrower than 8 one by one.
// (The last columns one by one: conv4's bands 3.55 ms, with the overlapping tile 3.32 ms;
// kernel_ab on Zen 5, 30 rounds. AVX-512 16 x 16 tiles, 64 unpacks and 128-bit lane shuffles
// each, took 1.0-2.2x as long as these in L1 on Zen 5: conv9's rows 379 against 203 ns. Two
// 8 x 8 tiles of 16 channels, each column's 16 floats one whole-line store: conv9 0.997x, conv10
// 0.992x, conv4 1.004x on Zen 4, torch_cl run between the calls, 100 rounds. So on the Xeon,
// family 6 model 167, as pack_taps writes its rows there: bands conv9 0.14 -> 0.16 ms, conv8 0.62
// -> 0.65, the calls 0.996-1.003x on conv4, conv5 and conv8-conv11; 60 rounds.) pf (0: none):
// prefetch the same columns pf floats on (see build_bands).
void transpose_rows(const float* src, long sc, int C, long cols, float* d, long ld, long pf) {
  const int c8 = C / 8 * 8;
  const long w8 = cols / 8 * 8;
  for (int c0 = 0; c0 < c8; c0 += 8) {
    const float* s0 = src + c0 * sc;
    auto tile = [&](long w0) {  // columns w0 .. w0 + 7 of the 8 channels
      V8 r[8];
      for (int i = 0; i < 8; ++i) r[i] = *reinterpret_cast<const V8u*>(s0 + i * sc + w0);
      transpose8x8(r);  // r[j]: column w0 + j of the 8 channels
      for (int j = 0; j < 8; ++j) *reinterpret_cast<V8u*>(d + (w0 + j) * ld + c0) = r[j];
    };
    for (long w0 = 0; w0 < w8; w0 += 8) {
      if (pf && w0 % 16 == 0)  // a cache line of each of the 8 channels
        for (int i = 0; i < 8; ++i) __builtin_prefetch(s0 + i * sc + w0 + pf, 0, 3);
      tile(w0);
    }
    if (w8 < cols && cols >= 8) {  // the last 8 columns again, overlapping the last full tile
      tile(cols - 8);
    } else {
      for (int c = c0; c < c0 + 8; ++c)
        for (long w = w8; w < cols; ++w) d[w * ld + c] = src[c * sc + w];
    }
  }
  for (int c = c8; c < C; ++c)
    for (long w = 0; w < cols; ++w) d[w * ld + c] = src[c * sc + w];
}

// transpose_rows with non-temporal stores: 16 channels x 8 columns at a time, each column's 16
// channels one whole cache line, written without reading it in first. C a multiple of 16, cols at
// least 8, d and ld aligned to a line (16 floats); with AVX2 and AVX-512 only (streams_window).
void transpose_rows_stream(const float* src, long sc, int C, long cols, float* d, long ld,
                           long pf) {
  const long w8 = cols / 8 * 8;
  for (int c0 = 0; c0 < C; c0 += 16) {
    const float* s0 = src + c0 * sc;
    auto tile = [&](long w0) {  // columns w0 .. w0 + 7 of the 16 channels
      V8 lo[8], hi[8];
      for (int i = 0; i < 8; ++i) {
        lo[i] = *reinterpret_cast<const V8u*>(s0 + i * sc + w0);
        hi[i] = *reinterpret_cast<const V8u*>(s0 + (i + 8) * sc + w0);
      }
      transpose8x8(lo);
      transpose8x8(hi);
      for (int j = 0; j < 8; ++j) {
        float* line = d + (w0 + j) * ld + c0;
#if defined(__AVX__)  // two halves of one line, one after the other: one write of the line
        _mm256_stream_ps(line, lo[j]);
        _mm256_stream_ps(line + 8, hi[j]);
#else  // SSE: plain stores (streams_window takes this path only with AVX and wider)
        std::memcpy(line, &lo[j], sizeof(V8));
        std::memcpy(line + 8, &hi[j], sizeof(V8));
#endif
      }
    };
    for (long w0 = 0; w0 < w8; w0 += 8) {
      if (pf && w0 % 16 == 0)
        for (int i = 0; i < 16; ++i) __builtin_prefetch(s0 + i * sc + w0 + pf, 0, 3);
      tile(w0);
    }
    if (w8 < cols) tile(cols - 8);  // the last 8 columns again, overlapping the last full tile
  }
}

// d[w * ld + c] = src[c * sc + w * sw] for c < C, w < cols, a column at a time; CC > 0: C == CC
// known at compile time (grey, RGB, RGBA inputs), so the copy of a column is unrolled. pf (0:
// none): prefetch the same columns pf floats on (see build_bands).
template <int CC>
void copy_columns(const float* src, long sc, long sw, long cols, float* d, long ld, int C, long pf) {
  for (long w = 0; w < cols; ++w) {
    const float* s_w = src + w * sw;
    float* d_w = d + w * ld;
    if (pf && w % 16 == 0)
      for (int c = 0; c < C; ++c) __builtin_prefetch(s_w + c * sc + pf, 0, 3);
    if constexpr (CC > 0) {
      for (int c = 0; c < CC; ++c) d_w[c] = s_w[c * sc];
    } else {
      for (int c = 0; c < C; ++c) d_w[c] = s_w[c * sc];
    }
  }
}

// Window rows (n, p) of the NHWC-window layout, built into dst = [rows][Wu][R][C] for rows
// [row0, row0 + rows) of the flattened N*P output rows (rows ld_row floats apart: a block of C
// channels of a wider row). Same values as im2win_transform_nhwc.
// before (nullable): where the window row of output row row0 - 1 already is (anywhere, dst
// itself included), so that row0's first R - sy window rows are copied from it.
// (Tried instead, for a block of output rows of one image: "column bands" [Wu][HB][C], each window
// column's HB = (rows - 1) * sy + R input rows once, not R rows an output row, so that each
// window is S runs of R * C floats, HB * C apart, the micro-kernel stepping from run to run with
// its accumulators in registers. The bands' writes fell by up to two thirds (conv9 0.41 -> 0.31
// ms, conv8 1.49 -> 1.29), but the calls ran level: conv8 1.001x, conv9 1.006x (1.028x in a
// shorter run), conv11 0.996x (0.955x), conv4 0.990x (one row a block: no rows shared); with a
// micro-kernel call a run, 0.94-0.97x. Zen 4, torch_cl run between the calls, 30-60 rounds.
// Retimed on the Xeon (family 6 model 167) through gemm_block's runs (a micro-kernel call a run,
// the tile through its output rows between runs; where sy < R, R * C >= 64 and the filter is packed
// once; an image's rows a segment), kernel_ab, torch_cl between, 40 rounds: bands conv8 0.68 ->
// 0.48 ms, conv5 0.12 -> 0.06, conv9 0.16 -> 0.14, but the calls conv5 1.02x at best, conv8-conv10
// 1.00x, conv4 0.99x, conv11 0.97x. What is left of the bands is reading the input in: its
// transposes, not the rows copied again. With the runs inside one micro-kernel call, as
// direct_conv_nhwc's (RUNS), and on every layer where sy < R: conv5 1.02x at best, conv8 1.01x,
// conv9 1.01x, conv10 1.01x, conv4 and conv11 level (40 rounds); conv1 1.00x, conv2 1.01x, conv3
// 1.01x, conv7 1.02x at best and 1.04x at the median (60 rounds). Not built in: about 1% for a
// second band layout.)
void build_bands(const float* x, long sn, long sc, long sh, long sw, int C, int H, int W, int R,
                 int sy, int py, int px, int P, long Wu, long row0, long rows, float* dst,
                 const float* before = nullptr, long ld_row = 0, bool stream = false) {
  const long RC = static_cast<long>(R) * C;
  if (ld_row == 0) ld_row = Wu * RC;  // rows one after the other, else blocks of a wider row
  // Columns w of the window that fall inside the input: w - px in [0, W).
  const long w_lo = std::min<long>(Wu, px), w_hi = std::max(w_lo, std::min<long>(Wu, W + px));
  for (long row = row0; row < row0 + rows; ++row) {
    const long n = row / P, p = row % P;
    float* band = dst + (row - row0) * ld_row;
    // Rows of the window the previous output row of this image already holds (the im2win overlap
    // between rows: window row r of output row p + 1 is row r + sy of output row p): one
    // contiguous copy of (R - sy) * C floats per column instead of building them again.
    // Row row0 copies from `before`, which may be its own place: memmove. Where a column's copy is
    // short (the RGB layers: 6-21 floats), one copy of the whole row shifted by sy * C floats
    // instead: it puts the same floats in place, and what it also writes into a column's last sy
    // rows (the next column's first ones) is written again below. conv7's bands fell from 0.30 to
    // 0.16 ms (1.05x the whole call), conv3's from 0.21 to 0.16 ms on Zen 5; with every layer
    // copying so, conv4's and conv8's bands got slower (long columns: a third more to copy).
    // (The next row's band lines, or this row's, prefetched for writing at the row's start: conv9
    // and conv10 1.00x with torch_cl run between the calls, kernel_ab --between, 300 rounds.)
    // (What this copy costs at most: skipped altogether, the results then wrong, on the Xeon
    // (family 6 model 167; kernel_ab, torch_cl between, 60 rounds) conv9's bands took 0.10 ms
    // against 0.17 and the call ran 1.03x, conv10 1.02x, conv8 1.01x, conv4 1.03x: the bound on
    // a band kept in place instead, its R rows in rotation and the filter packed once for each
    // rotation, which would also cut work items to one output row. Not built.)
    int r_first = 0;
    const float* prev = row > row0 ? band - ld_row : before;
    if (prev && p > 0 && sy < R && !stream) {
      r_first = R - sy;
      if (r_first * C < 32)
        std::memmove(band, prev + sy * C, sizeof(float) * (Wu * RC - sy * C));
      else if (r_first * C % VL == 0 && r_first * C <= 4 * VL)
        // Short columns (the late layers' blocks of 16 channels: 32 floats): a vector copy inline,
        // forward, so safe where `before` is this place, not a call a column. conv6's bands 0.07
        // -> 0.05 ms, conv11's 0.06 -> 0.05 ms (1.02x, 1.01x the call; 30 rounds). Up to 32
        // vectors (conv4, conv8-conv11's 128-512 floats) instead of memmove: their bands level,
        // the calls 0.98-1.02x (Zen 4, torch_cl run between the calls, 150 rounds).
        for (long w = 0; w < Wu; ++w) {
          const float* from = prev + w * RC + sy * C;
          float* to = band + w * RC;
          for (int i = 0; i < r_first * C; i += VL) storeu(to + i, loadu(from + i));
        }
      else
        for (long w = 0; w < Wu; ++w)
          std::memmove(band + w * RC, prev + w * RC + sy * C, sizeof(float) * r_first * C);
    }
    for (int r = r_first; r < R; ++r) {
      const long h = p * sy + r - py;
      // zero padding: rows above/below (every column), columns left/right (only those; a test
      // of every column for every row cost conv7 about a quarter of its bands)
      if (h < 0 || h >= H) {
        for (long w = 0; w < Wu; ++w) std::memset(band + w * RC + r * C, 0, sizeof(float) * C);
        continue;
      }
      for (long w = 0; w < w_lo; ++w) std::memset(band + w * RC + r * C, 0, sizeof(float) * C);
      for (long w = w_hi; w < Wu; ++w) std::memset(band + w * RC + r * C, 0, sizeof(float) * C);
      const float* src = x + n * sn + h * sh + (w_lo - px) * sw;
      // The next output row's new input row (h + sy) is prefetched while this one is copied. With
      // the input in memory, not cache (batch 32; at batch 128 always), the bands took 12-35% less
      // time on every layer timed, and the whole call ran conv1 1.03x twice, conv2 1.07x and
      // 1.02x, conv3 1.01x and 1.03x, conv8 1.03x, conv9 1.01x and 1.02x, conv4, conv5, conv10
      // and conv11 1.00-1.01x, conv7 0.99x (Zen 5, kernel_ab --batch 32, 8 rounds, three runs);
      // at batch 4, in cache, level (30 rounds). (Two rows on: level at batch 4.)
      // (All the input rows of a block prefetched at once before its bands, with the caches
      // flushed: bands level on Zen 4, conv9 0.30 -> 0.27-0.32 ms, the calls 0.99-1.01x. The next
      // row block's input rows instead prefetched a share after each micro-kernel tile of the
      // block before (the next block of the same grab, else the first not yet taken): with the
      // caches flushed, bands 5.99 -> 5.05 ms on conv4, 1.25 -> 0.91 on conv8, 0.31 -> 0.26 on
      // conv9, but the calls 0.97-1.00x (Zen 4, 30 rounds); with torch_cl run between the calls
      // 0.985-1.016x (50 rounds): what the bands saved, the tiles lost. Retimed on a Xeon, family 6
      // model 167, the lines prefetched into L2, torch run between the calls, 100 rounds: conv1's
      // and conv2's bands stayed at 0.18 ms, the calls 0.99-1.00x at best and at the median,
      // conv9 1.00x and 0.98x, conv7 0.95x and 0.98x; their input is not what slows them.)
      const long pf = h + sy < H ? sy * sh : 0;
      float* d = band + w_lo * RC + r * C;
      if (sc == 1) {  // channels_last input: each window column is one contiguous copy
        for (long w = 0; w < w_hi - w_lo; ++w) std::memcpy(d + w * RC, src + w * sw, sizeof(float) * C);
      } else if (C < 16) {  // few channels: a column at a time, its C values one contiguous write
        // (a channel at a time wrote every RC-th float: 1.3-1.6x slower on conv1-conv3, conv7;
        // all the new rows of an output row at once, 8 columns of them transposed in registers
        // and each column's 6-12 floats one masked AVX-512 store: conv1-conv3's bands level on
        // Zen 4, 0.22-0.29 ms; the rows copied from the band before, 7 of conv1's 11, were not
        // timed on their own. Retimed on the Xeon, family 6 model 167, kernel_ab, torch_cl
        // between, 60 rounds: every new row of a column at once, 4 columns at a time through 4 x 4
        // SSE transposes and 4-float stores, conv1's bands 0.17 -> 0.18 ms, the calls of conv1-conv3
        // and conv7 0.98-1.01x; a column's new rows in one scalar pass, 0.98-1.00x. Skipping the
        // copy from the band before altogether took conv1's bands only to 0.14 ms: what is left
        // is not the instructions.)
        switch (C) {
          case 1: copy_columns<1>(src, sc, sw, w_hi - w_lo, d, RC, C, pf); break;
          case 3: copy_columns<3>(src, sc, sw, w_hi - w_lo, d, RC, C, pf); break;
          case 4: copy_columns<4>(src, sc, sw, w_hi - w_lo, d, RC, C, pf); break;
          default: copy_columns<0>(src, sc, sw, w_hi - w_lo, d, RC, C, pf);
        }
      } else if (sw == 1 && w_hi - w_lo >= 8) {  // NCHW rows: 8 x 8 tiles transposed in
        // registers, reading along rows; a gather down the channels of a large image hits one L1
        // set at every channel (channel stride a multiple of 4 KiB: conv4's 224 x 224 planes)
        if (stream)
          transpose_rows_stream(src, sc, C, w_hi - w_lo, d, RC, pf);
        else
          transpose_rows(src, sc, C, w_hi - w_lo, d, RC, pf);
      } else {  // many channels: gather the C values of one column (a contiguous write)
        // (conv12's 7-column rows; the next row's input prefetched here too: its transform 0.15
        // -> 0.14 ms with the caches flushed, 0.18 -> 0.11 ms in cache, but the calls 0.96x and
        // 1.02x on Zen 4, 30 rounds each: not kept)
        for (long w = 0; w < w_hi - w_lo; ++w) {
          const float* s_w = src + w * sw;
          float* d_w = d + w * RC;
#pragma omp simd
          for (int c = 0; c < C; ++c) d_w[c] = s_w[c * sc];
        }
      }
    }
  }
}

// The per-core L2 cache in bytes (sysconf; 1 MiB if the system does not say).
long l2_bytes() { return cache_bytes(_SC_LEVEL2_CACHE_SIZE, 1l << 20); }

// Half the per-core L2 cache in floats: what a thread's window band may take, so that it stays in
// L2 while every channel block sweeps it again. (One row of conv4's bands is 400 KB at batch 4;
// streaming such rows in blocks of output columns whose band fits, 206 KB, ran level with whole
// rows, 1.00x interleaved, its bands taking 17% longer.)
long band_cap_floats() { return l2_bytes() / 2 / static_cast<long>(sizeof(float)); }

// A block of input channels: the largest multiple of 8, at most `most` and below C, that divides
// C; 0 where none does.
int channel_block(long most, int C) {
  for (long cb = most / 8 * 8; cb >= 8; cb -= 8)
    if (C % cb == 0 && cb < C) return static_cast<int>(cb);
  return 0;
}

// The micro-kernel's main loop with some of its operands in registers (im2win_ukernel_part_gflops):
// the MR x NR accumulators and their multiply-adds of ukernel_full, in the same loop (two steps a
// pass on Intel), the window value a vector register instead of a broadcast from a row; Part 0:
// the B vectors registers too, Part 1: loaded from the panel every step, as ukernel_full does.
// The empty asm statements change nothing but make the registers opaque at every step, so that
// GCC computes no product once for all steps or all rows.
template <int Part>
void ukernel_part(const float* b, int tc, float* c) {
  V acc[MR][NR], breg[NR], av = V{} + 1e-3f;
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = loadu(c + (i * NR + j) * VL);
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) breg[j] = loadu(b + j * VL);
  const float* bp = b + static_cast<long>(tc) * KB;
  auto step = [&](long t) __attribute__((always_inline)) {
    V bv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      if constexpr (Part == 0) {
        __asm__("" : IM2WIN_VREG(breg[j]));
        bv[j] = breg[j];
      } else {
        bv[j] = loadu(bp + t * KB + j * VL);
      }
    }
    __asm__("" : IM2WIN_VREG(av));
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) acc[i][j] += bv[j] * av;
  };
  long t = -tc;
  if (kIntel && VL >= 8) {  // as ukernel_full: marked for im2win.cpu.isa.part_loops
    if constexpr (Part == 0)
      __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-fmas-begin M=%c0" ::"i"(MR));
    if constexpr (Part == 1)
      __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-bloads-begin M=%c0" ::"i"(MR));
#pragma GCC unroll 2
    for (; t != 0; ++t) step(t);
    if constexpr (Part == 0)
      __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-fmas-end M=%c0" ::"i"(MR));
    if constexpr (Part == 1)
      __asm__ volatile(IM2WIN_ASM_NOTE "im2win-ukernel-bloads-end M=%c0" ::"i"(MR));
  } else {
    for (; t != 0; ++t) step(t);
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) storeu(c + (i * NR + j) * VL, acc[i][j]);
}

// GFLOP/s of `call(rows, b, tc, c)`, 2 * MR * KB * TC FLOPs a call, `reps` calls on each of
// `nthreads` threads, on L1-resident data of its own: MR window rows of TC floats, one TC x KB
// panel and one MR x KB output tile.
template <class Call>
double l1_gflops(long reps, int nthreads, Call call) {
  double seconds = 0;
#pragma omp parallel num_threads(nthreads) reduction(max : seconds)
  {
    alignas(64) float a[MR * TC], b[TC * KB], c[MR * KB];
    for (int i = 0; i < MR * TC; ++i) a[i] = 1e-3f * (i % 7);
    for (int i = 0; i < TC * KB; ++i) b[i] = 1e-3f * (i % 5);
    std::memset(c, 0, sizeof(c));
    const float* rows[MR];
    for (int i = 0; i < MR; ++i) rows[i] = a + i * TC;
    volatile int tc = TC;  // not a constant the compiler could specialise the loop to
    call(rows, b, tc, c);  // warm-up
#pragma omp barrier
    const double start = omp_get_wtime();
    for (long r = 0; r < reps; ++r) {
      call(rows, b, tc, c);
      // each call reads and writes the tile in memory, as in the convolution: the compiler may
      // not carry it in registers from call to call or fuse the calls (inlined, the probe read
      // twice the FMA peak)
      __asm__ volatile("" ::"r"(c) : "memory");
    }
    seconds = omp_get_wtime() - start;
    volatile float sink = c[0];
    (void)sink;
  }
  return 2.0 * MR * KB * TC * reps * nthreads / seconds / 1e9;
}

// Whether im2win_conv_nhwc runs over M pixels as one pixel block, its kblocks channel blocks spread
// over the threads: few pixels (small late layers, whose filter dwarfs their input), so each panel
// of the filter is packed exactly once (up to 4 MC pixels: conv6 and conv11 at batch 4, 400 and 576
// pixels, ran 4-15% faster than in blocks of about MC, measured side by side with python -m
// im2win.cpu.kernel_ab). Every thread then reads the whole window tensor.
bool one_pixel_block(long M, long kblocks, int nthreads) {
  return M <= 4 * MC && kblocks % nthreads == 0;
}

// Whether OpenMP threads 0 and 1 of the calling team sit on cores that share no last-level cache:
// eight round trips of one cache line between them, about 130 ns each where the cores share one
// and over 500 ns where they do not (as harness.peak.thread_round_trip_ns times them). Called by
// every thread of a team of two, which all get the same answer; `line`: zero, shared by the team.
// At those round trips, about 1 us a call together and 4 us apart. -DIM2WIN_APART=0 or =1 fixes
// the answer (the tests: either way, on any host).
bool team_apart(std::atomic<long>& line) {
#ifdef IM2WIN_APART
  (void)line;
  return IM2WIN_APART;
#else
  constexpr long kTrips = 8;
  constexpr double kApartSeconds = kTrips * 250e-9;  // harness.peak.APART_NS a round trip
  const auto spin = [&](auto done) {
    long v;
    while (!done(v = line.load(std::memory_order_acquire))) spin_hint();
    return v;
  };
  if (omp_get_num_threads() != 2) return false;
  if (omp_get_thread_num() == 0) {
    spin([](long v) { return v == 1; });  // thread 1 is here: its wake-up not timed
    const double start = omp_get_wtime();
    for (long i = 1; i <= kTrips; ++i) {
      line.store(2 * i, std::memory_order_release);
      spin([i](long v) { return v == 2 * i + 1; });
    }
    const bool apart = omp_get_wtime() - start > kApartSeconds;
    line.store(apart ? -2 : -1, std::memory_order_release);
    return apart;
  }
  line.store(1, std::memory_order_release);
  for (long i = 1; i <= kTrips; ++i) {
    spin([i](long v) { return v == 2 * i; });
    line.store(2 * i + 1, std::memory_order_release);
  }
  return spin([](long v) { return v < 0; }) == -2;
#endif
}

// Whether im2win_transform_nhwc may write its window rows with non-temporal stores (where the
// threads sit apart: team_apart): transposed from channel-major input (sc != 1, sw == 1) in
// blocks of whole cache lines of channels (cb a multiple of 16) into a window aligned to a line,
// with AVX2 or AVX-512 (transpose_rows_stream).
bool streams_window(long sc, long sw, int cb, const float* iw) {
  return VL >= 8 && sc != 1 && sw == 1 && cb % 16 == 0 &&
         reinterpret_cast<std::uintptr_t>(iw) % 64 == 0;
}

}  // namespace

extern "C" {

int im2win_simd_width() { return VL; }

// The MR x KB micro-kernel alone, on L1-resident data (MR window rows of TC floats, one TC x KB
// panel, one output tile per thread), `reps` times on every thread: its own GFLOP/s, the ceiling of
// the whole convolution on this machine (2 * MR * KB * TC FLOPs per call).
double im2win_ukernel_gflops(long reps, int nthreads) {
  return l1_gflops(reps, nthreads, [](const float* const* rows, const float* b, int tc, float* c) {
    // Arguments the compiler cannot see, so that it runs the convolution's own copy of the
    // micro-kernel, not one specialised to constants (on AVX-512, GCC 12's specialised copy parked
    // two row pointers in vector registers). A whole tile: ukernel_full, as every tile of a
    // convolution but its last channel block's.
    volatile long ldc = KB;
    volatile bool first = false, stream = false;
    const float* volatile bias = nullptr;
    ukernel_full<MR>(rows, b, tc, c, ldc, first, bias, stream);
  });
}

// The micro-kernel's main loop taken apart, on the same L1-resident data and with the same MR x NR
// accumulators, multiply-adds and reduction steps (ukernel_part): part 0, its multiply-adds alone,
// every operand in registers; part 1, with its NR B loads a step but not its MR broadcasts of the
// window rows. Against the FMA probe and the whole micro-kernel (im2win_ukernel_gflops), what the
// loads and the broadcasts each cost on this CPU.
// 0 for any other part, and on an x86 level without FMA, whose separate multiplies GCC would
// compute once a step for every row (the products are the same), doing less than the micro-kernel.
double im2win_ukernel_part_gflops(int part, long reps, int nthreads) {
#if defined(__FMA__)
  if (part != 0 && part != 1) return 0.0;
  return l1_gflops(reps, nthreads, [part](const float* const*, const float* b, int tc, float* c) {
    if (part == 0)
      ukernel_part<0>(b, tc, c);
    else
      ukernel_part<1>(b, tc, c);
  });
#else
  (void)part, (void)reps, (void)nthreads;
  return 0.0;
#endif
}

// Floats of the filter's workspace of a convolution over M pixels: the whole filter packed once
// (K rounded up to KB, times T = C*R*S) when that is at most a quarter of what im2col would hold
// (K <= M / 4: layers with many pixels; a late layer's filter dwarfs its im2col matrix), else one
// panel a thread (nhwc_panel_floats), packed by every work item for itself. im2win_conv_nhwc takes
// this plan; im2win_conv_fused its own (im2win_fused_plan), which packs once in more cases.
int im2win_filter_packed_once(int K, long M) { return 4 * cdiv(K, KB) * KB <= M; }

// Floats each of nthreads threads may take for itself beside `used` floats that every thread
// shares, within 0.495 of the im2col matrix of a convolution of M pixels and T reduction steps
// (M x T floats): the memory goal is half of it. Negative where `used` alone is over that.
long memory_room_floats(long M, long T, long used, int nthreads) {
  return (M * T * 99 / 200 - used) / nthreads;
}

// Input channels a block of im2win's materialised window tensor (im2win_transform_nhwc's cb) when
// the filter is packed panel by panel (not once): the largest multiple of 8 below C that divides C
// and whose every tap fills at most a panel, so each panel is packed from the filter in its own
// order; C (one block: the NHWC-window layout) where the filter is packed once or no such block
// exists. A panel is PANEL_FLOATS (32 channels of a 3 x 3 filter with AVX2, 16 with AVX-512), or
// larger where the memory allows (what a thread's panel may take beside the window tensor of
// window_floats, memory_room_floats), at most half the L2 cache: fewer, longer reductions, each
// output tile loaded and stored once a block. conv6 at batch 4 (C = 256, room for 128-channel
// panels, 147 KB with AVX-512) ran 1.02x, 1.04x, 1.08x and 1.09x with them on Zen 5 against
// 16-channel ones, its AVX2 code 1.07x (kernel_ab, 30-40 interleaved rounds; 64-channel blocks
// 1.00-1.03x); conv12's room (7680 floats a thread) leaves it 16. Measured interleaved against
// the unblocked window (python -m im2win.cpu.kernel_ab, batch 4): see gemm_block_taps.
// conv12's panels widened past the memory goal (Zen 4, batch 4), to 64-256 channels: 1.02-1.04x
// in cache and 1.04-1.06x with the caches flushed with the vCPUs together; with them apart 1.11-
// 1.13x at best and 1.12-1.19x at the median, its median packing 0.89 -> 0.40-0.52 ms (the
// filter read in runs of 2.3-9.2 KB, not 576 bytes; kernel_ab, 300 and 100 rounds). Within the
// goal, by building and running the window tensor in 2 groups of 256 input channels, one group's
// window at a time in one buffer (0.39 of im2col, 128-channel panels, the second group adding
// to the output): 2.61 against 2.51 ms at best together, 2.73 against 2.59 apart, and at the
// median apart 3.09 against 3.36 ms (410 and 10,700 interleaved rounds): the second pass's
// transform and parallel regions cost more than the longer runs save in the best call. Not kept.
int im2win_window_block(int K, int C, int R, int S, long M, long window_floats, int nthreads) {
  if (im2win_filter_packed_once(K, M)) return C;
  const long room = memory_room_floats(M, static_cast<long>(C) * R * S, window_floats, nthreads);
  const long panel = std::max<long>(PANEL_FLOATS, std::min(room, band_cap_floats()));
  const int cb = channel_block(panel / KB / (R * S), C);
  return cb ? cb : C;
}

// cb: the channel block of the window im2win_conv_nhwc will run on (C: the unblocked window).
long im2win_filter_work_floats(int K, int C, int R, int S, long M, int cb, int nthreads) {
  const long T = static_cast<long>(C) * R * S;
  return im2win_filter_packed_once(K, M) ? cdiv(K, KB) * KB * T
                                         : nthreads * nhwc_panel_floats(C, R, S, cb);
}

// Whether gemm_block streams its output tiles to memory (non-temporal stores) in a convolution of M
// pixels, K output channels and T reduction steps, whose filter is packed once (packed) or panel
// by panel: where the whole reduction is one micro-kernel call (T <= TC_PACKED from the filter
// packed once, T <= TC from a panel), each output tile is written once and never read, and an
// output larger than half a core's L2 cache (the room beside a thread's window bands,
// band_cap_floats) does not stay there beside them. Plain stores read each line in
// before writing it (write-allocate): twice the memory traffic for a layer whose time is its
// output. conv7 (T = 27, 50 MB of output at batch 4) ran 1.37x on Zen 5 with AVX-512, conv3 (T =
// 147, 12.6 MB) 1.02x (30 interleaved rounds, python -m im2win.cpu.kernel_ab). The layers whose
// whole reduction is one call over the filter packed once ran level so on Zen 5 (conv1, conv2,
// conv4, conv8 and conv9 0.99-1.01x) and faster on Zen 4 (32 KB L1d), three runs of 25, 30 and
// 20 rounds, the last with the caches flushed before each call: conv1 1.08x, 1.04x, 1.06x; conv2
// 1.05x, 1.10x, 1.09x; conv4 1.03x, 1.01x, 1.04x; conv8 1.06x, 1.06x, 1.07x; conv9 1.04x, 1.04x,
// 1.06x (bands of at most a quarter of L2 instead of half, on top of it: 0.99-1.02x, 40 rounds).
// The late layers' outputs outgrow the L2 caches at larger batches; there, on Zen 4: batch 32
// (10 rounds) conv5 1.02x, conv6 0.99x, conv10 1.03x, conv11 0.99x, conv8 1.02x, conv1 1.07x;
// batch 128 (6 and 12 rounds) conv6 1.08x and 1.02x, conv11 1.01x and 1.05x, conv12 0.98x and
// 1.05x, conv5 1.02x, conv10 1.02x. With torch_cl run between the calls (kernel_ab --between,
// Zen 4, 200 rounds), against plain stores: conv3 1.12x, conv8 1.02x, conv9 1.01x together and
// 1.05x apart. Below the threads' whole L2 caches, down to half of one (conv5 and conv10 at
// batch 4, 1.6 MB of output, conv11 590 KB; before, only outputs past the threads' L2 caches):
// Zen 4, 300-400 rounds, in cache conv10 1.03x, conv11 1.01x, conv5 1.00x; with the caches
// flushed conv10 1.03x, conv11 1.02x, conv5 1.01x; with torch_cl between conv10 1.03x, conv11
// 1.02x (1.03x apart), conv5 1.01x. (The next layer then reads that output from memory, not
// from the cache: at most 1.6 MB, 0.05 ms at this VM's 30 GB/s.)
// The vector stores need K a multiple of the vector and, checked by the callers, an aligned output.
//
// On Intel with AVX-512, only an output larger than a quarter of the last-level cache (a
// sixteenth where T >= 512, below): below that, the output
// buffer's lines are mostly still in that cache from its last use (the allocator hands the same
// blocks out again), and each non-temporal store must first evict its line. On the Xeon (family
// 6 model 167, 2 MB L2, 480 MB L3 by sysconf), kernel_ab, torch_cl between the calls, at batch
// 4, plain stores against non-temporal ones on every streamed layer (100 and 150 rounds, one run
// with the threads' cores together and one apart): conv1 1.05x and 0.99x at best, 1.07x and
// 1.04x at the median; conv2 1.08x and 1.06x, 1.08x and 1.07x; conv3 1.05x and 1.04x, 1.15x and
// 1.11x; conv7 0.96x and 0.99x at best, 1.20x and 1.48x at the median (its non-temporal calls'
// median half their best); conv9 1.02x and 1.07x, 1.01x and 1.04x; conv4, conv5, conv6, conv8,
// conv10-conv12 0.99-1.02x. Larger batches (12 rounds; output in MB): conv7 at batch 8 (101)
// 0.99x at best and 1.43x at the median, batch 16 (202) 0.77x and 0.89x, batch 32 (404) 0.63x,
// batch 64 (808) 0.61x; conv1 at batch 32 (37) 1.03x, batch 64 (74) 0.98x; conv3 at batch 32
// (101) 1.01x; conv9 at batch 64 (48) 0.99x (these with the write prefetch of gemm_block's two-panel
// tiles). At batch 128 (6 rounds), where the deep layers' outputs (19-96 MB) stay under a quarter
// of the cache (120 MB), plain stores ran conv5 0.98x, conv10 0.98x, conv9 0.99x, conv11 0.99x
// at best (0.98-1.00x at the median) against non-temporal ones: for reductions of 512 steps or
// more (conv5, conv6, conv8-conv12; at batch 4 none has an output past 25 MB) the bound is a
// sixteenth of the cache (30 MB here). (conv1, 363 steps, is on the quarter: at batch 32, 37 MB,
// plain stores ran 1.03x; at batch 64, 74 MB, 0.98x.) AMD's cores keep the rule above (timed there), and so does the AVX2 code: on the same
// Xeon (--march x86-64-v3, 80 rounds, the threads' cores apart) plain stores ran conv7 0.93x at
// best and 0.85x at the median, conv3 0.98x and 0.96x, the others 0.99-1.01x.
int im2win_streams_output(int K, long M, long T, int packed, int nthreads) {
  // nthreads no longer counts (half of one core's L2, whatever the threads); kept, so that the
  // entry point takes the arguments older sources' does (kernel_ab loads them under one signature)
  (void)nthreads;
#ifdef IM2WIN_STREAM_L2  // every vendor by the L2 rule (the tests: the streamed stores on any host)
  const long llc = 0;
#else
  const long llc = cache_bytes(_SC_LEVEL3_CACHE_SIZE, 0);
#endif
  // a sixteenth of the cache for the deep reductions (T >= 512: few output bytes a multiply-add)
  const long quarter = llc / 4 / static_cast<long>(sizeof(float)), past =
      kIntel && VL == 16 && llc > 0 ? (T >= 512 ? quarter / 4 : quarter) : band_cap_floats();
  return T <= (packed ? TC_PACKED : TC) && K % VL == 0 && M * K > past;
}

// Whether every thread of the convolution of the NHWC-window layout (im2win_conv_nhwc) reads the
// whole window tensor: its M pixels one block (one_pixel_block), the output channels split between
// the threads. im2win_transform_nhwc's `shared`.
int im2win_window_shared(int K, long M, int nthreads) {
  return nthreads > 1 && one_pixel_block(M, cdiv(K, KB), nthreads);
}

// Phase "transform" of the NHWC-window layout. x is read through its strides (any memory format, any
// view), so non-contiguous inputs need no copy. iw: [N][P][Wu][R][C], Wu = (Q-1)*sx + S; or, in
// blocks of cb < C channels (cb divides C), [N][P][C / cb][Wu][R][cb]: each block the window
// tensor of its channels, so a pixel's window is one run of S*R*cb floats in each. shared: whether
// every thread will read all of it (im2win_window_shared), which decides how it is written.
void im2win_transform_nhwc(const float* x, long sn, long sc, long sh, long sw, int N, int C, int H,
                           int W, int R, int S, int sy, int sx, int py, int px, int P, int Q,
                           float* iw, int cb, int nthreads, int shared) {
  const long Wu = static_cast<long>(Q - 1) * sx + S;
  const long rows = static_cast<long>(N) * P;
  // One contiguous run of rows a thread, so that each row after the first copies its overlap
  // with the row before (build_bands) instead of building it again.
  // Written with non-temporal stores instead where every thread will read the whole window tensor
  // (shared: im2win_window_shared) and the two threads' cores share no last-level cache
  // (team_apart), each row built whole from the input (streams_window). The lines each thread
  // writes were then last read by the other, in the call before: with the cores apart each plain
  // store first fetches its line from the other's cache, about 500 ns a line on the Zen 4 VM this
  // was timed on (family 25 model 17; the guest shows one L3 whichever two host cores its vCPUs
  // get, and that changes within minutes). conv6 at batch 4 there (kernel_ab, torch run between
  // the calls), against plain stores in both placements:
  //   * streamed in both placements (1,500 rounds: 1,167 apart, 333 together): apart, its
  //     transform 0.29 -> 0.09 ms and the call 1.08x at best and 1.04x at the median; together
  //     0.986x and 0.989x (the convolution then reads the window from memory, not from cache).
  //     With the overlapping rows copied from the row before, as in cache: apart 1.04x at best,
  //     together 0.99x;
  //   * by placement, as here (two runs, 1,500 and 500 rounds; 638 and 439 apart): apart 1.045x
  //     at best both times, 1.04x at the median; together 0.998-0.999x at best, 1.00x at the
  //     median; im2win_nhwc on conv6 apart 1.05x at best and 1.04x at the median, on conv11 and
  //     conv12 (few pixels too) 0.99-1.04x.
  // (Earlier, each row built in a staging row in cache and written out from it, in both
  // placements: apart 1.03x at best and 1.02x at the median, 252 rounds; together 0.99x.)
  const bool may_stream = shared && nthreads == 2 && streams_window(sc, sw, cb, iw);
  std::atomic<long> line{0};
#pragma omp parallel num_threads(nthreads)
  {
    const bool stream = may_stream && team_apart(line);
    const long share = cdiv(rows, omp_get_num_threads());
    const long row0 = std::min(rows, omp_get_thread_num() * share);
    const long count = std::min(share, rows - row0);
    for (int c0 = 0; count > 0 && c0 < C; c0 += cb)
      build_bands(x + c0 * sc, sn, sc, sh, sw, cb, H, W, R, sy, py, px, P, Wu, row0, count,
                  iw + (row0 * C + c0) * Wu * R, nullptr, Wu * R * C, stream);
    if (stream) stream_fence();  // the streamed rows are ordered before the barrier
  }
}

// Phase "convolve" of the NHWC-window layout.
// iw: [N][P][Wu][R][C] from im2win_transform_nhwc, or its blocks of cb channels (cb < C, only
// where the filter is not packed once: gemm_block_taps); f: [K][C][R][S] contiguous (PyTorch's);
// bias: [K] or null; out: [N][P][Q][K] (a channels_last NCHW tensor); work: the
// im2win_filter_work_floats of M = N*P*Q. phase_seconds (nullable): as im2win_conv_fused's, with
// no window bands ([0] = 0).
// Work items in equal shares, a contiguous run of them a thread (static): the items are pixel-block
// major, so each thread convolves the rows of the window tensor that it built itself
// (im2win_transform_nhwc's runs of rows) and writes the output rows of its own pixels, call after
// call; where one pixel block takes every pixel (few pixels, below), each thread packs and uses
// the same channel blocks of the filter every call. Against items handed to whichever thread was
// free (dynamic), on Zen 4 (family 25 model 17, 2 vCPUs; kernel_ab --impl im2win_nhwc, three runs
// of 100, 200 and 200 interleaved rounds, torch, torch_cl and torch run between the calls): at
// best 0.996-1.095x on every layer, at the median 0.97-1.07x (below 0.99x only conv12 0.968x,
// conv10 0.982x and conv7 0.985x, each in one run); with the vCPUs apart (no shared last-level
// cache) 1.00-1.09x at best on every layer timed so but conv12 (2 rounds, 0.97x), with them
// together 0.996-1.03x; conv6 1.03x, 1.03x, 1.08x at best and 1.07x, 1.06x, 1.01x at the
// median. im2win on conv6 (the one paper layer at batch 4 on this path; kernel_ab, torch and
// torch_cl between, 300-800 rounds): 1.00-1.01x at best and 1.00-1.02x at the median, apart
// 0.98-1.03x at best and 1.01-1.02x at the median. (Earlier,
// on a shared 2-core VM at an older state of this path, equal shares left the first thread done
// waiting a median 16-55% of the call on 7 of the 12 layers, and the dynamic schedule ran faster
// on 11 layers in one run (1-17%) and 9 in a second; a static schedule then: level on Zen 5 with
// the vCPUs sharing a cache, on Zen 4 with them apart conv12 0.94x and conv6 1.04x, 30 rounds.
// Two threads taking channel blocks from either end of one count, so that each knows its next
// block and prefetches that block's filter during the current one: conv6 and conv12 0.98-1.01x
// on Zen 4, conv12's packing 0.77 -> 0.88 ms with the caches flushed; 30 rounds. Retimed with
// this static schedule, each thread's next panel (the next channel block, else its next item's
// first) prefetched a share of its lines after each tile of the current one, into L1, L2 or
// beyond (locality 3, 2, 1): conv6 0.99x at best and at the median each, its packing 0.20 ms
// against 0.19-0.21; kernel_ab, torch run between the calls, 300 rounds, the vCPUs apart.)
// Work item = (block of about MC pixels, block of KB output channels). Per item, per step t0 of the
// reduction: take the B panel from the packed filter or pack it (gemm_block), or per block of
// channels (gemm_block_taps), then run the MR x KB micro-kernel over the item's pixels, whose
// window rows stay in L2.
void im2win_conv_nhwc(const float* iw, const float* f, const float* bias, float* out, int N, int C,
                      int K, int R, int S, int sx, int P, int Q, int cb, float* work,
                      double* phase_seconds, int nthreads) {
  const long Wu = static_cast<long>(Q - 1) * sx + S;
  const long RC = static_cast<long>(R) * C;
  const long T = RC * S;  // reduction length
  const long M = static_cast<long>(N) * P * Q;
  const long PQ = static_cast<long>(P) * Q;
  const long kblocks = cdiv(K, KB);
  const bool prepack = im2win_filter_packed_once(K, M);
  const bool stream = im2win_streams_output(K, M, T, prepack, nthreads) && aligned(out);
  // Few pixels: one pixel block (one_pixel_block).
  const long mc = one_pixel_block(M, kblocks, nthreads) ? M : balanced_block(M, MC, nthreads, MR);
  const long mblocks = cdiv(M, mc);
  double slowest_pack = 0.0, slowest_busy = 0.0, fastest_busy = 1e300;
#pragma omp parallel num_threads(nthreads) reduction(max : slowest_pack, slowest_busy) \
    reduction(min : fastest_busy)
  {
    const double start = omp_get_wtime();
    float* panel =
        prepack ? nullptr : work + omp_get_thread_num() * nhwc_panel_floats(C, R, S, cb);
    std::vector<const float*> arow(mc);
    double packing = prepack ? pack_filter(f, K, C, R, S, work) : 0.0;
#pragma omp for collapse(2) schedule(static) nowait
    for (long mb = 0; mb < mblocks; ++mb)
      for (long kb = 0; kb < kblocks; ++kb) {
        const long m0 = mb * mc, m1 = std::min(M, m0 + mc);
        const int k0 = static_cast<int>(kb * KB), kvalid = std::min(KB, K - k0);
        for (long m = m0; m < m1; ++m) {  // pixel m = (n, p, q) -> start of its window
          const long n = m / PQ, p = (m % PQ) / Q, q = m % Q;
          arow[m - m0] = iw + (n * P + p) * Wu * RC + q * sx * R * cb;
        }
        if (cb < C)
          gemm_block_taps(arow.data(), m1 - m0, f, T, R, S, 0, C, K, k0, kvalid, bias,
                          out + m0 * K, panel, packing, cb, Wu * R * cb);
        else
          gemm_block(arow.data(), m1 - m0, f, prepack ? work + kb * T * KB : nullptr, T, R, S, C,
                     K, k0, kvalid, bias, out + m0 * K, panel, packing, stream);
      }
    slowest_pack = packing;
    slowest_busy = fastest_busy = omp_get_wtime() - start;  // then wait for the others
  }
  if (phase_seconds)
    phase_seconds[0] = 0.0, phase_seconds[1] = slowest_pack,
    phase_seconds[2] = slowest_busy - fastest_busy;
}

// Rows a work item and floats a thread's band buffer, for rows of row_floats and bands of at most
// cap floats (im2win_fused_plan's and im2win_prepacked_plan's).
static void band_plan(int N, int P, int Q, long row_floats, long cap, int nthreads,
                      long* rows_per_item, long* band_floats) {
  const long target = std::min(cdiv(MC, Q), std::max<long>(1, cap / row_floats));
  *rows_per_item = balanced_block(static_cast<long>(N) * P, target, nthreads);
  *band_floats = cdiv(*rows_per_item * row_floats, 16) * 16;  // the filter after them: whole lines
}

// The plan of im2win_conv_fused. Rows of output pixels per work item (at most; im2win_conv_fused
// splits the rows evenly, into items of this many rows or one fewer): about MC pixels and bands of
// at most half the L2 cache, in a number of items that is a multiple of the thread count (so no
// thread idles or holds another's rows). (Items of exactly this many rows and a short last one
// left conv10's first thread done waiting 9% of the call at batch 4 on Zen 5, 104 rows in items
// of 11: split evenly, conv10 and conv5 ran 1.03x, 30 interleaved rounds.) work_floats: the size
// of im2win_conv_fused's `work`, a band buffer a thread and the filter's workspace.
// packs_once: whether the whole filter is packed once, as im2win_filter_packed_once (K <= M / 4),
// or where K <= M / 2 and the packed filter leaves room for bands of at least 2 rows a thread
// (memory_room_floats); the bands then take at most that room. With neither, the filter goes panel by panel into every work item.
// (conv11 at batch 4, K = 256, M = 576: 3 rows a thread, 0.493 of im2col; before, it built the
// whole window tensor and packed its filter in panels of 16 channels. On Zen 5, kernel_ab, 20-30
// interleaved rounds: 1.09x, 1.05x; with 2 rows a thread (0.48 of im2col) 1.03x. Against the
// whole window in the 128-channel blocks its memory room now allows (0.44 of im2col): 1.00x in
// cache, 1.01x and 1.02x with the caches flushed before each call; 30-40 rounds. On Zen 4 the
// streamed bands ran 1.08x in cache and 1.05x with the caches flushed against that window.)
void im2win_fused_plan(int N, int C, int K, int R, int S, int sx, int P, int Q, int nthreads,
                       long* rows_per_item, long* band_floats, long* work_floats,
                       int* packs_once) {
  const long Wu = static_cast<long>(Q - 1) * sx + S;
  const long row_floats = Wu * R * C;
  const long M = static_cast<long>(N) * P * Q, T = static_cast<long>(C) * R * S;
  const long filter_floats = cdiv(K, KB) * KB * T;
  long cap = band_cap_floats();
  bool packed = im2win_filter_packed_once(K, M);
  if (!packed && 2 * cdiv(K, KB) * KB <= M) {
    const long room = memory_room_floats(M, T, filter_floats, nthreads);
    if (room >= 2 * row_floats) packed = true, cap = std::min(cap, room);
  }
  band_plan(N, P, Q, row_floats, cap, nthreads, rows_per_item, band_floats);
  *work_floats = nthreads * *band_floats +
                 (packed ? filter_floats : static_cast<long>(nthreads) * PANEL_FLOATS);
  *packs_once = packed;
}

// The plan of im2win_conv_prepacked, whose caller packed the whole filter ahead of the call
// (im2win_pack_filter): im2win_fused_plan's bands, their room no longer shared with the filter.
// The bands take at most half the L2 cache and the memory goal's room (memory_room_floats), but
// a row a thread where that room is less; work_floats: the bands alone.
void im2win_prepacked_plan(int N, int C, int /*K*/, int R, int S, int sx, int P, int Q,
                           int nthreads, long* rows_per_item, long* band_floats,
                           long* work_floats) {
  const long row_floats = (static_cast<long>(Q - 1) * sx + S) * R * C;
  const long M = static_cast<long>(N) * P * Q, T = static_cast<long>(C) * R * S;
  const long room = std::max(memory_room_floats(M, T, 0, nthreads), row_floats);
  band_plan(N, P, Q, row_floats, std::min(band_cap_floats(), room), nthreads, rows_per_item,
            band_floats);
  *work_floats = nthreads * *band_floats;
}

// Whether im2win_conv_fused gives each thread a fixed share of the channel blocks of the filter
// packed once (their panels packed by that thread) and runs it over every row, each thread building
// every band for itself, instead of handing out (row block, channel block) items: where the
// packed filter outgrows a core's L2 cache, so that sweeping every channel block for a row block
// reads it from the last-level cache each time, the memory goal cut the row blocks to fewer than
// MC / 4 pixels (few tiles use each panel read in), and a thread's share beside its band fits in
// 3/4 of its L2: its panels stay there from the packing on. Only conv11 at batch 4 of the paper
// layers, on cores with 2 MB of L2: on the Xeon (family 6 model 167), kernel_ab, torch_cl between
// the calls, three runs of 150, 300 and 300 rounds, conv11 1.06x, 1.07x and 1.05x at best, 1.05x,
// 1.02x and 1.04x at the median (the third with the threads' cores apart, a 330 ns round trip);
// its AVX2 code (--march x86-64-v3, 300 rounds) 1.08x at best and 1.06x at the median;
// applied to every streamed layer, conv5 0.97x, conv8 1.00x, conv9 0.96x and conv10 0.98x at best
// (their row blocks use each panel read in for 33-65 tiles, and building every band twice costs
// more). Retimed against the threads' own ranges of rows (conv_streamed's schedule since they
// replaced the shared counter), -DIM2WIN_SPLIT_K=0 against Intel's tuning, 80 rounds: conv11 0.91x
// at best and at the median without the split, conv5 (never split) 1.00x. (On Zen 4, 1 MB of L2,
// conv11 ran 0.86-0.88x with the threads' cores apart: a
// thread's share did not fit there; see the grabs in im2win_conv_fused.) A thread slowed by a
// neighbour cannot hand its share over. Two threads only, the count it was timed with: each
// thread builds every band, so with n threads the bands take n times the work they share now,
// against a 1/n share of the multiply-adds.
// From the plan's values (im2win_fused_plan), which im2win_conv_fused has at hand; T = C * R * S.
static bool splits_k(int K, long T, int Q, int nthreads, long rows_per_item, long band_floats,
                     int packs_once) {
  const long kblocks = cdiv(K, KB), filter_bytes = kblocks * KB * T * 4l;
  const long share_bytes = cdiv(kblocks, nthreads) * KB * T * 4l + band_floats * 4;
#ifdef IM2WIN_SPLIT_K  // 0: never; 1: wherever a thread has a channel block (the tests: any host)
  if (packs_once && nthreads > 1 && kblocks >= nthreads) return IM2WIN_SPLIT_K;
#endif
  return packs_once && nthreads == 2 && kblocks >= nthreads && filter_bytes > l2_bytes() &&
         4 * share_bytes <= 3 * l2_bytes() && 4 * rows_per_item * Q < MC;
}

// The streamed path's plan for a shape (computed here), for the Python side's plan: whether it
// packs the filter once and whether each thread convolves its own channel blocks (splits_k).
static void fused_schedule(int N, int C, int K, int R, int S, int sx, int P, int Q, int nthreads,
                           bool* packs_once, bool* split_k) {
  long rows_per_item, band_floats, work_floats;
  int packs;
  im2win_fused_plan(N, C, K, R, S, sx, P, Q, nthreads, &rows_per_item, &band_floats, &work_floats,
                    &packs);
  *packs_once = packs;
  *split_k = splits_k(K, static_cast<long>(C) * R * S, Q, nthreads, rows_per_item, band_floats,
                      packs);
}

// splits_k for a shape (fused_schedule).
int im2win_fused_splits_k(int N, int C, int K, int R, int S, int sx, int P, int Q, int nthreads) {
  bool packs_once, split_k;
  fused_schedule(N, C, K, R, S, sx, P, Q, nthreads, &packs_once, &split_k);
  return split_k;
}

// Channel blocks each work item of im2win_conv_fused takes, each tile of pixels through all of them
// before the next tile (gemm_block's `blocks`), instead of one channel block over all its pixels:
//   * every one, where the whole filter, packed once, fits in L1 (kblocks * T * KB floats; conv3
//     and conv7 at 37 and 7 KB with AVX-512), so cycling through its panels reads nothing from
//     L2, and each tile's output, a pixel's K channels side by side, goes to memory in one run.
//     On the Xeon (family 6 model 167, 48 KB L1d), kernel_ab, torch_cl between the calls, 150
//     rounds: conv7 1.05x at best and 1.08x at the median, conv3 1.03x and 1.04x; applied to
//     every layer whose filter is packed once, conv5 (2.4 MB of filter, the panels then read from
//     L3 at every tile) 0.93x, conv4 0.99x, the others 1.00-1.01x. The AVX2 code (--march
//     x86-64-v3, 100 rounds; 16-channel panels, conv7's filter 4 of them): conv7 1.06x and 1.07x,
//     conv3 1.01x. With AVX-512, two whole panels a tile at once (ukernel_wide): against
//     this schedule at 625c5d3 with 12 x 2 tiles only, conv7 1.14x at best and 1.10x at the
//     median, conv3 1.03x and 1.03x, conv9 (not on this path) 0.995x and 0.99x (150 rounds). (Up
//     to an eighth of L2 instead of L1, so conv1, conv2 and conv9 too: 0.99-1.01x, 100 rounds.)
//     On Zen 4 (family 25 model 17, 32 KB L1d: conv7 only of the paper layers), against one block
//     an item, kernel_ab, 300-400 rounds: conv7 1.05x at best and at the median with torch_cl
//     run between the calls, 1.06x and 1.06x with torch between, 1.06x and 1.06x with the caches
//     flushed before each call, in either placement of the vCPUs; at batch 1 1.06x, batch 16
//     1.07x, on one thread 1.06x (100 rounds each). Through 12 x 2 tiles only, 1.01x and 1.02x.
//     Its AVX2 code (--march x86-64-v3, 300 rounds): 1.11x and 1.11x. (Up to an eighth of L2,
//     so conv3's 37 KB too: conv3 1.01x and 1.01x, 300 rounds; not kept.)
//   * two, with AVX-512 on Intel (ukernel_wide's pairs of panels), where the channel blocks pair
//     up and a pair's panels fit in a quarter of L2: conv8-conv10 at batch 4 (74-295 KB a pair).
//     On the Xeon against one block an item (kernel_ab, torch_cl between, 150 rounds): conv8
//     1.00x at best and 1.02x at the median, conv9 1.01x and 1.01x, conv10 1.02x and 1.02x; with
//     no bound on the pair's panels, conv4 (802 KB a pair) 0.99x, conv5 (614 KB) 1.00x (60 rounds).
//   * else one.
// Only over the filter packed once, its whole reduction one micro-kernel call (T <= TC_PACKED),
// and not where each thread convolves its own channel blocks (split_k): pairs within each thread's
// half there, conv11 at batch 4 on the Xeon, ran 0.98x at best and at the median, 0.96x and 0.99x
// with the pairs' B rows prefetched 8 steps ahead where the tile's rows span most of L1 (kernel_ab,
// torch_cl between, 100 rounds). AMD's cores keep one block an item where Intel's take pairs: on
// Zen 4 the pairs ran conv8 1.00x, conv9 1.00x, conv10 1.00x at best and at the median
// (kernel_ab, torch_cl between, 200 rounds). (-DIM2WIN_INTEL=1 builds Intel's choices on any
// CPU, for kernel_ab --defines IM2WIN_INTEL=0 IM2WIN_INTEL=1.)
int item_blocks(int K, long T, bool packed, bool split_k) {
  const long kblocks = cdiv(K, KB), panel_bytes = KB * T * static_cast<long>(sizeof(float));
  if (!packed || split_k || T > TC_PACKED) return 1;
  if (kblocks * panel_bytes <= kL1Bytes) return static_cast<int>(kblocks);
  if (kIntel && VL == 16 && kblocks % 2 == 0 && 4 * 2 * panel_bytes <= l2_bytes()) return 2;
  return 1;
}

// item_blocks for a shape (fused_schedule).
int im2win_fused_item_blocks(int N, int C, int K, int R, int S, int sx, int P, int Q,
                             int nthreads) {
  bool packs_once, split_k;
  fused_schedule(N, C, K, R, S, sx, P, Q, nthreads, &packs_once, &split_k);
  return item_blocks(K, static_cast<long>(C) * R * S, packs_once, split_k);
}

// Floats of the whole filter packed once (pack_filter): KB-channel blocks, zero past K.
long im2win_packed_filter_floats(int K, int C, int R, int S) {
  return cdiv(K, KB) * KB * static_cast<long>(C) * R * S;
}

// direct_conv_nhwc's plan: rows of output pixels per work item (about MC pixels, in a number of
// items that is a multiple of the thread count, as im2win_fused_plan's) and its work, the whole
// filter packed once (direct_nhwc_work_floats).
long direct_nhwc_work_floats(int K, int C, int R, int S) {
  return im2win_packed_filter_floats(K, C, R, S);
}
static void direct_nhwc_plan(int N, int C, int K, int R, int S, int P, int Q, int nthreads,
                             long* rows_per_item, long* work_floats) {
  *rows_per_item = balanced_block(static_cast<long>(N) * P, cdiv(MC, Q), nthreads);
  *work_floats = direct_nhwc_work_floats(K, C, R, S);
}

// im2win with a streamed window ("im2win"): the NHWC window rows of a block of output rows are built
// into this thread's band buffer (phase "transform", in cache) and consumed at once by the same
// micro-kernel as im2win_conv_nhwc (phase "compute"), so the window tensor is never materialised.
// x: [N][C][H][W] through its strides; f: [K][C][R][S] contiguous; bias [K] or null;
// out: [N][P][Q][K]; work: work_floats of im2win_fused_plan.
// Work item = (block of output rows, block of KB output channels, or item_blocks of them),
// handed out in grabs (below), or, where im2win_fused_splits_k, each thread's
// own channel blocks over every row block.
// phase_seconds (nullable): receives the slowest thread's time spent building bands ([0]) and
// packing the filter ([1]), and how long the first thread done waited for the last ([2]: the
// threads' imbalance).
// direct (direct_conv_nhwc): no bands; each pixel's window is read from the input's rows in place
// (sc = 1, sw = C, no padding), the whole filter packed once in their order, items of about MC
// pixels (direct_nhwc_plan).
// prepacked (nullable; im2win_conv_prepacked): the whole filter as pack_filter packs it, packed
// by the caller ahead of the call, used instead of f; the plan im2win_prepacked_plan's.
static void conv_streamed(const float* x, long sn, long sc, long sh, long sw, int N, int C, int H,
                          int W, int K, int R, int S, int sy, int sx, int py, int px, int P, int Q,
                          const float* f, const float* bias, float* out, float* work,
                          double* phase_seconds, int nthreads, bool direct,
                          const float* prepacked = nullptr) {
  const long Wu = static_cast<long>(Q - 1) * sx + S;
  const long RC = static_cast<long>(R) * C;
  const long T = RC * S;
  long rows_per_item, band_floats = 0, work_floats;
  int packs_once = 1;
  if (direct)
    direct_nhwc_plan(N, C, K, R, S, P, Q, nthreads, &rows_per_item, &work_floats);
  else if (prepacked)
    im2win_prepacked_plan(N, C, K, R, S, sx, P, Q, nthreads, &rows_per_item, &band_floats,
                          &work_floats);
  else
    im2win_fused_plan(N, C, K, R, S, sx, P, Q, nthreads, &rows_per_item, &band_floats,
                      &work_floats, &packs_once);
  const long rows_total = static_cast<long>(N) * P;
  const long row_blocks = cdiv(rows_total, rows_per_item), kblocks = cdiv(K, KB);
  float* filter_work = work + nthreads * band_floats;  // the packed filter, or a panel a thread
  const long M = static_cast<long>(N) * P * Q;
  const bool prepack = packs_once;
  const bool split_k = splits_k(K, T, Q, nthreads, rows_per_item, band_floats, packs_once);
  float* packs_into = prepack && !prepacked ? filter_work : nullptr;  // this call's packing
  const float* packed = prepacked ? prepacked : packs_into;
  const bool stream = im2win_streams_output(K, M, T, prepack, nthreads) && aligned(out);
  // Channel blocks a work item takes (item_blocks) and such items a row block.
  const int kgroup = item_blocks(K, T, prepack, split_k);
  const long kitems = kblocks / kgroup;
  // Work items (block of rows, block of KB output channels), numbered row block by row block. Each
  // thread owns a contiguous range of them, whole row blocks, the rows split as evenly as the blocks
  // allow (`ranges`), and takes its own a row block at a time from the front, so that its next
  // items continue the rows its band holds (the same rows for the next channel block; the next
  // rows copy the overlap), but the last row block of its range an item at a time; once done with
  // its own, it takes single items from the back of the others' ranges, so that the threads finish
  // together (two threads may then each build the bands of one row block). (The last row block
  // taken whole left nothing to take where each thread owns one: ResNet-18's 7 x 7 layers at batch
  // 1 over a packed filter, two row blocks of 4 and 3 rows, ran 0.85-0.89 ms against 0.71-0.73 ms
  // item by item; the paper's layers at batch 4 level, 0.995-1.012x at best, 40 rounds.) Each
  // thread so writes one run of the output, where the ops after the
  // convolution in a network (a batch norm, a ReLU, a residual add: ATen's parallel loops split a
  // tensor into contiguous shares among the same threads) find their share in their own core's
  // cache. Before, items went in grabs of 1-4 row blocks from one shared counter, so each thread
  // wrote every other stretch of rows: on the Xeon (family 6 model 167), a ReLU in place on the
  // output of ResNet-18's first 3 x 3 layer (64 channels, 56 x 56, batch 1) took 20-22 us after
  // im2win against 9 us after oneDNN's convolution, and 11-12 us with these ranges. (Timed alone,
  // such ranges ran 0.99-1.02x the shared counter on every streamed layer, in both placements of
  // the vCPUs, in cache and flushed; Zen 4, 300-1,000 rounds.) Against OpenMP's dynamic schedule
  // over (row block, every channel block) items, 1-4 a grab, and each item's window pointers
  // computed with a division per pixel: conv7 1.10x, conv3 1.02x, conv8 1.02x, the others
  // 1.00-1.01x on Zen 5 (30 interleaved rounds). (Each thread on its own
  // share of the channel blocks of the filter packed once, over every row, so that no thread
  // reads what the other packed: on Zen 4 with the caches flushed, 0.97-0.99x with the vCPUs
  // sharing a cache, and with them apart conv11 0.86-0.88x, conv10 0.97-1.00x (no thread can
  // take over the other's share when it runs slower); 20-25 rounds. Each thread packing its own
  // copy of the whole filter where the memory goal allows it (conv5, conv9, conv10 here), so no
  // thread reads lines the other wrote: conv10 0.96x, conv9 0.98x, conv5 0.97x (packing 0.22 -> 0.52
  // ms) with the vCPUs together, Zen 4, 40 rounds; with them apart, where it was meant to help,
  // conv10 0.99x at best and 0.97x at the median, conv9 0.99x and 1.00x (8,531 and 13,843 rounds
  // apart; kernel_ab).) Every other row block's channel blocks taken in reverse, so that the panels
  // last used are still in L2 when the next row block starts (conv11's 2.4 MB filter is read from L3
  // once a row block): conv11 0.985x, conv10 0.998x, conv5 1.008x (torch_cl between, 200 rounds).
  // The last 2 * nthreads row blocks are split in halves (where there are 4 * nthreads blocks or
  // more, of 2 rows or more): the items handed out one at a time at the end are half as long, and
  // so is the first thread's wait for the last. The threads' wait (median of 40 calls) fell from
  // 0.066 to 0.014 ms on conv1, 0.016 to 0.002 on conv3, 0.053 to 0.021 on conv8; kernel_ab on
  // Zen 5, two runs of 20 and 30 rounds: conv1 1.03x and 1.02x, conv3 1.01x, conv5 0.99x and
  // 1.01x, conv8 1.01x and 1.00x, conv10 1.00x and 1.01x, the others level.
  const long tail = row_blocks >= 4 * nthreads && rows_total / row_blocks >= 2 ? 2 * nthreads : 0;
  const long head = row_blocks - tail;  // row blocks kept whole
  // Rows of row block rb: split evenly, rows_per_item or one row fewer; the tail's halves.
  auto block_rows = [&](long rb, long& row0, long& rows) {
    const long ob = rb < head ? rb : head + (rb - head) / 2;  // the block it is (part of)
    const long b0 = ob * rows_total / row_blocks, b1 = (ob + 1) * rows_total / row_blocks;
    if (rb < head) {
      row0 = b0, rows = b1 - b0;
    } else {
      const long mid = b0 + (b1 - b0) / 2;
      row0 = (rb - head) % 2 ? mid : b0, rows = (rb - head) % 2 ? b1 - mid : mid - b0;
    }
  };
  const long units = row_blocks + tail;  // whole row blocks and the tail's halves
  // Thread t's items not yet taken: [front, back), front in the low 32 bits, back in the high.
  std::vector<std::atomic<std::uint64_t>> ranges(nthreads);
  auto range = [](std::uint64_t front, std::uint64_t back) { return back << 32 | front; };
  auto front = [](std::uint64_t r) { return static_cast<long>(r & 0xffffffffu); };
  auto back = [](std::uint64_t r) { return static_cast<long>(r >> 32); };
  for (long t = 0, unit = 0; t < nthreads; ++t) {
    const long first = unit, next_share = (t + 1) * rows_total / nthreads;  // t + 1's first row
    for (long row0, rows; unit < units; ++unit) {
      block_rows(unit, row0, rows);
      if (t < nthreads - 1 && row0 >= next_share) break;
    }
    ranges[t].store(range(first * kitems, unit * kitems), std::memory_order_relaxed);
  }
  double slowest = 0.0, slowest_pack = 0.0, slowest_busy = 0.0, fastest_busy = 1e300;
#pragma omp parallel num_threads(nthreads) reduction(max : slowest, slowest_pack, slowest_busy) \
    reduction(min : fastest_busy)
  {
    const double start = omp_get_wtime();
    const int thread = omp_get_thread_num();
    float* band = work + thread * band_floats;
    float* panel = prepack ? nullptr : filter_work + thread * PANEL_FLOATS;
    std::vector<const float*> arow(rows_per_item * Q);
    double transform = 0.0,
           packing = packs_into ? pack_filter(f, K, C, R, S, packs_into, direct) : 0.0;
    long held0 = -1, held = 0;  // output rows [held0, held0 + held) are in this thread's band
    // The channel blocks this thread convolves: every one, or where split_k its own share (the
    // blocks it packed). Its items, (row block rb, its block kb0 + j) numbered rb * mine + j, come
    // in grabs [first, first + take): from its own range and then the others' (ranges), or where
    // split_k its own items one row block at a time.
    long kb0 = 0, kb1 = kitems;  // split_k: kitems = kblocks
    if (split_k) thread_share(kblocks, &kb0, &kb1);
    const long mine = kb1 - kb0, my_items = (row_blocks + tail) * mine;
    long own = 0;  // split_k: this thread's next item
    auto grab = [&](long& first, long& take) {
      if (split_k) {
        first = own, take = mine, own += mine;
        return first < my_items;
      }
      // Its own from the front: a row block at a time, but its last one an item at a time, so
      // that a thread done with its own can take the last items of that block from the back.
      std::atomic<std::uint64_t>& mine_left = ranges[thread];
      for (std::uint64_t r = mine_left.load(std::memory_order_relaxed); front(r) < back(r);) {
        first = front(r);
        take = back(r) - first >= 2 * kitems ? kitems : 1;
        if (mine_left.compare_exchange_weak(r, range(first + take, back(r)))) return true;
      }
      for (int o = 1; o < nthreads; ++o) {  // then single items from the back of the others'
        std::atomic<std::uint64_t>& theirs = ranges[(thread + o) % nthreads];
        for (std::uint64_t r = theirs.load(std::memory_order_relaxed); front(r) < back(r);)
          if (theirs.compare_exchange_weak(r, range(front(r), back(r) - 1))) {
            first = back(r) - 1, take = 1;
            return true;
          }
      }
      return false;
    };
    for (long first, take; grab(first, take);) {
      for (long it = first; it < std::min(my_items, first + take); ++it) {
        const long rb = it / mine, kb = kb0 + it % mine;
        long row0, rows;  // at most rows_per_item rows: block_rows
        block_rows(rb, row0, rows);
        const long m0 = row0 * Q, m1 = (row0 + rows) * Q;  // pixels (n, p, q) of these rows
        if (direct && (row0 != held0 || rows != held)) {  // each window in the input's rows
          for (long row = row0, m = 0; row < row0 + rows; ++row) {
            const float* x_row = x + row / P * sn + row % P * sy * sh;
            for (long q = 0; q < Q; ++q, ++m) arow[m] = x_row + q * sx * sw;
          }
          held0 = row0, held = rows;
        } else if (row0 != held0 || rows != held) {  // else: another channel block of these rows
          const double t_start = omp_get_wtime();
          const float* before = held && row0 == held0 + held ? band + (held - 1) * Wu * RC : nullptr;
          build_bands(x, sn, sc, sh, sw, C, H, W, R, sy, py, px, P, Wu, row0, rows, band, before);
          held0 = row0, held = rows;
          transform += omp_get_wtime() - t_start;
          for (long row = 0, m = 0; row < rows; ++row)  // pixel -> start of its window
            for (long q = 0; q < Q; ++q, ++m) arow[m] = band + (row * Wu + q * sx) * RC;
        }
        const int k0 = static_cast<int>(kb * kgroup * KB), kvalid = std::min(KB, K - k0);
        gemm_block(arow.data(), m1 - m0, f, prepack ? packed + kb * kgroup * T * KB : nullptr, T, R,
                   S, C, K, k0, kvalid, bias, out + m0 * K, panel, packing, stream, kgroup,
                   direct ? sh : 0);
      }
    }
    slowest = transform;
    slowest_pack = packing;
    slowest_busy = fastest_busy = omp_get_wtime() - start;  // then wait for the others
  }
  if (phase_seconds)
    phase_seconds[0] = slowest, phase_seconds[1] = slowest_pack,
    phase_seconds[2] = slowest_busy - fastest_busy;
}

void im2win_conv_fused(const float* x, long sn, long sc, long sh, long sw, int N, int C, int H,
                       int W, int K, int R, int S, int sy, int sx, int py, int px, int P, int Q,
                       const float* f, const float* bias, float* out, float* work,
                       double* phase_seconds, int nthreads) {
  conv_streamed(x, sn, sc, sh, sw, N, C, H, W, K, R, S, sy, sx, py, px, P, Q, f, bias, out, work,
                phase_seconds, nthreads, false);
}

// The filter packed ahead of the calls that convolve with it, for a caller that holds it fixed
// (im2win.pack_filter; a network's layer at inference, im2win.nn.Conv2d): the whole filter as
// im2win_conv_fused packs it once a call (pack_filter), im2win_packed_filter_floats floats at
// packed. A call then neither packs it nor, where the memory goal would leave no room for it
// (im2win_fused_plan), takes another path: every shape streams its window bands.
void im2win_pack_filter(const float* f, int K, int C, int R, int S, float* packed, int nthreads) {
#pragma omp parallel num_threads(nthreads)
  pack_filter(f, K, C, R, S, packed);
}

// im2win_conv_fused over a filter packed by im2win_pack_filter (packed, in place of f); work:
// work_floats of im2win_prepacked_plan. phase_seconds as im2win_conv_fused's ([1] = 0).
void im2win_conv_prepacked(const float* x, long sn, long sc, long sh, long sw, int N, int C, int H,
                           int W, int K, int R, int S, int sy, int sx, int py, int px, int P,
                           int Q, const float* packed, const float* bias, float* out, float* work,
                           double* phase_seconds, int nthreads) {
  conv_streamed(x, sn, sc, sh, sw, N, C, H, W, K, R, S, sy, sx, py, px, P, Q, nullptr, bias, out,
                work, phase_seconds, nthreads, false, packed);
}

// The direct convolution over NHWC input of the follow-up paper (arXiv 2408.00278), with im2win's
// micro-kernel and schedule ("direct_nhwc"): no window transform; pixel (n, p, q)'s window is R runs
// of S * C floats, the input's rows p * sy + r from column q * sx on, read in place. x: [N][H][W][C]
// with rows sh and images sn floats apart (channels and columns contiguous: sc = 1, sw = C), already
// zero-padded; f: [K][C][R][S] contiguous; bias [K] or null; out: [N][P][Q][K]; work:
// direct_nhwc_work_floats. phase_seconds (nullable): as im2win_conv_fused's ([0] = 0: no bands).
// On the Xeon (family 6 model 167), batch 4, 2 threads, torch_cl run between the calls, 40
// interleaved rounds (python -m im2win.cpu.kernel_ab im2win_cpu.cpp --impl im2win direct_nhwc
// [--channels-last] --between torch_cl), at best against im2win:
//   * NCHW input (its reorder and padding in the call, as the reproduction times it): level on
//     conv1-conv3 and conv5 (0.99-1.02x), ahead on conv6 (1.04x: im2win does not pack that
//     filter whole, past its memory goal) and conv7 (1.05x), behind on conv4 (0.90x), conv8-conv11
//     (0.94-0.98x) and conv12 (0.90x). On the deep layers, streaming the window bands inside the
//     call costs im2win less than a reorder before it.
//   * channels_last input, read in place (as a network of such layers hands it on): ahead on
//     every layer but conv12 (0.96x): conv1-conv3 1.11-1.15x, conv7 1.16x, conv6 1.09x,
//     conv8-conv11 1.04-1.09x, conv4 and conv5 1.01-1.02x. im2win's bands take 3-6% of
//     conv8-conv11's calls there. The follow-up paper reports the two at 95% and 94% of peak.
void direct_conv_nhwc(const float* x, long sn, long sh, int N, int C, int H, int W, int K, int R,
                      int S, int sy, int sx, int P, int Q, const float* f, const float* bias,
                      float* out, float* work, double* phase_seconds, int nthreads) {
  conv_streamed(x, sn, 1, sh, C, N, C, H, W, K, R, S, sy, sx, 0, 0, P, Q, f, bias, out, work,
                phase_seconds, nthreads, true);
}

// im2win in window planes a thread ("window planes"): where the filter is not packed once (few
// pixels, a deep filter: conv6 and conv12 at batch 4), each thread builds, one block of cb input
// channels at a time, the window tensor of that block for every pixel (its plane, [N*P][Wu][R][cb],
// in cache) and convolves it with its own share of the output channels, each panel every tap of
// the block (pack_taps), the output tiles added to block by block. No window line is read by a
// thread other than the one that wrote it, and each thread reads only its share of the filter,
// in runs of S*R*cb floats. Against the shared whole window tensor in blocks of 16 channels with
// the filter packed a work item at a time (the path before; conv12's room beside that tensor left
// no wider panels): conv12 at batch 4 on Zen 4, kernel_ab, 2,000 interleaved rounds, 1.04x at
// best and 1.05x at the median with the vCPUs together (1,559 rounds), 1.09x and 1.18x with them
// apart (441 rounds; median packing 0.99 -> 0.35 ms, the filter read 5x slower than together
// there before). Retimed with this code (1,500 rounds): conv12 1.08x at best and at the median
// together (268 rounds), 1.20x apart (1,232); its AVX2 code (--march x86-64-v3, 600 rounds,
// together) 1.10x at best, 1.04x at the median. Not where the room beside the whole window tensor
// already allows wider panels: conv6 (its whole window in 128-channel blocks; here 64-channel
// planes) 1.00x at best and 0.98x at the median together, 0.98x apart. Nor instead of conv11's
// streamed bands over the filter packed once: 32-channel planes 0.93x apart (1,500 rounds) and
// 0.99x together, 64-channel ones (past half the L2 cache) 1.00x together (1,000 rounds). (Static
// shares of output channels: a thread slowed by a neighbour cannot hand work over. Items of
// (channel block, KB output channels) from a shared counter instead, each waiting until its output
// tile holds the blocks before it, so that either thread takes what is left: conv12 0.98x with
// the vCPUs together, 0.95x apart, torch_cl run between the calls, 200 rounds: the output tiles
// then pass between the threads, and the threads' wait it saves was 0.05 ms.)
// The plan: only where the whole window tensor's blocks would be the narrowest (a PANEL_FLOATS
// panel each, im2win_window_block) or unblocked with the filter packed by gathers (gemm_block);
// cb the largest multiple of 8 below C that divides C and whose plane and panel, one of each a
// thread, fit the memory goal's room (memory_room_floats) and, together, half the L2 cache; 0
// where none does (the whole window tensor then). work_floats (nullable): what the path
// allocates, a plane and a panel a thread.
int im2win_planes_plan(int N, int C, int K, int R, int S, int sx, int P, int Q, int nthreads,
                       long* work_floats) {
  const long Wu = static_cast<long>(Q - 1) * sx + S, rows = static_cast<long>(N) * P;
  const long M = rows * Q, T = static_cast<long>(C) * R * S;
  const long per_channel = rows * Wu * R + static_cast<long>(R) * S * KB;  // plane + panel
  const long room = std::min(memory_room_floats(M, T, 0, nthreads), band_cap_floats());
  const int whole = im2win_window_block(K, C, R, S, M, rows * Wu * R * C, nthreads);
  const bool starved = whole == C || static_cast<long>(R) * S * whole * KB <= PANEL_FLOATS;
  const int cb =
      starved && !im2win_filter_packed_once(K, M) ? channel_block(room / per_channel, C) : 0;
  if (work_floats) *work_floats = nthreads * per_channel * cb;
  return cb;
}

// x: [N][C][H][W] through its strides; f: [K][C][R][S] contiguous; bias [K] or null;
// out: [N][P][Q][K]; work: work_floats of im2win_planes_plan, whose cb this takes.
// phase_seconds (nullable): as im2win_conv_fused's.
void im2win_conv_planes(const float* x, long sn, long sc, long sh, long sw, int N, int C, int H,
                        int W, int K, int R, int S, int sy, int sx, int py, int px, int P, int Q,
                        const float* f, const float* bias, float* out, float* work,
                        double* phase_seconds, int nthreads) {
  const int cb = im2win_planes_plan(N, C, K, R, S, sx, P, Q, nthreads, nullptr);
  const long Wu = static_cast<long>(Q - 1) * sx + S, rows = static_cast<long>(N) * P;
  const long M = rows * Q, T = static_cast<long>(C) * R * S, kblocks = cdiv(K, KB);
  const long plane_floats = rows * Wu * R * cb, panel_floats = static_cast<long>(R) * S * cb * KB;
  double slowest = 0.0, slowest_pack = 0.0, slowest_busy = 0.0, fastest_busy = 1e300;
#pragma omp parallel num_threads(nthreads) reduction(max : slowest, slowest_pack, slowest_busy) \
    reduction(min : fastest_busy)
  {
    const double start = omp_get_wtime();
    const int thread = omp_get_thread_num(), threads = omp_get_num_threads();
    float* plane = work + thread * (plane_floats + panel_floats);
    float* panel = plane + plane_floats;
    const long kb0 = kblocks * thread / threads, kb1 = kblocks * (thread + 1) / threads;
    std::vector<const float*> arow(M);  // pixel m = (n, p, q) -> start of its window in the plane
    for (long row = 0, m = 0; row < rows; ++row)
      for (long q = 0; q < Q; ++q, ++m) arow[m] = plane + (row * Wu + q * sx) * R * cb;
    double transform = 0.0, packing = 0.0;
    for (int c0 = 0; kb0 < kb1 && c0 < C; c0 += cb) {
      const double t_start = omp_get_wtime();
      build_bands(x + c0 * sc, sn, sc, sh, sw, cb, H, W, R, sy, py, px, P, Wu, 0, rows, plane);
      transform += omp_get_wtime() - t_start;
      for (long kb = kb0; kb < kb1; ++kb) {
        const int k0 = static_cast<int>(kb * KB), kvalid = std::min(KB, K - k0);
        gemm_block_taps(arow.data(), M, f, T, R, S, c0, cb, K, k0, kvalid, bias, out, panel,
                        packing, cb, 0);
      }
    }
    slowest = transform;
    slowest_pack = packing;
    slowest_busy = fastest_busy = omp_get_wtime() - start;  // then wait for the others
  }
  if (phase_seconds)
    phase_seconds[0] = slowest, phase_seconds[1] = slowest_pack,
    phase_seconds[2] = slowest_busy - fastest_busy;
}

// im2win over the whole window tensor, materialised first (the path of layers that neither stream
// bands nor build window planes a thread: few pixels, a deep filter packed panel by panel), in one
// call: the window (im2win_transform_nhwc, in im2win_window_block's blocks of channels) into the
// front of work, then im2win_conv_nhwc over it, with the rest of work for the filter. The plan:
// work_floats (nullable), the window tensor (rounded up to a cache line) and the filter's work
// (im2win_filter_work_floats); returns the channels a block of the window.
int im2win_whole_plan(int N, int C, int K, int R, int S, int sx, int P, int Q, int nthreads,
                      long* work_floats, long* window_floats) {
  const long Wu = static_cast<long>(Q - 1) * sx + S, M = static_cast<long>(N) * P * Q;
  const long window = static_cast<long>(N) * P * Wu * R * C;
  const int cb = im2win_window_block(K, C, R, S, M, window, nthreads);
  const long window_lines = cdiv(window, 16) * 16;  // the filter's work starts on a cache line
  if (window_floats) *window_floats = window_lines;
  if (work_floats)
    *work_floats = window_lines + im2win_filter_work_floats(K, C, R, S, M, cb, nthreads);
  return cb;
}

// x: [N][C][H][W] through its strides; f: [K][C][R][S] contiguous; bias [K] or null;
// out: [N][P][Q][K]; work: work_floats of im2win_whole_plan. phase_seconds (nullable): as
// im2win_conv_fused's, [0] the transform's parallel region.
void im2win_conv_whole(const float* x, long sn, long sc, long sh, long sw, int N, int C, int H,
                       int W, int K, int R, int S, int sy, int sx, int py, int px, int P, int Q,
                       const float* f, const float* bias, float* out, float* work,
                       double* phase_seconds, int nthreads) {
  long window = 0;
  const int cb = im2win_whole_plan(N, C, K, R, S, sx, P, Q, nthreads, nullptr, &window);
  const int shared = im2win_window_shared(K, static_cast<long>(N) * P * Q, nthreads);
  const double start = omp_get_wtime();
  im2win_transform_nhwc(x, sn, sc, sh, sw, N, C, H, W, R, S, sy, sx, py, px, P, Q, work, cb,
                        nthreads, shared);
  const double transform = omp_get_wtime() - start;
  im2win_conv_nhwc(work, f, bias, out, N, C, K, R, S, sx, P, Q, cb, work + window, phase_seconds,
                   nthreads);
  if (phase_seconds) phase_seconds[0] = transform;
}

// Phase "transform" of the paper's NCHW-window layout: iw [N][C][P][Wu*R].
void im2win_transform_nchw(const float* x, long sn, long sc, long sh, long sw, int N, int C, int H,
                           int W, int R, int S, int sy, int sx, int py, int px, int P, int Q,
                           float* iw, int nthreads) {
  const long Wu = static_cast<long>(Q - 1) * sx + S;
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) {
      const float* plane = x + n * sn + c * sc;
      float* dst = iw + (static_cast<long>(n) * C + c) * P * Wu * R;
      for (int p = 0; p < P; ++p, dst += Wu * R)
        for (long w = 0; w < Wu; ++w) {
          const long wi = w - px;
          for (int r = 0; r < R; ++r) {
            const long h = static_cast<long>(p) * sy + r - py;
            dst[w * R + r] = (h >= 0 && h < H && wi >= 0 && wi < W) ? plane[h * sh + wi * sw] : 0.0f;
          }
        }
    }
}

// The paper's filter transform: fw[k][c][s*R + r] = f[k][c][r][s].
void im2win_filter_nchw(const float* f, int K, int C, int R, int S, float* fw, int nthreads) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
  for (int k = 0; k < K; ++k)
    for (int c = 0; c < C; ++c) {
      const float* src = f + (static_cast<long>(k) * C + c) * R * S;
      float* dst = fw + (static_cast<long>(k) * C + c) * R * S;
      for (int r = 0; r < R; ++r)
        for (int s = 0; s < S; ++s) dst[s * R + r] = src[r * S + s];
    }
}

// Phase "convolve" of the paper's NCHW-window layout (loop order of the authors' CPU code:
// k -> c -> p -> q, one SIMD dot product of length R*S per output and input channel).
// out: [N][K][P][Q] contiguous.
void im2win_conv_nchw(const float* iw, const float* fw, const float* bias, float* out, int N, int C,
                      int K, int R, int S, int sx, int P, int Q, int nthreads) {
  const long Wu = static_cast<long>(Q - 1) * sx + S;
  const long RS = static_cast<long>(R) * S;
  const long PQ = static_cast<long>(P) * Q;
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      float* o = out + (static_cast<long>(n) * K + k) * PQ;
      const float b = bias ? bias[k] : 0.0f;
      for (long i = 0; i < PQ; ++i) o[i] = b;
      for (int c = 0; c < C; ++c) {
        const float* fwin = fw + (static_cast<long>(k) * C + c) * RS;
        const float* plane = iw + (static_cast<long>(n) * C + c) * P * Wu * R;
        for (int p = 0; p < P; ++p) {
          const float* band = plane + p * Wu * R;
          for (int q = 0; q < Q; ++q) {
            const float* win = band + static_cast<long>(q) * sx * R;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (long t = 0; t < RS; ++t) acc += win[t] * fwin[t];
            o[p * Q + q] += acc;
          }
        }
      }
    }
}

// Direct convolution, NCHW in and out, no workspace. Per (n, block of KR output channels, output
// row p): KR rows of Q accumulators; each input row segment is loaded once per filter tap and feeds
// KR FMAs; the q loop is the SIMD loop (unit stride when sx == 1). x, f contiguous.
void direct_conv_nchw(const float* x, const float* f, const float* bias, float* out, int N, int C,
                      int H, int W, int K, int R, int S, int sy, int sx, int py, int px, int P,
                      int Q, int nthreads) {
  constexpr int KR = 4;
  const long kblocks = cdiv(K, KR);
#pragma omp parallel num_threads(nthreads)
  {
    float acc[KR][512];
#pragma omp for collapse(3) schedule(static)
    for (int n = 0; n < N; ++n)
      for (long kb = 0; kb < kblocks; ++kb)
        for (int p = 0; p < P; ++p)
          for (int q0 = 0; q0 < Q; q0 += 512) {
            const int k0 = static_cast<int>(kb * KR), kr = std::min(KR, K - k0);
            const int qn = std::min(512, Q - q0);
            for (int j = 0; j < kr; ++j)
              for (int q = 0; q < qn; ++q) acc[j][q] = bias ? bias[k0 + j] : 0.0f;
            for (int c = 0; c < C; ++c)
              for (int r = 0; r < R; ++r) {
                const long h = static_cast<long>(p) * sy + r - py;
                if (h < 0 || h >= H) continue;
                const float* row = x + ((static_cast<long>(n) * C + c) * H + h) * W;
                for (int s = 0; s < S; ++s) {
                  // valid q: 0 <= (q0 + q)*sx + s - px < W
                  const long off = s - px;
                  int qlo = 0, qhi = qn;
                  while (qlo < qn && (static_cast<long>(q0 + qlo) * sx + off) < 0) ++qlo;
                  while (qhi > qlo && (static_cast<long>(q0 + qhi - 1) * sx + off) >= W) --qhi;
                  const float* xs = row + static_cast<long>(q0) * sx + off;
                  const float* fk = f + ((static_cast<long>(k0) * C + c) * R + r) * S + s;
                  const long fstride = static_cast<long>(C) * R * S;
                  if (kr == KR) {
                    const float w0 = fk[0], w1 = fk[fstride], w2 = fk[2 * fstride],
                                w3 = fk[3 * fstride];
#pragma omp simd
                    for (int q = qlo; q < qhi; ++q) {
                      const float v = xs[static_cast<long>(q) * sx];
                      acc[0][q] += w0 * v;
                      acc[1][q] += w1 * v;
                      acc[2][q] += w2 * v;
                      acc[3][q] += w3 * v;
                    }
                  } else {
                    for (int j = 0; j < kr; ++j) {
                      const float wj = fk[j * fstride];
#pragma omp simd
                      for (int q = qlo; q < qhi; ++q) acc[j][q] += wj * xs[static_cast<long>(q) * sx];
                    }
                  }
                }
              }
            for (int j = 0; j < kr; ++j)
              std::memcpy(out + ((static_cast<long>(n) * K + k0 + j) * P + p) * Q + q0, acc[j],
                          sizeof(float) * qn);
          }
  }
}

}  // extern "C"
