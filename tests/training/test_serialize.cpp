// onebit::save / onebit::load: architecture + weights round trips, quantized export, errors.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "ext_test_util.h"
#include "onebit/constraints.h"
#include "onebit/io.h"
#include "onebit/nn.h"
#include "onebit/quantizers.h"
#include "onebit/serialize.h"
#include "onebit/train/checkpoint.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

using namespace onebit;
using onebit::testing::expect_throw_with;
namespace fs = std::filesystem;
namespace q = onebit::quantizers;

namespace {

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("onebit_test_serialize_" + name)).string();
}

/// Random parameters and batch-norm statistics, so that nothing equals its initial value.
void randomize(nn::Graph model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0, 0.8);
  for (auto& item : model->named_buffers()) {
    auto& b = item.value();
    if (!b.is_floating_point()) continue;
    if (item.key().find("running_var") != std::string::npos) {
      b.uniform_(0.5, 2.0);
    } else {
      b.normal_(0, 0.5);
    }
  }
}

at::Tensor run(nn::Graph model, const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(x);
}

/// Saves, loads, and expects the same architecture and bit-identical outputs.
nn::Graph expect_round_trip(nn::Graph model, const at::Tensor& x, const std::string& name,
                            bool quantized = false) {
  randomize(model);
  const auto want = run(model, x);
  const auto path = temp_path(name);
  save(model, path, quantized);
  auto loaded = load(path);
  fs::remove(path);
  EXPECT_EQ(serialize::describe(model), serialize::describe(loaded)) << name;
  EXPECT_FALSE(loaded->is_training());
  const auto got = run(loaded, x);
  EXPECT_TRUE(torch::equal(want, got)) << name << ": outputs differ";
  return loaded;
}

std::shared_ptr<const q::Custom> identity_sign() {
  static auto custom = [] {
    auto c = std::make_shared<const q::Custom>(
        "test_identity_sign",
        [](const at::Tensor& x) { return at::where(x >= 0, 1.0, -1.0).to(x.scalar_type()); },
        [](const at::Tensor&, const at::Tensor& dy) { return dy; }, 1);
    q::register_custom(c);
    return c;
  }();
  return custom;
}

}  // namespace

TEST(Serialize, RoundTrip2dLayersAndTorchModules) {
  auto wc = std::make_shared<constraints::WeightClip>(0.9);
  torch::nn::Sequential model(
      nn::QuantConv2d(nn::QuantConv2dOptions(3, 4, 3)
                          .padding(torch::kSame)
                          .pad_values(1.0)
                          .stride(2)
                          .kernel_quantizer(std::make_shared<q::SteSign>(0.8))
                          .kernel_constraint(wc)),
      nn::BatchNorm(nn::BatchNormOptions(4).eps(1e-4).momentum(0.2).scale(false)),
      nn::QuantDepthwiseConv2d(nn::QuantDepthwiseConv2dOptions(4, 3)
                                   .depth_multiplier(2)
                                   .padding(1)
                                   .bias(false)
                                   .input_quantizer("ste_sign")
                                   .depthwise_quantizer("magnitude_aware_sign")
                                   .depthwise_constraint("weight_clip")),
      nn::QuantSeparableConv2d(
          nn::QuantSeparableConv2dOptions(8, 6, 3)
              .padding(torch::kSame)
              .input_quantizer("approx_sign")
              .depthwise_quantizer(std::make_shared<q::SteTern>(0.1, false, 0.9))
              .pointwise_quantizer(std::make_shared<q::DoReFa>(3, "weights"))
              .pointwise_constraint(wc)),
      nn::QuantConvTranspose2d(nn::QuantConvTranspose2dOptions(6, 4, 3)
                                   .stride(2)
                                   .padding(1)
                                   .output_padding(1)
                                   .groups(2)
                                   .input_quantizer(std::make_shared<q::DoReFa>(4))
                                   .kernel_quantizer(std::make_shared<q::SteHeaviside>(0.7))
                                   .kernel_constraint("weight_clip")),
      torch::nn::Conv2d(
          torch::nn::Conv2dOptions(4, 4, 3).padding(1).padding_mode(torch::kReplicate)),
      torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(4).eps(1e-3).momentum(0.3)),
      torch::nn::ReLU(), torch::nn::MaxPool2d(2),
      torch::nn::AvgPool2d(
          torch::nn::AvgPool2dOptions(2).stride(1).padding(1).count_include_pad(false)),
      nn::QuantLocallyConnected2d(nn::QuantLocallyConnected2dOptions(4, 3, 2, {5, 5})
                                      .input_quantizer(std::make_shared<q::SwishSign>(3.0))
                                      .kernel_quantizer(std::make_shared<q::NoOp>(1))),
      torch::nn::Flatten(), torch::nn::Dropout(0.3), torch::nn::Linear(48, 10), nn::HardTanh(),
      nn::Quantizer(std::make_shared<q::SwishSign>(2.0)),
      nn::QuantDense(nn::QuantDenseOptions(10, 6)
                         .kernel_quantizer(std::make_shared<q::SteSign>(std::nullopt))
                         .kernel_constraint("weight_clip")),
      nn::LeakyTanh(0.4));
  auto x = torch::randn({2, 3, 8, 8});
  expect_round_trip(model, x, "2d");
}

