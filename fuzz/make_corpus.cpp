// Writes small valid .obnn models covering every op into a directory (the fuzzer's seed corpus).

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
  return 0;
}
