// Every convolution entry point of im2win/cpu/im2win_cpu.cpp against a float64 direct convolution,
// from C++ alone: so that a build for another architecture (AArch64, run under qemu-user) is
// checked where no Python of that architecture is at hand. tests/test_portability.py builds and
// runs it; the Python tests check the same entry points through ctypes on the host.
// Prints one line a (shape, threads, entry point) and exits 1 if any output is off.
#include "im2win/cpu/im2win_cpu.cpp"

#include <cmath>
#include <cstdio>
#include <random>

namespace {

struct Shape {
  int N, C, H, W, K, R, S, sy, sx, py, px;
  int P() const { return (H + 2 * py - R) / sy + 1; }
  int Q() const { return (W + 2 * px - S) / sx + 1; }
};

// out[n][k][p][q] in float64, and the sum of |x * f| over each output's terms (its error scale).
void reference(const Shape& s, const std::vector<float>& x, const std::vector<float>& f,
               const std::vector<float>& bias, std::vector<double>& out,
               std::vector<double>& scale) {
  const int P = s.P(), Q = s.Q();
  out.assign(static_cast<size_t>(s.N) * s.K * P * Q, 0.0);
  scale.assign(out.size(), 0.0);
  for (int n = 0; n < s.N; ++n)
    for (int k = 0; k < s.K; ++k)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q) {
          double sum = bias[k], mag = std::fabs(bias[k]);
          for (int c = 0; c < s.C; ++c)
            for (int r = 0; r < s.R; ++r)
              for (int t = 0; t < s.S; ++t) {
                const int h = p * s.sy + r - s.py, w = q * s.sx + t - s.px;
                if (h < 0 || h >= s.H || w < 0 || w >= s.W) continue;
                const double term = static_cast<double>(x[((n * s.C + c) * s.H + h) * s.W + w]) *
                                     f[((k * s.C + c) * s.R + r) * s.S + t];
                sum += term, mag += std::fabs(term);
              }
          const size_t i = ((static_cast<size_t>(n) * s.K + k) * P + p) * Q + q;
          out[i] = sum, scale[i] = mag;
        }
}

int failures = 0;

// Compares `got` ([N][K][P][Q], or [N][P][Q][K] where nhwc) with the reference: each output within
// 4 * (C*R*S + 1) float32 roundings of its terms' magnitudes.
void check(const char* entry, const Shape& s, int threads, const std::vector<float>& got, bool nhwc,
           const std::vector<double>& ref, const std::vector<double>& scale) {
  const int P = s.P(), Q = s.Q();
  const double eps = std::ldexp(1.0, -24), terms = static_cast<double>(s.C) * s.R * s.S + 1;
  double worst = 0.0;  // the largest error over its bound
  for (int n = 0; n < s.N; ++n)
    for (int k = 0; k < s.K; ++k)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q) {
          const size_t i = ((static_cast<size_t>(n) * s.K + k) * P + p) * Q + q;
          const size_t j = nhwc ? ((static_cast<size_t>(n) * P + p) * Q + q) * s.K + k : i;
          const double bound = 4 * terms * eps * scale[i] + 1e-30;
          worst = std::max(worst, std::fabs(got[j] - ref[i]) / bound);
        }
  const bool ok = worst <= 1.0;  // NaN fails too
  failures += !ok;
  std::printf("%s N=%d C=%d H=%d W=%d K=%d R=%d S=%d stride=%d,%d pad=%d,%d threads=%d %s: "
              "worst error %.3g of its bound\n",
              ok ? "ok  " : "FAIL", s.N, s.C, s.H, s.W, s.K, s.R, s.S, s.sy, s.sx, s.py, s.px,
              threads, entry, worst);
}

// The entry points that take the input NCHW through its strides, with their plans' workspaces.
using Streamed = void (*)(const float*, long, long, long, long, int, int, int, int, int, int, int,
                          int, int, int, int, int, int, const float*, const float*, float*, float*,
                          double*, int);