TEST(Serialize, RoundTrip1dAnd3dLayers) {
  torch::nn::Sequential model1(
      nn::QuantConv1d(nn::QuantConv1dOptions(3, 4, 3).padding(torch::kSame).pad_values(1.0)),
      nn::QuantSeparableConv1d(nn::QuantSeparableConv1dOptions(4, 6, 3)
                                   .stride(2)
                                   .depth_multiplier(2)
                                   .dilation(1)
                                   .input_quantizer("ste_sign")
                                   .depthwise_quantizer("ste_sign")
                                   .pointwise_quantizer("ste_sign")
                                   .depthwise_constraint("weight_clip")
                                   .pointwise_constraint("weight_clip")),
      torch::nn::Conv1d(torch::nn::Conv1dOptions(6, 4, 2).bias(false)),
      torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(4).affine(false)),
      torch::nn::MaxPool1d(torch::nn::MaxPool1dOptions(2).stride(1)),
      nn::QuantLocallyConnected1d(nn::QuantLocallyConnected1dOptions(4, 3, 2, 3)
                                      .padding(torch::kSame)
                                      .pad_values(1.0)
                                      .input_quantizer("ste_sign")
                                      .kernel_quantizer("ste_sign")
                                      .kernel_constraint("weight_clip")),
      torch::nn::AvgPool1d(torch::nn::AvgPool1dOptions(2).stride(1)), torch::nn::Flatten(),
      nn::QuantDense(nn::QuantDenseOptions(6, 3).bias(false)));
  expect_round_trip(model1, torch::randn({2, 3, 12}), "1d");

  torch::nn::Sequential model3(nn::QuantConv3d(nn::QuantConv3dOptions(2, 3, 2).stride(2).groups(1)),
                               nn::QuantConvTranspose3d(nn::QuantConvTranspose3dOptions(3, 2, 2)
                                                            .stride(2)
                                                            .padding(torch::kSame)
                                                            .input_quantizer("ste_sign")
                                                            .kernel_quantizer("ste_sign")
                                                            .kernel_constraint("weight_clip")),
                               nn::BatchNorm(2), torch::nn::Flatten());
  expect_round_trip(model3, torch::randn({1, 2, 4, 4, 4}), "3d");
}

