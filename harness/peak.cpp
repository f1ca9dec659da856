// FMA peak probe: the highest FP32 FLOP rate this host's cores sustain, as the roof for GFLOP/s.
// Each thread runs CHAINS independent chains of vector FMAs (enough to cover FMA latency x ports),
// with the widest SIMD -march=native gives. FLOPs per FMA lane = 2.
// Also the threads' round trip: how far apart two OpenMP threads' cores are (thread_round_trip_ns).
#include <omp.h>

#include <atomic>
#include <cmath>

#if defined(__AVX512F__) || defined(__aarch64__)
#define CHAINS_16 1
#else
#define CHAINS_16 0
#endif

namespace {
// Chains in flight must cover FMA latency x FMA ports (about 8-10 on current x86 cores) and, with
// the two constants, fit the vector registers: 32 with AVX-512, only 16 with AVX2, where 16 chains
// forced register spills into the loop: on a 2-core AMD EPYC (AVX2) the probe read 104-106 GFLOP/s
// with 16 chains and reads 180-184 with 12 (and the im2win micro-kernel had measured above it).
#if defined(__AVX512F__)
constexpr int VL = 16;
constexpr int CHAINS = 16;
#elif defined(__aarch64__)  // NEON: 32 registers of 4 lanes; up to 4 FMA pipes of latency 4
constexpr int VL = 4;
constexpr int CHAINS = 16;
#elif defined(__AVX__)
constexpr int VL = 8;
constexpr int CHAINS = 12;
#else
constexpr int VL = 4;
constexpr int CHAINS = 12;
#endif
typedef float V __attribute__((vector_size(VL * 4)));
// An asm operand in a vector register: x86's constraint, AArch64's.
#if defined(__aarch64__)
#define VREG "+w"
#else
#define VREG "+v"
#endif
}  // namespace

extern "C" {

int peak_simd_width() { return VL; }

// Runs `iters` iterations on each of `nthreads` threads; returns the seconds of the slowest thread and
// the FLOPs done in *flops. `sink` keeps the results alive.
double peak_fma(long iters, int nthreads, double* flops, float* sink) {
  double seconds = 0.0;
#pragma omp parallel num_threads(nthreads) reduction(max : seconds)
  {
    const V mul = (V){} + 0.999999f, add = (V){} + 1e-7f;
#define CHAIN_DECL(j) V a##j = (V){} + static_cast<float>(j);
#define CHAIN_STEP(j) a##j = a##j * mul + add; __asm__ volatile("" : VREG(a##j));
#if CHAINS_16
#define CHAINS_APPLY(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) \
                        F(8) F(9) F(10) F(11) F(12) F(13) F(14) F(15)
#else
#define CHAINS_APPLY(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11)
#endif
    CHAINS_APPLY(CHAIN_DECL)
#pragma omp barrier
    const double t0 = omp_get_wtime();
    for (long i = 0; i < iters; ++i) {
      CHAINS_APPLY(CHAIN_STEP)
    }
    seconds = omp_get_wtime() - t0;
#define CHAIN_SUM(j) total += a##j;
    V total = (V){};
    CHAINS_APPLY(CHAIN_SUM)
    float s = 0.0f;
    for (int l = 0; l < VL; ++l) s += total[l];
    sink[omp_get_thread_num()] = s;
  }
  *flops = 2.0 * VL * CHAINS * static_cast<double>(iters) * nthreads;
  return seconds;
}

// The round trip of one cache line between OpenMP threads 0 and 1 (a team of two, the same pool
// the kernels run on), in nanoseconds: thread 0 writes a counter, thread 1 answers, `trips` times
// or until `max_seconds` have passed (threads that share a core hand over only when the OS
// switches them). Cores that share a last-level cache answer in about 100 ns; cores that do not
// (an AMD CCD apart, or the vCPUs of a VM placed so) take several times that, and every cache
// line one thread writes and the other reads then costs as much. NaN without two threads.
double thread_round_trip_ns(long trips, double max_seconds) {
  std::atomic<long> turn{0};
  std::atomic<bool> stop{false};
  long done = 0;
  double seconds = 0.0;
  auto pause = [] {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
  };
#pragma omp parallel num_threads(2)
  if (omp_get_num_threads() == 2) {
    if (omp_get_thread_num() == 0) {
      const double t0 = omp_get_wtime();
      for (long i = 0; i < trips; ++i) {
        turn.store(2 * i + 1, std::memory_order_release);
        while (turn.load(std::memory_order_acquire) != 2 * i + 2) pause();
        done = i + 1;
        if (i % 16 == 15 && omp_get_wtime() - t0 > max_seconds) break;
      }
      seconds = omp_get_wtime() - t0;
      stop.store(true, std::memory_order_release);
    } else {
      for (long i = 0;; ++i) {
        while (turn.load(std::memory_order_acquire) != 2 * i + 1) {
          if (stop.load(std::memory_order_acquire)) break;
          pause();
        }
        if (turn.load(std::memory_order_acquire) != 2 * i + 1) break;  // stopped
        turn.store(2 * i + 2, std::memory_order_release);
      }
    }
  }
  return done ? seconds / done * 1e9 : NAN;
}
}