void run_shape(const Shape& s, int threads, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int P = s.P(), Q = s.Q();
  const long Wu = static_cast<long>(Q - 1) * s.sx + s.S, M = static_cast<long>(s.N) * P * Q;
  std::vector<float> x(static_cast<size_t>(s.N) * s.C * s.H * s.W),
      f(static_cast<size_t>(s.K) * s.C * s.R * s.S), bias(s.K);
  for (auto* v : {&x, &f, &bias})
    for (float& e : *v) e = u(rng);
  std::vector<double> ref, scale;
  reference(s, x, f, bias, ref, scale);
  const long sn = static_cast<long>(s.C) * s.H * s.W, sc = static_cast<long>(s.H) * s.W;
  std::vector<float> out(static_cast<size_t>(M) * s.K);
  const auto streamed = [&](const char* entry, Streamed kernel, const float* filter,
                            long work_floats) {
    std::vector<float> work(std::max(work_floats, 1l));
    std::fill(out.begin(), out.end(), NAN);
    kernel(x.data(), sn, sc, s.W, 1, s.N, s.C, s.H, s.W, s.K, s.R, s.S, s.sy, s.sx, s.py, s.px, P,
           Q, filter, bias.data(), out.data(), work.data(), nullptr, threads);
    check(entry, s, threads, out, true, ref, scale);
  };
  long rows, band, work, window;
  int packs;
  im2win_fused_plan(s.N, s.C, s.K, s.R, s.S, s.sx, P, Q, threads, &rows, &band, &work, &packs);
  streamed("im2win_conv_fused", im2win_conv_fused, f.data(), work);
  im2win_whole_plan(s.N, s.C, s.K, s.R, s.S, s.sx, P, Q, threads, &work, &window);
  streamed("im2win_conv_whole", im2win_conv_whole, f.data(), work);
  if (im2win_planes_plan(s.N, s.C, s.K, s.R, s.S, s.sx, P, Q, threads, &work))
    streamed("im2win_conv_planes", im2win_conv_planes, f.data(), work);
  std::vector<float> packed(im2win_packed_filter_floats(s.K, s.C, s.R, s.S));
  im2win_pack_filter(f.data(), s.K, s.C, s.R, s.S, packed.data(), threads);
  im2win_prepacked_plan(s.N, s.C, s.K, s.R, s.S, s.sx, P, Q, threads, &rows, &band, &work);
  streamed("im2win_conv_prepacked", im2win_conv_prepacked, packed.data(), work);

  // The whole NHWC window tensor, then the micro-kernel over it.
  std::vector<float> iw(static_cast<size_t>(M / Q) * Wu * s.R * s.C);
  im2win_transform_nhwc(x.data(), sn, sc, s.W, 1, s.N, s.C, s.H, s.W, s.R, s.S, s.sy, s.sx, s.py,
                        s.px, P, Q, iw.data(), s.C, threads, 0);
  std::vector<float> nhwc_work(
      std::max(1l, im2win_filter_work_floats(s.K, s.C, s.R, s.S, M, s.C, threads)));
  std::fill(out.begin(), out.end(), NAN);
  im2win_conv_nhwc(iw.data(), f.data(), bias.data(), out.data(), s.N, s.C, s.K, s.R, s.S, s.sx, P,
                   Q, s.C, nhwc_work.data(), nullptr, threads);
  check("im2win_transform_nhwc + im2win_conv_nhwc", s, threads, out, true, ref, scale);

  // The HPEC paper's NCHW window and filter transforms, then its dot products.
  std::vector<float> iwc(static_cast<size_t>(s.N) * s.C * P * Wu * s.R), fw(f.size());
  im2win_transform_nchw(x.data(), sn, sc, s.W, 1, s.N, s.C, s.H, s.W, s.R, s.S, s.sy, s.sx, s.py,
                        s.px, P, Q, iwc.data(), threads);
  im2win_filter_nchw(f.data(), s.K, s.C, s.R, s.S, fw.data(), threads);
  std::fill(out.begin(), out.end(), NAN);
  im2win_conv_nchw(iwc.data(), fw.data(), bias.data(), out.data(), s.N, s.C, s.K, s.R, s.S, s.sx,
                   P, Q, threads);
  check("im2win_transform_nchw + im2win_conv_nchw", s, threads, out, false, ref, scale);

  std::fill(out.begin(), out.end(), NAN);
  direct_conv_nchw(x.data(), f.data(), bias.data(), out.data(), s.N, s.C, s.H, s.W, s.K, s.R, s.S,
                   s.sy, s.sx, s.py, s.px, P, Q, threads);
  check("direct_conv_nchw", s, threads, out, false, ref, scale);

  // direct_conv_nhwc reads a channels_last input with its padding in place.
  const int Hp = s.H + 2 * s.py, Wp = s.W + 2 * s.px;
  std::vector<float> xp(static_cast<size_t>(s.N) * Hp * Wp * s.C, 0.0f);
  for (int n = 0; n < s.N; ++n)
    for (int c = 0; c < s.C; ++c)
      for (int h = 0; h < s.H; ++h)
        for (int w = 0; w < s.W; ++w)
          xp[((static_cast<size_t>(n) * Hp + h + s.py) * Wp + w + s.px) * s.C + c] =
              x[((static_cast<size_t>(n) * s.C + c) * s.H + h) * s.W + w];
  std::vector<float> dwork(std::max(1l, direct_nhwc_work_floats(s.K, s.C, s.R, s.S)));
  std::fill(out.begin(), out.end(), NAN);
  direct_conv_nhwc(xp.data(), static_cast<long>(Hp) * Wp * s.C, static_cast<long>(Wp) * s.C, s.N,
                   s.C, Hp, Wp, s.K, s.R, s.S, s.sy, s.sx, P, Q, f.data(), bias.data(), out.data(),
                   dwork.data(), nullptr, threads);
  check("direct_conv_nhwc", s, threads, out, true, ref, scale);
}

}  // namespace

int main() {
  std::mt19937 rng(0);
  // RGB with a large strided filter (conv1's kind), padding and odd sizes, channels and output
  // channels off the vector and block sizes, a deep layer of few pixels (the whole window and
  // window planes paths), 1 x 1 and a stride taller than wide.
  const Shape shapes[] = {
      {2, 3, 27, 27, 8, 11, 11, 4, 4, 0, 0},  {3, 5, 9, 11, 7, 3, 3, 1, 1, 1, 1},
      {2, 16, 12, 10, 40, 3, 3, 1, 1, 1, 1},  {2, 64, 5, 5, 96, 3, 3, 1, 1, 0, 0},
      {1, 256, 7, 7, 64, 3, 3, 1, 1, 1, 1},   {2, 24, 8, 8, 33, 1, 1, 1, 1, 0, 0},
      {2, 8, 13, 9, 16, 5, 3, 2, 1, 2, 0},
  };
  for (const Shape& s : shapes)
    for (int threads : {1, 2, 3}) run_shape(s, threads, rng);
  std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