TEST(Serialize, EveryQuantizerWithNonDefaultArguments) {
  std::vector<q::QuantizerPtr> all = {std::make_shared<q::NoOp>(3),
                                      std::make_shared<q::SteSign>(0.5),
                                      std::make_shared<q::SteSign>(std::nullopt),
                                      std::make_shared<q::ApproxSign>(),
                                      std::make_shared<q::SteHeaviside>(0.7),
                                      std::make_shared<q::SwishSign>(2.5),
                                      std::make_shared<q::MagnitudeAwareSign>(0.8),
                                      std::make_shared<q::SteTern>(0.2, true, 0.6),
                                      std::make_shared<q::SteTern>(0.3, false, std::nullopt),
                                      std::make_shared<q::DoReFa>(3, "weights"),
                                      std::make_shared<q::DoReFa>(5, "activations"),
                                      identity_sign()};
  auto x = torch::randn({3, 8});
  for (const auto& quantizer : all) {
    for (bool quantized : {false, true}) {
      torch::nn::Sequential model(
          nn::QuantDense(nn::QuantDenseOptions(8, 4)
                             .input_quantizer(quantizer)
                             .kernel_quantizer(quantizer)
                             .kernel_constraint(std::make_shared<constraints::WeightClip>(0.7))),
          nn::Quantizer(quantizer));
      onebit::testing::CaptureWarnings warnings;  // dorefa weights: stored as latent, warned
      auto loaded = expect_round_trip(model, x, quantizer->id(), quantized);
      auto* dense = loaded[0]->as<nn::QuantDense>();
      EXPECT_EQ(dense->options.kernel_quantizer().get()->to_json(), quantizer->to_json());
      EXPECT_EQ(loaded[1]->as<nn::Quantizer>()->quantizer()->to_json(), quantizer->to_json());
    }
  }
}

TEST(Serialize, QuantizedExportStoresExactBinaryKernels) {
  torch::nn::Sequential model(nn::QuantDense(nn::QuantDenseOptions(256, 256)
                                                 .input_quantizer("ste_sign")
                                                 .kernel_quantizer("ste_sign")
                                                 .kernel_constraint("weight_clip")),
                              nn::QuantDense(nn::QuantDenseOptions(256, 16)
                                                 .kernel_quantizer("ste_heaviside")
                                                 .kernel_constraint("weight_clip")),
                              nn::QuantDense(nn::QuantDenseOptions(16, 4)
                                                 .kernel_quantizer("magnitude_aware_sign")
                                                 .kernel_constraint("weight_clip")));
  randomize(model);
  auto x = torch::randn({5, 256});
  const auto want = run(model, x);
  const auto full_path = temp_path("export_full");
  const auto bits_path = temp_path("export_bits");
  save(model, full_path);
  save(model, bits_path, /*quantized=*/true);
  EXPECT_LT(fs::file_size(bits_path) * 8, fs::file_size(full_path));
  auto loaded = load(bits_path);
  EXPECT_TRUE(torch::equal(run(loaded, x), want));
  auto* first = loaded[0]->as<nn::QuantDense>();
  auto* original = model[0]->as<nn::QuantDense>();
  EXPECT_TRUE(first->weight.abs().eq(1).all().item<bool>());
  EXPECT_TRUE(torch::equal(first->weight, original->quantized_weight()));
  auto* second = loaded[1]->as<nn::QuantDense>();
  EXPECT_TRUE(torch::equal(second->weight, model[1]->as<nn::QuantDense>()->quantized_weight()));
  EXPECT_TRUE(torch::equal(first->bias, original->bias));  // biases stay float
  // The full save keeps the latent values (training can resume).
  auto latent = load(full_path);
  EXPECT_TRUE(torch::equal(latent[0]->as<nn::QuantDense>()->weight, original->weight));
  fs::remove(full_path);
  fs::remove(bits_path);
}

TEST(Serialize, BuildErrorsNameTheLayerAndTheItem) {
  using nlohmann::json;
  auto arch = [](json layer) { return json{{"type", "Sequential"}, {"layers", {layer}}}; };
  expect_throw_with<std::invalid_argument>(
      [&] {
        serialize::build(arch({{"name", "0"}, {"type", "QuantFoo"}, {"options", {}}}));
      },
      {"layer \"0\"", "unknown layer type \"QuantFoo\"", "QuantDense"});
  json dense = {{"in_features", 2}, {"out_features", 3}};
  auto with = [&](const std::string& key, json value) {
    json o = dense;
    o[key] = value;
    return arch({{"name", "7"}, {"type", "QuantDense"}, {"options", o}});
  };
  expect_throw_with<std::invalid_argument>(
      [&] { serialize::build(with("colour", 1)); },
      {"layer \"7\"", "QuantDense", "unknown option \"colour\""});
  expect_throw_with<std::invalid_argument>([&] { serialize::build(with("in_features", "2")); },
                                           {"in_features", "integer"});
  expect_throw_with<std::invalid_argument>(
      [&] { serialize::build(with("kernel_quantizer", "no_such_quantizer")); },
      {"kernel_quantizer", "no_such_quantizer"});
  expect_throw_with<std::invalid_argument>(
      [&] {
        serialize::build(
            with("kernel_quantizer", {{"class_name", "ste_sign"}, {"config", {{"clip", 1}}}}));
      },
      {"kernel_quantizer", "clip"});
  expect_throw_with<std::invalid_argument>(
      [&] {
        serialize::build(json{{"layers", 1}});
      },
      {"Sequential"});
}

