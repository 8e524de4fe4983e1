#pragma once
// Internal: the float kernels (GEMM tiles, depthwise conv, sparse times dense) written once over a
// vector type `V` and instantiated by each ISA file with its own `V`, a struct in that file's
// anonymous namespace: every instantiation then has internal linkage, so no copy compiled with one
// ISA's flags can be picked by the linker for another (see kernel_decls.h). Include only from
// kernels/<isa>/ files.
//
// `V` provides:
//   Reg                       the vector register type, kLanes floats
//   zero(), load(p), store(p, v), broadcast(p)   (unaligned loads and stores)
//   fmadd(a, b, c)            a * b + c with one rounding
//   mul(a, b), add(a, b)
//   load_first(p, n), store_first(p, v, n)       lanes [0, n) only, 0 < n <= kLanes; masked,
//                                                so nothing past p + n is touched

#include "kernel_decls.h"

namespace onebit::runtime::kernels::simd {

/// One register tile of the float GEMM: `Rows` rows x `Cols` vectors of columns starting at
/// (row, col), all rows and the first column in range. Each accumulator is one FMA chain over k
/// in order, so the result does not depend on the tile shape.
template <class V, int Rows, int Cols, bool kOffsets>
void sgemm_tile(const SgemmArgs& g, std::size_t row, std::size_t col) {
  using Reg = typename V::Reg;
  Reg acc[Rows][Cols];
  const float* a[Rows];
  const float* b[Cols];
#pragma GCC unroll 16
  for (int r = 0; r < Rows; ++r) {
    a[r] = g.a + (row + static_cast<std::size_t>(r)) * g.lda;
#pragma GCC unroll 4
    for (int j = 0; j < Cols; ++j) acc[r][j] = V::zero();
  }
#pragma GCC unroll 4
  for (int j = 0; j < Cols; ++j) {
    const std::size_t o = col + static_cast<std::size_t>(j) * V::kLanes;
    b[j] = g.b + (o / kSgemmPanel) * g.k * kSgemmPanel + o % kSgemmPanel;
  }
  for (std::size_t k = 0; k < g.k; ++k) {
    Reg w[Cols];
#pragma GCC unroll 4
    for (int j = 0; j < Cols; ++j) w[j] = V::load(b[j] + k * kSgemmPanel);
    const std::size_t ak = kOffsets ? g.a_offsets[k] : k;
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      const Reg x = V::broadcast(a[r] + ak);
#pragma GCC unroll 4
      for (int j = 0; j < Cols; ++j) acc[r][j] = V::fmadd(x, w[j], acc[r][j]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < Cols; ++j) {
    const std::size_t o = col + static_cast<std::size_t>(j) * V::kLanes;
    if (o >= g.n) break;
    const std::size_t valid = g.n - o < V::kLanes ? g.n - o : V::kLanes;
    const bool full = valid == V::kLanes;
    const Reg m = full ? V::load(g.multiplier + o) : V::load_first(g.multiplier + o, valid);
    const Reg c = full ? V::load(g.bias + o) : V::load_first(g.bias + o, valid);
#pragma GCC unroll 16
    for (int r = 0; r < Rows; ++r) {
      const Reg y = V::add(V::mul(acc[r][j], m), c);
      float* dst = g.out + (row + static_cast<std::size_t>(r)) * g.ldo + o;
      if (full) {
        V::store(dst, y);
      } else {
        V::store_first(dst, y, valid);
      }
    }
  }
}

/// The tile of `Rows` rows or, for the last rows, the largest tile of at most `rows` rows.
template <class V, int Cols, int Rows, bool kOffsets>
void sgemm_rows(const SgemmArgs& g, std::size_t rows, std::size_t row, std::size_t col) {
  if constexpr (Rows > 1) {
    if (rows < static_cast<std::size_t>(Rows)) {
      sgemm_rows<V, Cols, Rows - 1, kOffsets>(g, rows, row, col);
      return;
    }
  }
  sgemm_tile<V, Rows, Cols, kOffsets>(g, row, col);
}

template <class V, int MaxRows, bool kOffsets>
void sgemm_tiles(const SgemmArgs& g) {
  const std::size_t tile_n = 2 * V::kLanes;
  for (std::size_t col = 0; col < g.n; col += tile_n) {
    const bool narrow = g.n - col <= V::kLanes;
    for (std::size_t row = 0; row < g.m; row += MaxRows) {
      const std::size_t rows = g.m - row;
      if (narrow) {
        sgemm_rows<V, 1, MaxRows, kOffsets>(g, rows, row, col);
      } else {
        sgemm_rows<V, 2, MaxRows, kOffsets>(g, rows, row, col);
      }
    }
  }
}

/// Float GEMM (see SgemmArgs) with tiles of `MaxRows` rows x 2 vectors of columns; the last
/// columns use a one-vector tile when they fit in one. Column tiles outside, so that a weight
/// panel stays in L1 while the row tiles stream past it.
template <class V, int MaxRows>
void sgemm(const SgemmArgs& g) {
  if (g.a_offsets != nullptr) {
    sgemm_tiles<V, MaxRows, true>(g);
  } else {
    sgemm_tiles<V, MaxRows, false>(g);
  }
}

/// Where one call of the depthwise kernel works: `Pixels` consecutive output pixels of a row, the
/// first one's window starting at input offset `base` (in floats; may be negative: only the taps
/// [ky0, ky1) x [kx0, kx1) inside the image are read, the same range for every pixel) and its
/// output at `dst`; pixel q reads `base + q * stride_w * channels` and writes `dst + q *
/// channels`.
struct DwconvSpan {
  std::int64_t base, ky0, ky1, kx0, kx1;
  float* dst;
};

/// `Vecs` vectors of channels from `ch` (the last one holding `tail` channels, kLanes when full)
/// of `Pixels` output pixels. Several pixels give independent FMA chains (one pixel's chain is
/// as long as the taps, and its latency, not the FMA throughput, would bound a small-channel
/// conv); each output's sum still runs over its taps in order.
template <class V, int Vecs, int Pixels>
void dwconv_block(const DwconvArgs& g, const DwconvSpan& s, std::size_t ch, std::size_t tail) {
  using Reg = typename V::Reg;
  const auto c = static_cast<std::int64_t>(g.channels);
  const std::int64_t pixel_step = g.stride_w * c;
  Reg acc[Pixels][Vecs];
#pragma GCC unroll 8
  for (int q = 0; q < Pixels; ++q) {
#pragma GCC unroll 8
    for (int j = 0; j < Vecs; ++j) acc[q][j] = V::zero();
  }
  const bool full = tail == V::kLanes;
  constexpr int last = Vecs - 1;
  for (std::int64_t ky = s.ky0; ky < s.ky1; ++ky) {
    const std::int64_t row = s.base + ky * g.dilation_h * g.in_w * c;
    for (std::int64_t kx = s.kx0; kx < s.kx1; ++kx) {
      const float* x = g.in + (row + kx * g.dilation_w * c) + ch;
      const float* w = g.weight + (ky * g.kernel_w + kx) * c + ch;
      Reg wv[Vecs];
#pragma GCC unroll 8
      for (int j = 0; j < last; ++j) wv[j] = V::load(w + j * V::kLanes);
      wv[last] = full ? V::load(w + last * V::kLanes) : V::load_first(w + last * V::kLanes, tail);
#pragma GCC unroll 8
      for (int q = 0; q < Pixels; ++q) {
        const float* xq = x + q * pixel_step;
#pragma GCC unroll 8
        for (int j = 0; j < last; ++j) {
          acc[q][j] = V::fmadd(V::load(xq + j * V::kLanes), wv[j], acc[q][j]);
        }
        const Reg xl =
            full ? V::load(xq + last * V::kLanes) : V::load_first(xq + last * V::kLanes, tail);
        acc[q][last] = V::fmadd(xl, wv[last], acc[q][last]);
      }
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < Vecs; ++j) {
    const std::size_t o = ch + static_cast<std::size_t>(j) * V::kLanes;
    const bool whole = j < last || full;
    const Reg m = whole ? V::load(g.multiplier + o) : V::load_first(g.multiplier + o, tail);
    const Reg b = whole ? V::load(g.bias + o) : V::load_first(g.bias + o, tail);
#pragma GCC unroll 8
    for (int q = 0; q < Pixels; ++q) {
      const Reg y = V::add(V::mul(acc[q][j], m), b);
      float* d = s.dst + static_cast<std::size_t>(q) * g.channels + o;
      if (whole) {
        V::store(d, y);
      } else {
        V::store_first(d, y, tail);
      }
    }
  }
}

/// Every channel of `Pixels` output pixels: blocks of `Big` vectors, then 2 and 1, then a masked
/// vector for the last channels.
template <class V, int Pixels, int Big>
void dwconv_channels(const DwconvArgs& g, const DwconvSpan& s) {
  const std::size_t c = g.channels, lanes = V::kLanes;
  std::size_t ch = 0;
  for (; ch + Big * lanes <= c; ch += Big * lanes) dwconv_block<V, Big, Pixels>(g, s, ch, lanes);
  if constexpr (Big > 2) {
    if (ch + 2 * lanes <= c) dwconv_block<V, 2, Pixels>(g, s, ch, lanes), ch += 2 * lanes;
  }
  if (ch < c) {
    const std::size_t left = c - ch;
    if (left > lanes) {
      dwconv_block<V, 2, Pixels>(g, s, ch, left - lanes);
    } else {
      dwconv_block<V, 1, Pixels>(g, s, ch, left);
    }
  }
}

/// Depthwise conv (see DwconvArgs). Pixels whose window lies inside the image horizontally go
/// four at a time (same taps); the others one at a time with their own tap range.
template <class V>
void dwconv(const DwconvArgs& g) {
  constexpr int kPixels = 4;
  const std::size_t c = g.channels;
  const auto ci = static_cast<std::int64_t>(c);
  // Output columns [ox_lo, ox_hi) have their whole window inside the image horizontally; only
  // the others compute their tap range (two integer divisions).
  const std::int64_t ox_lo = (g.pad_left + g.stride_w - 1) / g.stride_w;
  const std::int64_t last = g.in_w - 1 - (g.kernel_w - 1) * g.dilation_w + g.pad_left;
  std::int64_t ox_hi = last < 0 ? 0 : last / g.stride_w + 1;
  ox_hi = ox_hi < g.out_w ? ox_hi : g.out_w;
  for (std::int64_t oy = g.row_begin; oy < g.row_end; ++oy) {
    const std::int64_t iy0 = oy * g.stride_h - g.pad_top;
    DwconvSpan s{0, 0, 0, 0, g.kernel_w, nullptr};
    window_tap_range(iy0, g.dilation_h, g.kernel_h, g.in_h, &s.ky0, &s.ky1);
    std::int64_t ox = 0;
    while (ox < g.out_w) {
      const std::int64_t ix0 = ox * g.stride_w - g.pad_left;
      s.base = (iy0 * g.in_w + ix0) * ci;
      s.dst = g.out + static_cast<std::size_t>(oy * g.out_w + ox) * c;
      if (ox >= ox_lo && ox + kPixels <= ox_hi) {
        s.kx0 = 0, s.kx1 = g.kernel_w;
        dwconv_channels<V, kPixels, 2>(g, s);
        ox += kPixels;
        continue;
      }
      s.kx0 = 0, s.kx1 = g.kernel_w;
      if (ox < ox_lo || ox >= ox_hi) {
        window_tap_range(ix0, g.dilation_w, g.kernel_w, g.in_w, &s.kx0, &s.kx1);
      }
      dwconv_channels<V, 1, 4>(g, s);
      ++ox;
    }
  }
}

/// `Cols` vectors of one output row of the sparse-times-dense product (see CsrSgemmArgs) from
/// column `col`; with `kPartial` the last vector holds `last` valid lanes (masked). The
/// accumulators stay in registers over the row's entries.
template <class V, int Cols, bool kPartial>
void csr_sgemm_tile(const CsrSgemmArgs& g, std::size_t r, std::size_t col, std::size_t last) {
  using Reg = typename V::Reg;
  constexpr int kFull = kPartial ? Cols - 1 : Cols;
  Reg acc[Cols];
  float* dst = g.out + r * g.ldo + col;
#pragma GCC unroll 8
  for (int j = 0; j < kFull; ++j) acc[j] = g.accumulate ? V::load(dst + j * V::kLanes) : V::zero();
  if constexpr (kPartial) {
    acc[kFull] = g.accumulate ? V::load_first(dst + kFull * V::kLanes, last) : V::zero();
  }
  const std::size_t end = g.row_begin[r + 1];
  for (std::size_t e = g.row_begin[r]; e < end; ++e) {
    const Reg x = V::broadcast(g.value + e);
    const float* src = g.b + static_cast<std::size_t>(g.index[e]) * g.ldb + col;
#pragma GCC unroll 8
    for (int j = 0; j < kFull; ++j) acc[j] = V::fmadd(x, V::load(src + j * V::kLanes), acc[j]);
    if constexpr (kPartial) {
      acc[kFull] = V::fmadd(x, V::load_first(src + kFull * V::kLanes, last), acc[kFull]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < kFull; ++j) V::store(dst + j * V::kLanes, acc[j]);
  if constexpr (kPartial) V::store_first(dst + kFull * V::kLanes, acc[kFull], last);
}

/// The tile for the remaining `vectors` (1 to Cols) vectors of a row.
template <class V, int Cols>
void csr_sgemm_rest(const CsrSgemmArgs& g, std::size_t r, std::size_t col, std::size_t vectors,
                    std::size_t last) {
  if constexpr (Cols > 1) {
    if (vectors < static_cast<std::size_t>(Cols)) {
      csr_sgemm_rest<V, Cols - 1>(g, r, col, vectors, last);
      return;
    }
  }
  if (last == V::kLanes) {
    csr_sgemm_tile<V, Cols, false>(g, r, col, last);
  } else {
    csr_sgemm_tile<V, Cols, true>(g, r, col, last);
  }
}

/// Sparse-times-dense float product (see CsrSgemmArgs) in column tiles of 8 vectors, the last
/// tile narrower and its last vector masked. Tiles outside, rows inside: the rows of `b` that
/// one tile reads (a conv kernel's 64 rows: 16 KiB at 8 x 8 floats) stay in L1 over all rows.
template <class V>
void csr_sgemm(const CsrSgemmArgs& g) {
  constexpr std::size_t kTile = 8 * V::kLanes;
  std::size_t col = 0;
  for (; col + kTile <= g.n; col += kTile) {
    for (std::size_t r = 0; r < g.m; ++r) csr_sgemm_tile<V, 8, false>(g, r, col, V::kLanes);
  }
  if (col < g.n) {
    const std::size_t rest = g.n - col;
    const std::size_t vectors = (rest + V::kLanes - 1) / V::kLanes;
    const std::size_t last = rest - (vectors - 1) * V::kLanes;
    for (std::size_t r = 0; r < g.m; ++r) csr_sgemm_rest<V, 8>(g, r, col, vectors, last);
  }
}

}  // namespace onebit::runtime::kernels::simd
