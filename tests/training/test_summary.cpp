#include <gtest/gtest.h>
#include <torch/torch.h>

#include "onebit/nn.h"
#include "onebit/summary.h"
#include "onebit/zoo/models.h"

using namespace onebit;

namespace {

// A module with children that is not a Sequential: y = x + fc(x).
struct ResidualImpl : torch::nn::Module {
  explicit ResidualImpl(int64_t n) : fc(register_module("fc", torch::nn::Linear(n, n))) {}
  at::Tensor forward(const at::Tensor& x) { return x + fc->forward(x); }
  torch::nn::Linear fc;
};

nn::QuantConv2dOptions conv(int64_t in, int64_t out, int64_t k) {
  return nn::QuantConv2dOptions(in, out, k)
      .kernel_quantizer("ste_sign")
      .kernel_constraint("weight_clip");
}

// Every kind of row, with numbers computed by hand below: a chain, a nested graph (a
// Sequential called as one node), and a shortcut.
nn::Graph hand_model() {
  nn::Graph g(torch::nn::Sequential(
      nn::QuantConv2d(conv(1, 2, 3)),                                          // 0: float input
      torch::nn::MaxPool2d(2),                                                 // 1
      nn::BatchNorm(2),                                                        // 2
      nn::QuantConv2d(conv(2, 3, 1).bias(false).input_quantizer("ste_sign")),  // 3: binary input
      torch::nn::Flatten(),                                                    // 4
      nn::QuantDense(nn::QuantDenseOptions(12, 4)                              // 5: ternary input
                         .input_quantizer("ste_tern")
                         .kernel_quantizer("ste_sign")
                         .kernel_constraint("weight_clip"))));
  nn::Value x = g->call("6", torch::nn::Sequential(torch::nn::ReLU(), torch::nn::Linear(4, 3)),
                        nn::Value{6});                                         // 6.0, 6.1
  nn::Value y = g->call("fc", torch::nn::Linear(3, 3), x);                    // fc
  g->output(g->add({x, y}, "add"));                                          // add
  return g;
}

using Bits = std::map<int, int64_t>;

}  // namespace