TEST(Serialize, HugeLayersAreRefusedBeforeTheyAreAllocated) {
  using nlohmann::json;
  auto arch = [](const std::string& type, json options) {
    return json{
        {"type", "Graph"},
        {"nodes", {{{"name", "big"}, {"type", type}, {"options", options}, {"inputs", {0}}}}},
        {"output", 1}};
  };
  // 200000 x 200000 floats would be 160 GB: refused from the options, nothing allocated.
  expect_throw_with<std::invalid_argument>(
      [&] {
        serialize::build(arch("QuantDense", {{"in_features", 200000}, {"out_features", 200000}}));
      },
      {"layer \"big\"", "QuantDense", "in_features", "out_features", "40000000000 parameters",
       "set_build_limits"});
  expect_throw_with<std::invalid_argument>(
      [&] {
        serialize::build(
            arch("torch.Conv2d",
                 {{"in_channels", 1 << 20}, {"out_channels", 1 << 20}, {"kernel_size", 3}}));
      },
      {"layer \"big\"", "torch.Conv2d", "more than the limit"});
  expect_throw_with<std::invalid_argument>(
      [&] {
        serialize::build(arch("torch.BatchNorm2d", {{"num_features", int64_t{1} << 40}}));
      },
      {"num_features", "more than the limit"});

  // A lower limit applies to single layers (also when built in code) and to whole models.
  const serialize::BuildLimits saved = serialize::build_limits();
  torch::nn::Sequential model(nn::QuantDense(nn::QuantDenseOptions(10, 10)),
                              nn::QuantDense(nn::QuantDenseOptions(10, 10)));
  const json described = serialize::describe(model);
  serialize::set_build_limits({150});
  expect_throw_with<std::invalid_argument>([&] { serialize::build(described); },
                                           {"the model reaches 220 parameters", "limit of 150"});
  expect_throw_with<std::invalid_argument>([&] { nn::QuantDense(nn::QuantDenseOptions(20, 10)); },
                                           {"a kernel of 10x20 elements", "limit of 150"});
  serialize::set_build_limits({1000});
  EXPECT_NO_THROW(serialize::build(described));
  serialize::set_build_limits(saved);
  EXPECT_THROW(serialize::set_build_limits({0}), std::invalid_argument);

  // Zoo options out of range (as read from a checkpoint's config) are refused by name.
  zoo::ModelOptions o;
  o.input_shape = {1, 0, 28};
  expect_throw_with<std::invalid_argument>([&] { zoo::build("larq-mnist", o); },
                                           {"larq-mnist", "input_shape", "[1,0,28]"});
  o.input_shape = {};
  o.num_classes = -3;
  expect_throw_with<std::invalid_argument>([&] { zoo::build("bnn-mlp", o); },
                                           {"bnn-mlp", "num_classes", "-3"});
}

