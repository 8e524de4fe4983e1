// Writes small valid .obnn models covering every op (and every format version 2 feature: concat
// of bits and floats, add with bits inputs, global and strided average pooling, grouped and
// dilated convs; and version 3's ops and op names) into a directory: the fuzzer's seed corpus.

#include <cstdio>
#include <random>
#include <string>

#include "onebit/runtime/builder.h"

using namespace onebit::runtime;

namespace {

std::vector<float> signs(std::size_t n, std::mt19937& rng) {
  std::vector<float> v(n);
  for (float& x : v) x = (rng() & 1u) ? 1.0f : -1.0f;
  return v;
}

std::vector<float> normal(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::mt19937 rng(1);
  {  // a tiny Larq-MNIST-like CNN: float conv with bit weights, pool+bn+sign fusion, dense
    ModelBuilder b;
    ValueRef x = b.input({1, 10, 10});
    x = b.conv2d(x, Conv2dParams(4, 3).binary_kernel(true), signs(36, rng));
    x = b.sign(b.batch_norm(b.max_pool2d(x, Pool2dParams(2)), normal(4, rng), normal(4, rng)));
    x = b.conv2d(x, Conv2dParams(8, 3).padding(1, 1).binary_kernel(true), signs(288, rng));
    x = b.sign(b.batch_norm(b.max_pool2d(x, Pool2dParams(2)), normal(8, rng), normal(8, rng)));
    x = b.dense(b.flatten(x), DenseParams(3).binary_kernel(true), signs(3 * 32, rng));
    b.output(b.softmax(x));
    b.save(dir + "/cnn.obnn");
  }
  {  // grouped, dilated, zero-padded binary conv with float output, shortcut and float layers
    ModelBuilder b;
    ValueRef in = b.input({8, 6, 6});
    ValueRef x = b.sign(in);
    x = b.conv2d(x,
                 Conv2dParams(8, 3).padding(2, 2).dilation(2).groups_count(2).binary_kernel(true),
                 signs(8 * 4 * 9, rng));
    x = b.prelu(b.add(x, in), normal(8, rng));
    x = b.relu(b.avg_pool2d(x, Pool2dParams(2)));
    x = b.dense(b.flatten(x), DenseParams(2), normal(2 * 72, rng), normal(2, rng));
    b.output(x);
    b.save(dir + "/resnet_block.obnn");
  }
  {  // binary max pool on bits, unfused batch norm
    ModelBuilder b({false});
    ValueRef x = b.sign(b.input({3, 4, 4}));
    x = b.max_pool2d(x, Pool2dParams(2));
    x = b.conv2d(x, Conv2dParams(2, 1).binary_kernel(true), signs(6, rng));
    b.output(b.batch_norm(x, normal(2, rng), normal(2, rng)));
    b.save(dir + "/unfused.obnn");
  }
  {  // DenseNet block (format version 2): bit concat with word shifts, mixed concat, global pool
    ModelBuilder b;
    const ValueRef x = b.input({5, 5, 5});
    const ValueRef s = b.sign(x);
    ValueRef t = b.conv2d(s, Conv2dParams(3, 3).padding(1, 1).binary_kernel(true), signs(135, rng));
    t = b.sign(b.batch_norm(t, normal(3, rng), normal(3, rng)));
    const ValueRef bits = b.concat({s, t, s});  // 13 channels, all bits
    ValueRef u = b.conv2d(bits, Conv2dParams(4, 1).binary_kernel(true), signs(52, rng));
    u = b.batch_norm(u, normal(4, rng), normal(4, rng));
    const ValueRef mixed = b.concat({bits, u, x});  // 22 channels, float
    const ValueRef g = b.flatten(b.global_avg_pool2d(mixed));
    b.output(b.dense(g, DenseParams(3), normal(3 * 22, rng), normal(3, rng)));
    b.save(dir + "/densenet_block.obnn");
  }
  {  // Bi-Real block (version 2): BN output shared by an add and a sign, add with a bits input,
     // strided average pooling of bits, grouped and dilated float convs, global pool on bits
    ModelBuilder b;
    const ValueRef x = b.input({4, 7, 7});
    ValueRef y =
        b.conv2d(b.sign(x), Conv2dParams(4, 3).padding(1, 1).binary_kernel(true), signs(144, rng));
    y = b.batch_norm(y, normal(4, rng), normal(4, rng));
    const ValueRef r = b.add(y, x);
    const ValueRef s = b.sign(y);
    const ValueRef shortcut = b.add(r, s);
    Pool2dParams pool(3);
    pool.stride(2).padding(1, 1);
    pool.count_include_pad = false;
    const ValueRef p = b.avg_pool2d(s, pool);
    ValueRef f = b.conv2d(shortcut, Conv2dParams(4, 3).padding(2, 2).dilation(2).groups_count(2),
                          normal(4 * 2 * 9, rng));
    f = b.conv2d(f, Conv2dParams(4, 1).stride(2).groups_count(4), normal(4, rng));
    const ValueRef q = b.concat({p, f});
    b.output(b.concat({b.global_avg_pool2d(q), b.global_avg_pool2d(b.sign(q))}));
    b.save(dir + "/bireal_block.obnn");
  }
  {  // grouped and dilated binary convs with bit output, then average pooling of bits
    ModelBuilder b;
    ValueRef x = b.sign(b.input({6, 6, 6}));
    x = b.conv2d(x,
                 Conv2dParams(6, 3).padding(2, 2).dilation(2).groups_count(3).binary_kernel(true),
                 signs(6 * 2 * 9, rng));
    x = b.sign(b.batch_norm(x, normal(6, rng), normal(6, rng)));
    x = b.conv2d(x, Conv2dParams(4, 1).stride(2).binary_kernel(true), signs(24, rng));
    b.output(b.avg_pool2d(b.sign(x), Pool2dParams(3).stride(1)));
    b.save(dir + "/grouped_dilated.obnn");
  }
  {  // version 3: squeeze-and-excite gate (sigmoid, per-channel mul), clip, DoReFa levels,
     // channel slices of floats and of packed bits at an unaligned offset, op names
    ModelBuilder b;
    const ValueRef x = b.input({6, 5, 5});
    b.set_name_scope("block1_conv");
    ValueRef c =
        b.conv2d(b.sign(x), Conv2dParams(6, 3).padding(1, 1).binary_kernel(true), signs(324, rng));
    b.set_name_scope("block1_bn");
    c = b.batch_norm(c, normal(6, rng), normal(6, rng));
    b.set_name_scope("se");
    ValueRef g = b.dense(b.flatten(b.global_avg_pool2d(c)), DenseParams(6), normal(36, rng));
    c = b.mul(c, b.sigmoid(g));
    b.set_name_scope("act");
    c = b.mul(b.clip(c, -1.0f, 1.0f), x);
    const ValueRef q = b.quantize_levels(b.slice_channels(c, 1, 4), 2);
    const ValueRef s = b.slice_channels(b.sign(c), 3, 6);
    b.set_name_scope("head");
    b.output(b.flatten(b.global_avg_pool2d(b.concat({q, s}))));
    b.save(dir + "/ops_v3.obnn");
  }
  {  // version 4: 2-bit thermometer planes into a grouped binary conv (thresholded: a sign
     // follows) and 3-bit planes into a binary dense
    ModelBuilder b;
    const ValueRef x = b.input({4, 5, 5});
    ValueRef c = b.conv2d(
        b.thermometer(x, 2),
        Conv2dParams(4, 3).padding(1, 1).groups_count(2).padding_value(1).binary_kernel(true),
        signs(4 * 2 * 9, rng));
    c = b.sign(b.batch_norm(c, normal(4, rng), normal(4, rng)));
    const ValueRef f = b.flatten(b.global_avg_pool2d(c));
    b.output(b.dense(b.thermometer(f, 3), DenseParams(3).binary_kernel(true), signs(12, rng)));
    b.save(dir + "/thermometer_v4.obnn");
  }
  return 0;
}