TEST(Summary, HandComputedModelNumberByNumber) {
  auto model = hand_model();
  model->train();
  auto s = summary(model, {1, 6, 6});
  EXPECT_TRUE(model->is_training());  // mode restored
  ASSERT_EQ(s.layers.size(), 10u);
  const auto& L = s.layers;
  std::vector<std::string> names;
  for (const auto& l : L) names.push_back(l.name);
  EXPECT_EQ(names, std::vector<std::string>({"0:QuantConv2d", "1:MaxPool2d", "2:BatchNorm",
                                             "3:QuantConv2d", "4:Flatten", "5:QuantDense",
                                             "6.0:ReLU", "6.1:Linear", "fc:Linear", "add:Add"}));
  // Conv with float input: 2x1x3x3 binary kernel, 2 biases; 18 weights x 4x4 pixels at 32 bits.
  EXPECT_FALSE(L[0].input_precision.has_value());
  EXPECT_EQ(*L[0].output_shape, std::vector<int64_t>({-1, 2, 4, 4}));
  EXPECT_EQ(L[0].params_by_bits, (Bits{{1, 18}, {32, 2}}));
  EXPECT_EQ(L[0].memory_bits, 18 + 2 * 32);
  EXPECT_EQ(*L[0].macs_by_bits, (Bits{{32, 288}}));
  // Pooling: no weights, 0 MACs.
  EXPECT_EQ(*L[1].output_shape, std::vector<int64_t>({-1, 2, 2, 2}));
  EXPECT_TRUE(L[1].params_by_bits.empty());
  EXPECT_TRUE(L[1].macs_by_bits.has_value() && L[1].macs_by_bits->empty());
  // Batch norm: moving mean and variance, 2 per channel, non-trainable, 0 MACs.
  EXPECT_EQ(L[2].params_by_bits, (Bits{{32, 4}}));
  EXPECT_EQ(L[2].trainable_params, 0);
  EXPECT_EQ(L[2].non_trainable_params, 4);
  EXPECT_TRUE(L[2].macs_by_bits.has_value() && L[2].macs_by_bits->empty());
  // Conv with binary input: 3x2x1x1 kernel x 2x2 pixels, binary MACs.
  EXPECT_EQ(L[3].input_precision, 1);
  EXPECT_EQ(*L[3].output_shape, std::vector<int64_t>({-1, 3, 2, 2}));
  EXPECT_EQ(L[3].params_by_bits, (Bits{{1, 6}}));
  EXPECT_EQ(*L[3].macs_by_bits, (Bits{{1, 24}}));
  // Flatten.
  EXPECT_EQ(*L[4].output_shape, std::vector<int64_t>({-1, 12}));
  EXPECT_TRUE(L[4].macs_by_bits->empty());
  // Dense with ternary input: MAC precision max(2, 1) = 2.
  EXPECT_EQ(L[5].input_precision, 2);
  EXPECT_EQ(L[5].params_by_bits, (Bits{{1, 48}, {32, 4}}));
  EXPECT_EQ(*L[5].macs_by_bits, (Bits{{2, 48}}));
  // Unsupported layer: "?".
  EXPECT_EQ(*L[6].output_shape, std::vector<int64_t>({-1, 4}));
  EXPECT_FALSE(L[6].macs_by_bits.has_value());
  // torch's Linear inside a nested graph: float MACs.
  EXPECT_EQ(L[7].params_by_bits, (Bits{{32, 15}}));
  EXPECT_EQ(*L[7].macs_by_bits, (Bits{{32, 12}}));
  // The shortcut's branch: 3x3 weights + 3 biases, 9 float MACs.
  EXPECT_EQ(*L[8].output_shape, std::vector<int64_t>({-1, 3}));
  EXPECT_EQ(L[8].params_by_bits, (Bits{{32, 12}}));
  EXPECT_EQ(*L[8].macs_by_bits, (Bits{{32, 9}}));
  // The merge: a row of its own, no weights, "?" MACs as in Larq (Add has no MAC rule there).
  EXPECT_EQ(*L[9].output_shape, std::vector<int64_t>({-1, 3}));
  EXPECT_TRUE(L[9].params_by_bits.empty());
  EXPECT_FALSE(L[9].macs_by_bits.has_value());

  EXPECT_EQ(s.total_params, 109);
  EXPECT_EQ(s.trainable_params, 105);
  EXPECT_EQ(s.non_trainable_params, 4);
  EXPECT_EQ(s.memory_bits, 72 + 37 * 32);
  EXPECT_EQ(s.int8_memory_bits, 72 + 37 * 8);
  EXPECT_EQ(s.fp32_memory_bits, 109 * 32);
  EXPECT_EQ(s.param_bits(), std::vector<int>({1, 32}));
  EXPECT_EQ(s.mac_precisions(), std::vector<int>({1, 2, 32}));
  EXPECT_EQ(s.total_macs, 381);
  EXPECT_DOUBLE_EQ(s.binarized_mac_ratio, 24.0 / 381);
  EXPECT_DOUBLE_EQ(s.ternarized_mac_ratio, 48.0 / 381);

  auto j = s.to_json();
  EXPECT_EQ(j["totals"]["total_macs"], 381);
  EXPECT_EQ(j["totals"]["int8_memory_bits"], 368);
  EXPECT_EQ(j["layers"][0]["params_by_bits"], (nlohmann::json{{"1", 18}, {"32", 2}}));
  EXPECT_TRUE(j["layers"][0]["input_precision"].is_null());
  EXPECT_TRUE(j["layers"][6]["macs_by_bits"].is_null());
  EXPECT_TRUE(j["layers"][9]["macs_by_bits"].is_null());
  EXPECT_EQ(j["layers"][9]["name"], "add:Add");
  EXPECT_EQ(j["layers"][3]["output_shape"], (nlohmann::json{-1, 3, 2, 2}));

  const auto text = s.to_string();
  EXPECT_NE(text.find("Ratio of MACs that are ternarized  0.1260"), std::string::npos) << text;
  const auto relu = text.find("| 6.0:ReLU ");
  ASSERT_NE(relu, std::string::npos) << text;
  const auto relu_line = text.substr(relu, text.find('\n', relu) - relu);
  EXPECT_NE(relu_line.find("(-1, 4)"), std::string::npos) << relu_line;
  EXPECT_NE(relu_line.find("?           ?            ? |"), std::string::npos) << relu_line;
}