TEST(Serialize, ACheckpointWithACorruptArchitectureFailsOnTheLimit) {
  torch::nn::Sequential model(nn::QuantDense(nn::QuantDenseOptions(4, 2)));
  const auto path = temp_path("checkpoint_huge");
  nlohmann::json config = {{"train", train::TrainOptions().to_json()}, {"epoch", 1}};
  train::save_checkpoint(path, model, nullptr, config);
  EXPECT_NO_THROW(train::load_checkpoint(path));
  // Rewrite the stored architecture with a layer of 10^12 weights (as a corrupt file would).
  torch::serialize::InputArchive in;
  in.load_from(path);
  c10::IValue stored;
  in.read("config", stored);
  nlohmann::json full = nlohmann::json::parse(stored.toStringRef());
  full["architecture"]["nodes"][0]["options"]["in_features"] = 1000000;
  full["architecture"]["nodes"][0]["options"]["out_features"] = 1000000;
  torch::serialize::OutputArchive out;
  out.write("onebit_checkpoint_version", c10::IValue(static_cast<int64_t>(2)));
  out.write("config", c10::IValue(full.dump()));
  torch::serialize::OutputArchive weights;
  model->save(weights);
  out.write("model", weights);
  out.save_to(path);
  expect_throw_with<std::runtime_error>([&] { train::load_checkpoint(path); },
                                        {path, "cannot load checkpoint", "more than the limit"});
  fs::remove(path);
}

TEST(Serialize, ArchivesWithImpossibleSizesAreRefusedBeforeLibTorchReadsThem) {
  torch::nn::Sequential model(nn::QuantDense(nn::QuantDenseOptions(4, 2)));
  const auto path = temp_path("zip_sizes");
  train::save_checkpoint(path, model, nullptr,
                         {{"train", train::TrainOptions().to_json()}, {"epoch", 1}});
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  EXPECT_NO_THROW(io::check_torch_archive(path));
  const auto write = [&](const std::string& b) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << b;
  };
  const std::size_t dir = bytes.find(std::string("PK\x01\x02", 4));
  ASSERT_NE(dir, std::string::npos);
  // A directory entry claiming 4 GiB (LibTorch would allocate it).
  std::string big = bytes;
  for (int i = 0; i < 4; ++i) big[dir + 20 + i] = big[dir + 24 + i] = '\xF0';
  write(big);
  expect_throw_with<std::runtime_error>([&] { train::load_checkpoint(path); },
                                        {path, "claims 4042322160 bytes", "truncated or corrupt"});
  expect_throw_with<std::runtime_error>([&] { onebit::load(path); }, {path, "claims"});
  // A compression method LibTorch never uses.
  std::string method = bytes;
  method[dir + 10] = 12;
  write(method);
  expect_throw_with<std::runtime_error>([&] { train::load_checkpoint(path); },
                                        {"compression method 12"});
  // A pickle string whose length claims 4 GiB (LibTorch's unpickler would allocate it first).
  std::string pickle = bytes;
  const std::size_t text = pickle.find("{\"architecture\"");
  ASSERT_NE(text, std::string::npos);
  ASSERT_EQ(pickle[text - 5], 'X');  // BINUNICODE, 4-byte length
  for (int i = 0; i < 4; ++i) pickle[text - 4 + i] = '\xF0';
  write(pickle);
  expect_throw_with<std::runtime_error>([&] { train::load_checkpoint(path); },
                                        {"data.pkl", "pickle opcode payload", "needs 4042322160"});
  // Cut off: no directory at all.
  write(bytes.substr(0, bytes.size() / 2));
  expect_throw_with<std::runtime_error>([&] { train::load_checkpoint(path); },
                                        {"no end-of-central-directory record"});
  write(bytes);
  EXPECT_NO_THROW(train::load_checkpoint(path));
  fs::remove(path);
}

TEST(Serialize, DamagedEntriesAreRefusedByTheirChecksum) {
  // LibTorch 1.13 does not check CRC-32s and compiles the archive's TorchScript code: this file,
  // found by fuzz/fuzz_checkpoint.cpp, crashed its parser (SEGV in Parser::parseClass).
  const std::string kept = std::string(ONEBIT_TEST_DATA_DIR) + "/libtorch-jit-parser-segv-1.pt";
  ASSERT_TRUE(fs::exists(kept)) << kept;
  expect_throw_with<std::runtime_error>([&] { train::load_checkpoint(kept); },
                                        {kept, "truncated or corrupt", "data/0", "CRC-32"});
  expect_throw_with<std::runtime_error>([&] { onebit::load(kept); }, {kept, "CRC-32"});

  const nn::Graph model = zoo::build("larq-mnist");
  const auto path = temp_path("zip_crc");
  train::save_checkpoint(path, model, nullptr,
                         {{"train", train::TrainOptions().to_json()}, {"epoch", 1}});
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const auto write = [&](const std::string& b) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << b;
  };
  // One flipped bit in the first tensor's stored data, then in each deflated entry's data.
  const auto data_of = [&](const std::string& b, std::size_t local) {
    const auto u16 = [&](std::size_t at) {
      return static_cast<std::size_t>(static_cast<unsigned char>(b[at])) |
             static_cast<std::size_t>(static_cast<unsigned char>(b[at + 1])) << 8;
    };
    return local + 30 + u16(local + 26) + u16(local + 28);
  };
  ASSERT_EQ(bytes.compare(0, 4, "PK\x03\x04"), 0);  // the first entry: data/0
  std::string flipped = bytes;
  flipped[data_of(bytes, 0) + 3] ^= 4;
  write(flipped);
  SCOPED_TRACE("flipped tensor data");
  expect_throw_with<std::runtime_error>([&] { train::load_checkpoint(path); },
                                        {"data/0", "CRC-32", "damaged"});
  int deflated = 0;
  for (std::size_t local = bytes.find(std::string("PK\x03\x04", 4)); local != std::string::npos;
       local = bytes.find(std::string("PK\x03\x04", 4), local + 4)) {
    if (bytes[local + 8] != 8) continue;  // method: deflate
    ++deflated;
    std::string damaged = bytes;
    damaged[data_of(bytes, local) + 5] ^= 0x10;
    write(damaged);
    expect_throw_with<std::runtime_error>([&] { train::load_checkpoint(path); },
                                          {"truncated or corrupt", "code/"});
  }
  EXPECT_GT(deflated, 0) << "LibTorch deflates its code entries";
  // A local header that names another entry.
  std::string renamed = bytes;
  const std::size_t local = renamed.find(std::string("PK\x03\x04", 4));
  ASSERT_NE(local, std::string::npos);
  renamed[local + 30] ^= 1;
  write(renamed);
  SCOPED_TRACE("renamed local header");
  expect_throw_with<std::runtime_error>([&] { train::load_checkpoint(path); },
                                        {"its local header names"});
  write(bytes);
  EXPECT_NO_THROW(train::load_checkpoint(path));
  fs::remove(path);
}

TEST(Serialize, SaveErrors) {
  torch::nn::Sequential unknown(torch::nn::Linear(2, 2), torch::nn::Tanh());
  expect_throw_with<std::invalid_argument>(
      [&] { save(unknown, temp_path("tanh")); },
      {"save", "node \"1\"", "Tanh", "not a registered layer kind", "register_layer"});
  auto unregistered = std::make_shared<q::Custom>(
      "test_unregistered", [](const at::Tensor& x) { return x; },
      [](const at::Tensor&, const at::Tensor& dy) { return dy; }, 8);
  torch::nn::Sequential custom(
      nn::QuantDense(nn::QuantDenseOptions(2, 2).kernel_quantizer(unregistered)));
  expect_throw_with<std::invalid_argument>(
      [&] { save(custom, temp_path("unregistered")); },
      {"layer \"0\"", "kernel_quantizer", "test_unregistered", "register_custom"});
  EXPECT_FALSE(fs::exists(temp_path("unregistered")));
}

TEST(Serialize, LoadErrorsNameTheFile) {
  const auto missing = temp_path("missing");
  expect_throw_with<std::runtime_error>([&] { load(missing); }, {missing, "not found"});

  torch::nn::Sequential model(nn::QuantDense(nn::QuantDenseOptions(64, 64)));
  const auto path = temp_path("truncate_src");
  save(model, path);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto truncated = temp_path("truncated");
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_throw_with<std::runtime_error>([&] { load(truncated); }, {truncated, "truncated"});

  const auto garbage = temp_path("garbage");
  std::ofstream(garbage) << "not a model";
  expect_throw_with<std::runtime_error>([&] { load(garbage); }, {garbage});

  const auto ckpt = temp_path("a_checkpoint");
  train::save_checkpoint(ckpt, model, nullptr, {{"epoch", 1}});
  expect_throw_with<std::runtime_error>([&] { load(ckpt); }, {ckpt, "no header"});
  for (const auto& p : {path, truncated, garbage, ckpt}) fs::remove(p);
}