TEST(Summary, TextLayoutMatchesLarq) {
  auto model = torch::nn::Sequential(torch::nn::Flatten(),
                                     nn::QuantDense(nn::QuantDenseOptions(4, 2)
                                                        .bias(false)
                                                        .input_quantizer("ste_sign")
                                                        .kernel_quantizer("ste_sign")
                                                        .kernel_constraint("weight_clip")));
  const std::string expected =
      "+tiny stats-------------------------------------------------------+\n"
      "| Layer         Input prec.  Outputs  # 1-bit  Memory  1-bit MACs |\n"
      "|                     (bit)               x 1    (kB)             |\n"
      "+-----------------------------------------------------------------+\n"
      "| 0:Flatten               -  (-1, 4)        0       0           0 |\n"
      "| 1:QuantDense            1  (-1, 2)        8    0.00           8 |\n"
      "+-----------------------------------------------------------------+\n"
      "| Total                                     8    0.00           8 |\n"
      "+-----------------------------------------------------------------+\n"
      "+tiny summary-------------------------------+\n"
      "| Total params                      8       |\n"
      "| Trainable params                  8       |\n"
      "| Non-trainable params              0       |\n"
      "| Model size                        1.00 B  |\n"
      "| Model size (8-bit FP weights)     1.00 B  |\n"
      "| Float-32 Equivalent               32.00 B |\n"
      "| Compression Ratio of Memory       0.03    |\n"
      "| Number of MACs                    8       |\n"
      "| Ratio of MACs that are binarized  1.0000  |\n"
      "+-------------------------------------------+\n";
  EXPECT_EQ(summary(model, {4}, "tiny").to_string(), expected);
}

TEST(Summary, NumberFormatting) {
  EXPECT_EQ(format_number(93556), "93.6 k");
  EXPECT_EQ(format_number(0), "0");
  EXPECT_EQ(format_number(8), "8");
  EXPECT_EQ(format_number(768), "768");
  EXPECT_EQ(format_number(999), "999");
  EXPECT_EQ(format_number(1000), "1 k");
  EXPECT_EQ(format_number(1500), "1.5 k");
  EXPECT_EQ(format_number(999000), "999 k");
  EXPECT_EQ(format_number(999500), "1 M");  // rounded to 3 figures first
  EXPECT_EQ(format_number(1234567), "1.23 M");
  EXPECT_EQ(format_number(2.5e9), "2.5 B");
  EXPECT_EQ(format_number(7.77e12), "7.77 T");
  EXPECT_EQ(format_number(1e15), "1.00E+15");
}

TEST(Summary, SizeFormatting) {
  EXPECT_EQ(format_memory(0), "0.00 B");
  EXPECT_EQ(format_memory(8), "1.00 B");
  EXPECT_EQ(format_memory(8 * 1023.5), "1,023.50 B");
  EXPECT_EQ(format_memory(8 * 1024), "1.00 KiB");
  EXPECT_EQ(format_memory(8.0 * 1536 * 1024), "1.50 MiB");
  EXPECT_EQ(format_memory(8.0 * 1024 * 1024 * 1024 * 3), "3.00 GiB");
  EXPECT_EQ(format_memory(8.0 * 1024 * 1024 * 1024 * 2048), "2,048.00 GiB");
}

TEST(Summary, LarqMnistTotals) {
  auto s = summary(zoo::build("larq-mnist"), {1, 28, 28}, "larq-mnist");
  // Larq's MNIST tutorial model: 93,088 binary weights, 32 + 64 + 64 + 64 + 10 channels of
  // batch norm statistics (2 each), first conv 288 x 26 x 26 MACs at 32 bits.
  EXPECT_EQ(s.param_bits(), std::vector<int>({1, 32}));
  EXPECT_EQ(s.layers[0].params_by_bits, (Bits{{1, 288}}));
  EXPECT_EQ(*s.layers[0].macs_by_bits, (Bits{{32, 194688}}));
  EXPECT_EQ(s.total_params, 93088 + 2 * (32 + 64 + 64 + 64 + 10));
  EXPECT_EQ(s.total_params, 93556);
  EXPECT_EQ(s.non_trainable_params, 2 * (32 + 64 + 64 + 64 + 10));
  EXPECT_EQ(s.macs(1), 2230272 + 331776 + 36864 + 640);
  EXPECT_EQ(s.macs(32), 194688);
}

TEST(Summary, BadInputShapeAndFailingForwardAreClearErrors) {
  auto model = zoo::build("larq-mnist");
  EXPECT_THROW(summary(model, {}), std::invalid_argument);
  EXPECT_THROW(summary(model, {1, 0, 28}), std::invalid_argument);
  try {
    summary(model, {3, 28, 28});
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("node \"0\""), std::string::npos) << e.what();
  }
}

TEST(Summary, CompositeModuleWithoutARegisteredKindPointsToTheGraphApi) {
  // The seed's `x + bn(conv(x))` written as a module: its forward (the shortcut) is invisible.
  torch::nn::Sequential model(torch::nn::Flatten(), std::make_shared<ResidualImpl>(4));
  try {
    summary(model, {4});
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("node \"1\""), std::string::npos) << what;
    EXPECT_NE(what.find("Residual"), std::string::npos) << what;
    EXPECT_NE(what.find("onebit::nn::Graph"), std::string::npos) << what;
    EXPECT_NE(what.find("register_layer"), std::string::npos) << what;
  }
}