namespace {

// A user-defined layer registered with serialize, whose size the test can change between save
// and load to produce a shape mismatch.
int64_t g_extra_size = 0;

class ScaleImpl : public torch::nn::Cloneable<ScaleImpl> {
 public:
  explicit ScaleImpl(int64_t n) : n(n) { reset(); }
  void reset() override { w = register_parameter("w", torch::ones(n)); }
  at::Tensor forward(const at::Tensor& x) { return x * w; }
  int64_t n;
  at::Tensor w;
};
TORCH_MODULE(Scale);

void register_scale() {
  serialize::register_module_type(
      "TestScale",
      [](const torch::nn::Module& m) -> std::optional<nlohmann::json> {
        if (const auto* s = dynamic_cast<const ScaleImpl*>(&m)) return nlohmann::json{{"n", s->n}};
        return std::nullopt;
      },
      [](const nlohmann::json& o) {
        return torch::nn::AnyModule(Scale(o.at("n").get<int64_t>() + g_extra_size));
      });
}

}  // namespace

TEST(Serialize, RegisteredModuleTypesAndShapeMismatch) {
  register_scale();
  torch::nn::Sequential model(Scale(3), nn::HardTanh());
  g_extra_size = 0;
  expect_round_trip(model, torch::randn({2, 3}), "scale");
  const auto path = temp_path("scale_mismatch");
  save(model, path);
  g_extra_size = 1;
  expect_throw_with<std::runtime_error>([&] { load(path); },
                                        {path, "tensor \"0.w\"", "[3]", "[4]"});
  g_extra_size = 0;
  fs::remove(path);
  const auto types = serialize::module_types();
  EXPECT_NE(std::find(types.begin(), types.end(), "TestScale"), types.end());
}

TEST(Serialize, CheckpointRebuildsModelsOutsideTheZoo) {
  torch::nn::Sequential model(
      nn::QuantLocallyConnected1d(nn::QuantLocallyConnected1dOptions(2, 3, 2, 5)
                                      .kernel_quantizer("ste_sign")
                                      .kernel_constraint("weight_clip")),
      torch::nn::Flatten(), nn::QuantDense(nn::QuantDenseOptions(12, 2)));
  randomize(model);
  auto x = torch::randn({2, 2, 5});
  const auto want = run(model, x);
  const auto path = temp_path("checkpoint");
  train::save_checkpoint(path, model, nullptr,
                         {{"train", train::TrainOptions().to_json()}, {"epoch", 1}});
  auto ck = train::load_checkpoint(path);
  EXPECT_TRUE(ck.config.contains("architecture"));
  EXPECT_TRUE(torch::equal(run(ck.model, x), want));
  fs::remove(path);
}

TEST(Serialize, GraphModelsRoundTrip) {
  torch::manual_seed(21);
  for (const char* name : {"bireal-mnist", "densenet-mnist"}) {
    for (bool quantized : {false, true}) {
      auto loaded = expect_round_trip(zoo::build(name), torch::randn({2, 1, 28, 28}),
                                      std::string(name) + (quantized ? "_bits" : ""), quantized);
      const auto arch = serialize::describe(loaded);
      EXPECT_EQ(arch.at("type"), "Graph");
      EXPECT_EQ(arch.at("output"), static_cast<int>(loaded->nodes().size()));
    }
  }
  // A nested graph is stored as a node whose options are its own architecture.
  nn::Graph inner;
  inner->output(inner->add(
      {inner->input(), inner->call("fc", torch::nn::Linear(3, 3), inner->input())}, "add"));
  nn::Graph outer;
  outer->call("head", torch::nn::Linear(3, 2), outer->call("block", inner, outer->input()));
  auto loaded = expect_round_trip(outer, torch::randn({4, 3}), "nested");
  const auto arch = serialize::describe(loaded);
  EXPECT_EQ(arch.at("nodes").at(0).at("type"), "Graph");
  EXPECT_EQ(arch.at("nodes").at(0).at("options").at("nodes").size(), 2u);
}

TEST(Serialize, GraphArchitectureErrorsNameTheNode) {
  using nlohmann::json;
  auto graph = [](json nodes) { return json{{"type", "Graph"}, {"nodes", nodes}, {"output", 1}}; };
  const json linear = {{"in_features", 2}, {"out_features", 2}};
  expect_throw_with<std::invalid_argument>(
      [&] {
        serialize::build(graph(
            {{{"name", "fc"}, {"type", "torch.Linear"}, {"options", linear}, {"inputs", {3}}}}));
      },
      {"layer \"fc\"", "inputs", "earlier values"});
  expect_throw_with<std::invalid_argument>(
      [&] {
        serialize::build(
            graph({{{"name", "fc"}, {"type", "torch.Linear"}, {"options", linear}, {"inputs", {0}}},
                   {{"name", "fc2"},
                    {"type", "torch.Linear"},
                    {"options", linear},
                    {"inputs", {0, 1}}}}));
      },
      {"layer \"fc2\"", "one input"});
  expect_throw_with<std::invalid_argument>(
      [&] {
        serialize::build(graph({{{"name", "fc"}, {"type", "torch.Linear"}, {"options", linear}}}));
      },
      {"layer \"fc\"", "\"inputs\""});
  expect_throw_with<std::invalid_argument>(
      [&] {
        auto a = graph(
            {{{"name", "fc"}, {"type", "torch.Linear"}, {"options", linear}, {"inputs", {0}}}});
        a["output"] = 5;
        serialize::build(a);
      },
      {"output", "0..1"});
}

namespace {

/// Rewrites a model file as another format version; with `version` 1 the architecture becomes a
/// version-1 Sequential layer list (what onebit wrote before graph models).
void rewrite_version(const std::string& from, const std::string& to, int version) {
  torch::serialize::InputArchive in;
  in.load_from(from);
  c10::IValue header_value;
  in.read("header", header_value);
  auto header = nlohmann::json::parse(header_value.toStringRef());
  torch::serialize::OutputArchive out;
  for (const auto& t : header.at("tensors")) {
    at::Tensor value;
    in.read(t.at("key").get<std::string>(), value, /*is_buffer=*/true);
    out.write(t.at("key").get<std::string>(), value, /*is_buffer=*/true);
  }
  if (version == 1) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& n : header.at("architecture").at("nodes")) {
      layers.push_back(
          {{"name", n.at("name")}, {"type", n.at("type")}, {"options", n.at("options")}});
    }
    header["architecture"] = {{"type", "Sequential"}, {"layers", layers}};
  }
  header["version"] = version;
  out.write("onebit_model_version", c10::IValue(static_cast<int64_t>(version)));
  out.write("header", c10::IValue(header.dump()));
  out.save_to(to);
}

}  // namespace

TEST(Serialize, Version1FilesLoadAndNewerVersionsAreRefused) {
  torch::manual_seed(22);
  torch::nn::Sequential model(torch::nn::Flatten(),
                              nn::QuantDense(nn::QuantDenseOptions(16, 8)
                                                 .input_quantizer("ste_sign")
                                                 .kernel_quantizer("ste_sign")
                                                 .kernel_constraint("weight_clip")),
                              nn::BatchNorm(8));
  randomize(model);
  const auto x = torch::randn({3, 1, 4, 4});
  const auto current = temp_path("v2"), old = temp_path("v1"), newer = temp_path("v3");
  save(model, current, /*quantized=*/true);
  rewrite_version(current, old, 1);
  auto loaded = load(old);
  EXPECT_TRUE(torch::equal(run(loaded, x), run(load(current), x)));
  EXPECT_EQ(serialize::describe(loaded), serialize::describe(model));
  rewrite_version(current, newer, serialize::kFormatVersion + 1);
  expect_throw_with<std::runtime_error>(
      [&] { load(newer); }, {newer, "version " + std::to_string(serialize::kFormatVersion + 1),
                             "reads up to " + std::to_string(serialize::kFormatVersion)});
  for (const auto& p : {current, old, newer}) fs::remove(p);
}
