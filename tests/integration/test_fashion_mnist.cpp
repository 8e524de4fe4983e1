// End-to-end: real Fashion-MNIST data (Debian's dataset-fashion-mnist), training, the tool.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>

#include "onebit/data/datasets.h"
#include "onebit/serialize.h"
#include "onebit/train/checkpoint.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

namespace fs = std::filesystem;
using namespace onebit;

namespace {

std::string temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("onebit_it_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  return d.string();
}

struct Command {
  int status;
  std::string out;
};

Command run_tool(const std::string& args) {
  std::string cmd = std::string(ONEBIT_TOOL_PATH) + " " + args + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 4096> buf;
  while (fgets(buf.data(), buf.size(), pipe.get())) out += buf.data();
  int status = pclose(pipe.release());
  return {WEXITSTATUS(status), out};
}

nlohmann::json last_json_line(const std::string& out) {
  std::istringstream s(out);
  std::string line, last;
  while (std::getline(s, line)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  return nlohmann::json::parse(last);
}

/// Two epochs on the first 8000 training images, evaluated on the first 2000 test images.
train::TrainOptions slice_options(const std::string& model) {
  train::TrainOptions o;
  o.model = model;
  o.epochs = 2;
  o.train_limit = 8000;
  o.test_limit = 2000;
  o.threads = 2;
  o.progress = false;
  o.out_dir = temp_dir(model);
  return o;
}

}  // namespace

TEST(FashionMnist, DebianDataLoads) {
  auto train = data::load("fashion-mnist", data::Split::kTrain);
  auto test = data::load("fashion-mnist", data::Split::kTest);
  EXPECT_EQ(train.images.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(test.size(), 10000);
  EXPECT_EQ(train.labels.max().item<int64_t>(), 9);
  EXPECT_GE(train.images.min().item<float>(), -1.0f);
  EXPECT_LE(train.images.max().item<float>(), 1.0f);
  // Classes are balanced in the training set.
  auto counts = torch::bincount(train.labels);
  EXPECT_EQ(counts.min().item<int64_t>(), 6000);
}

TEST(FashionMnist, LarqMnistLearnsOnARealSlice) {
  // 8000 training images, 2 epochs: well above chance (10%); the full 6-epoch run reaches ~85%.
  auto o = slice_options("larq-mnist");
  auto r = train::train(o);
  EXPECT_GE(r.test_accuracy, 0.75) << "larq-mnist after 2 epochs on 8000 images";
  auto ck = train::load_checkpoint(o.out_dir);
  auto test = data::load("fashion-mnist", data::Split::kTest).head(2000);
  EXPECT_DOUBLE_EQ(train::evaluate(ck.model, test).accuracy, r.test_accuracy);
  fs::remove_all(o.out_dir);
}

TEST(FashionMnist, BnnMlpLearnsOnARealSlice) {
  auto o = slice_options("bnn-mlp");
  auto r = train::train(o);
  EXPECT_GE(r.test_accuracy, 0.72) << "bnn-mlp after 2 epochs on 8000 images";
  fs::remove_all(o.out_dir);
}

TEST(FashionMnist, GraphModelsLearnOnARealSliceAndRoundTrip) {
  const auto test = data::load("fashion-mnist", data::Split::kTest).head(2000);
  for (const char* name : {"bireal-mnist", "densenet-mnist"}) {
    SCOPED_TRACE(name);
    auto o = slice_options(name);
    auto r = train::train(o);
    EXPECT_GE(r.test_accuracy, 0.72) << name << " after 2 epochs on 8000 images";
    // The checkpoint rebuilds the graph; save/load keeps every output bit for bit.
    auto ck = train::load_checkpoint(o.out_dir);
    EXPECT_DOUBLE_EQ(train::evaluate(ck.model, test).accuracy, r.test_accuracy);
    const std::string path = o.out_dir + "/model.onebit";
    save(ck.model, path);
    auto loaded = load(path);
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(loaded->forward(test.images), ck.model->forward(test.images)));
    fs::remove_all(o.out_dir);
  }
}

TEST(Tool, GraphModelSummaryHasMergeRowsAndJson) {
  auto t = run_tool("summary --model bireal-mnist");
  ASSERT_EQ(t.status, 0) << t.out;
  EXPECT_NE(t.out.find("| block1_add:Add "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("Number of MACs                    17.9 M"), std::string::npos) << t.out;
  // Larq's presentation of nested graphs is an option; the totals stay the same.
  auto c = run_tool("summary --model bireal-mnist --combine-nested");
  ASSERT_EQ(c.status, 0) << c.out;
  EXPECT_NE(c.out.find("Number of MACs                    17.9 M"), std::string::npos) << c.out;
  auto j = run_tool("summary --model densenet-mnist --json");
  ASSERT_EQ(j.status, 0) << j.out;
  auto s = last_json_line(j.out);
  int concats = 0;
  for (const auto& l : s["layers"]) {
    if (l["name"].get<std::string>().find(":Concat") != std::string::npos) {
      ++concats;
      EXPECT_TRUE(l["macs_by_bits"].is_null());
    }
  }
  EXPECT_EQ(concats, 6);
  EXPECT_EQ(s["totals"]["total_params"].get<int64_t>(), 138240 + 11690);
  EXPECT_EQ(s["totals"]["total_macs"].get<int64_t>(), 14902272 + 628800);
}

TEST(Tool, TrainJsonThenEval) {
  auto out = temp_dir("tool");
  // A repeated option takes its last value, as `scripts/main.sh --epochs 1` needs (the script
  // passes --epochs 6 first).
  auto r = run_tool(
      "train --model bnn-mlp --epochs 6 --train-limit 2000 --test-limit 1000 --threads 2 "
      "--no-progress --json --epochs 1 --out " +
      out);
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = last_json_line(r.out);
  for (const char* key : {"test_accuracy", "epochs", "images_per_second", "checkpoint"}) {
    EXPECT_TRUE(j.contains(key)) << key << " missing in " << j.dump();
  }
  EXPECT_EQ(j["epochs"], 1);
  EXPECT_GT(j["test_accuracy"].get<double>(), 0.5);
  EXPECT_TRUE(fs::exists(j["checkpoint"].get<std::string>()));

  auto e = run_tool("eval --checkpoint " + out + " --limit 1000 --json");
  ASSERT_EQ(e.status, 0) << e.out;
  EXPECT_DOUBLE_EQ(last_json_line(e.out)["accuracy"].get<double>(),
                   j["test_accuracy"].get<double>());
  fs::remove_all(out);
}

TEST(Tool, BadInputGivesClearErrors) {
  auto r = run_tool("train --model resnet-9000 --epochs 1 --out /tmp/onebit_never");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("unknown model \"resnet-9000\""), std::string::npos) << r.out;
  auto d = run_tool("train --data-dir /nonexistent/dir --epochs 1 --out /tmp/onebit_never");
  EXPECT_NE(d.status, 0);
  EXPECT_NE(d.out.find("/nonexistent/dir"), std::string::npos) << d.out;
  auto c = run_tool("eval --checkpoint /nonexistent/ckpt");
  EXPECT_NE(c.status, 0);
  EXPECT_NE(c.out.find("not found"), std::string::npos) << c.out;
  auto n = run_tool("train --epochs 0 --out /tmp/onebit_never");
  EXPECT_NE(n.status, 0);
  EXPECT_NE(n.out.find("epochs"), std::string::npos) << n.out;
}

namespace onebit {
namespace {

// onebit bench measures this core's peak for every ISA first and reports each conv shape as a
// share of the measured peak of the ISA it ran on (no machine constant).
TEST(Tool, BenchReportsPercentOfTheMeasuredPeak) {
  auto b =
      run_tool("bench --shapes 64x8x8,96x7x7 --repeats 1 --min-seconds 0.01 --no-model --json");
  ASSERT_EQ(b.status, 0) << b.out;
  std::vector<nlohmann::json> lines;
  std::istringstream in(b.out);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '{') lines.push_back(nlohmann::json::parse(line));
  }
  ASSERT_EQ(lines.size(), 3u) << b.out;
  const auto& head = lines[0];
  EXPECT_FALSE(head["cpu"].get<std::string>().empty());
  const std::string isa = head["active_isa"].get<std::string>();
  double active_peak = 0;
  for (const auto& p : head["peaks"]) {
    EXPECT_GT(p["binary_macs_per_s"].get<double>(), 0.0);
    EXPECT_GT(p["binary_macs_per_cycle"].get<double>(), 0.0);
    EXPECT_GT(p["clock_ghz"].get<double>(), 0.0);
    if (p["isa"] == isa) active_peak = p["binary_macs_per_s"].get<double>();
  }
  ASSERT_GT(active_peak, 0.0) << head.dump();
  for (std::size_t i = 1; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["isa"], isa);
    EXPECT_EQ(lines[i]["peak_binary_macs_per_s"].get<double>(), active_peak);
    const double expected = 100.0 * lines[i]["binary_macs_per_s"].get<double>() / active_peak;
    EXPECT_NEAR(lines[i]["percent_of_peak"].get<double>(), expected, 1e-6 * expected);
    // The baselines a user would pick instead, timed in the same run: LibTorch's float conv2d
    // and, where its build has a quantized engine (Debian's: oneDNN, QNNPACK), its int8 conv.
    EXPECT_GT(lines[i]["float_us"].get<double>(), 0.0);
    if (!lines[i]["int8_engine"].get<std::string>().empty()) {
      ASSERT_TRUE(lines[i]["int8_us"].is_number()) << lines[i].dump();
      EXPECT_NEAR(lines[i]["speedup_vs_int8"].get<double>(),
                  lines[i]["int8_us"].get<double>() / lines[i]["binary_us"].get<double>(),
                  1e-9 * lines[i]["speedup_vs_int8"].get<double>());
    }
  }
  // Every x86 LibTorch build we support has a quantized engine (Debian's 1.13: oneDNN).
  EXPECT_FALSE(lines[1]["int8_engine"].get<std::string>().empty()) << lines[1].dump();
}

TEST(Tool, BenchTrainTimesBothTrainingKernels) {
  // larq-mnist and a shortcut model: images/s of each kernels choice and thread count, with the
  // step split into forward, backward and optimizer.
  for (const std::string model : {"larq-mnist", "bireal-mnist"}) {
    auto b = run_tool("bench --train --model " + model +
                      " --thread-counts 1,2 --batch-size 16 --min-seconds 0.01 --json");
    ASSERT_EQ(b.status, 0) << b.out;
    const auto j = last_json_line(b.out);
    EXPECT_EQ(j["model"], model);
    EXPECT_FALSE(j["cpu"].get<std::string>().empty());
    ASSERT_EQ(j["train"].size(), 4u) << j.dump();
    for (const auto& r : j["train"]) {
      const double step = r["step_ms"].get<double>();
      EXPECT_GT(r["images_per_second"].get<double>(), 0.0);
      EXPECT_NEAR(r["images_per_second"].get<double>(), 16.0 / (step * 1e-3), 1e-6 * 16e3 / step);
      for (const char* phase : {"forward_ms", "backward_ms", "optimizer_ms"}) {
        EXPECT_GT(r[phase].get<double>(), 0.0) << phase;
        EXPECT_LE(r[phase].get<double>(), 1.5 * step) << phase;  // medians of the same steps
      }
    }
    EXPECT_EQ(j["train"][0]["kernels"], "float");
    EXPECT_EQ(j["train"][1]["kernels"], "binary");
    EXPECT_EQ(j["train"][3]["threads"], 2);
    EXPECT_DOUBLE_EQ(j["train"][0]["speedup_vs_float"].get<double>(), 1.0);
  }
  auto bad = run_tool("bench --train --model larq-mnist --batch-size 0");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("--batch-size must be >= 1"), std::string::npos) << bad.out;
  // The binary path's convolution gradients on each implementation; the choice is reported.
  for (const std::string g : {"libtorch", "products"}) {
    auto c = run_tool(
        "bench --train --model larq-mnist --thread-counts 1 --batch-size 16 "
        "--min-seconds 0.01 --json --conv-gradient " +
        g);
    ASSERT_EQ(c.status, 0) << c.out;
    EXPECT_EQ(last_json_line(c.out)["conv_gradient"], g);
  }
  // --profile: each path's ops by self time at the first thread count; the binary path's
  // runtime convolutions show up as their autograd nodes, the float path's as oneDNN's.
  auto p = run_tool(
      "bench --train --model larq-mnist --thread-counts 1,2 --batch-size 16 --min-seconds 0.01 "
      "--json --profile");
  ASSERT_EQ(p.status, 0) << p.out;
  const auto pj = last_json_line(p.out);
  ASSERT_EQ(pj["profile"].size(), 2u) << pj.dump();
  for (const auto& path : pj["profile"]) {
    EXPECT_EQ(path["threads"], 1);
    const std::string kernels = path["kernels"].get<std::string>();
    double share = 0;
    bool conv = false;
    for (const auto& op : path["ops"]) {
      share += op["share_of_ops"].get<double>();
      EXPECT_GE(op["ms_per_step"].get<double>(), 0.0);
      const std::string name = op["op"].get<std::string>();
      conv = conv || (kernels == "float" ? name == "aten::convolution_backward"
                                         : name.find("RuntimeConv2dFunction") != std::string::npos);
    }
    EXPECT_NEAR(share, 1.0, 1e-6) << kernels;
    EXPECT_TRUE(conv) << kernels << " path: no convolution gradient in " << path.dump();
  }
  auto table = run_tool(
      "bench --train --model larq-mnist --thread-counts 1 --batch-size 16 --min-seconds 0.01 "
      "--profile");
  ASSERT_EQ(table.status, 0) << table.out;
  EXPECT_NE(table.out.find("binary path, 1 thread(s): self time per step"), std::string::npos)
      << table.out;
  auto unknown = run_tool("bench --train --model larq-mnist --conv-gradient onednn");
  EXPECT_NE(unknown.status, 0);
  EXPECT_NE(unknown.out.find("unknown convolution gradient \"onednn\""), std::string::npos)
      << unknown.out;
}

TEST(Tool, ZooCommandsListSummarizeConvertAndBenchEveryKindOfModel) {
  auto models = run_tool("models --json");
  ASSERT_EQ(models.status, 0) << models.out;
  const auto list = nlohmann::json::parse(models.out.substr(models.out.find('[')));
  EXPECT_EQ(list.size(), 19u);
  // Larq's spelling, the published default size, --classes.
  auto s = run_tool("summary --model QuickNet --json");
  ASSERT_EQ(s.status, 0) << s.out;
  auto j = last_json_line(s.out);
  EXPECT_EQ(j["layers"][0]["output_shape"], nlohmann::json({-1, 16, 112, 112}));
  auto text = run_tool("summary --model quicknet --classes 10 --input-shape 3,64,64");
  ASSERT_EQ(text.status, 0) << text.out;
  EXPECT_NE(text.out.find("(-1, 10)"), std::string::npos) << text.out;
  // The end-to-end benchmark: latency per thread count, memory, profile per op.
  auto b = run_tool(
      "bench --model quicknet-small --input-shape 3,32,32 --classes 10 --thread-counts 1,2 "
      "--profile --min-seconds 0.01 --json");
  ASSERT_EQ(b.status, 0) << b.out;
  auto r = last_json_line(b.out);
  ASSERT_EQ(r["latency_batch1"].size(), 2u);
  for (const auto& t : r["latency_batch1"]) {
    EXPECT_GT(t["runtime_ms"].get<double>(), 0.0);
    EXPECT_GT(t["torch_float_ms"].get<double>(), 0.0);
  }
  EXPECT_GT(r["activation_bytes"].get<int64_t>(), 0);
  // The arena (planned from lifetimes) within 1.2x of the largest live set.
  EXPECT_GE(r["activation_bytes"].get<double>(), r["live_activation_bytes"].get<double>());
  EXPECT_LE(r["activation_bytes"].get<double>(), 1.2 * r["live_activation_bytes"].get<double>());
  EXPECT_GT(r["load_ms"].get<double>(), 0.0);
  double share = 0;
  bool named_conv = false;
  for (const auto& op : r["profile"]["ops"]) {
    share += op["share"].get<double>();
    named_conv = named_conv || op["name"].get<std::string>() == "block1_conv";
  }
  EXPECT_NEAR(share, 1.0, 1e-6);
  EXPECT_TRUE(named_conv) << r["profile"].dump();
  EXPECT_GT(r["profile"]["binary_share"].get<double>(), 0.0);
  // convert --model, and --weights that do not fit name the tensors.
  const std::string dir = temp_dir("zoo");
  fs::create_directories(dir);
  auto c = run_tool("convert --model birealnet --input-shape 3,32,32 --classes 10 --out " + dir +
                    "/b.obnn --json");
  ASSERT_EQ(c.status, 0) << c.out;
  EXPECT_GT(last_json_line(c.out)["binary_weights"].get<int64_t>(), 10000000);
  nn::Graph small = zoo::build("quicknet-small", [] {
    zoo::ModelOptions o;
    o.input_shape = {3, 32, 32};
    o.num_classes = 10;
    return o;
  }());
  train::save_checkpoint(dir + "/q.pt", small, nullptr, {{"epoch", 0}});
  auto w =
      run_tool("convert --model quicknet-small --input-shape 3,32,32 --classes 100 --weights " +
               dir + "/q.pt --out " + dir + "/q.obnn");
  EXPECT_NE(w.status, 0);
  EXPECT_NE(w.out.find("head_dense.weight: model [100, 512], file [10, 512]"), std::string::npos)
      << w.out;
  auto ok = run_tool("bench --model quicknet-small --input-shape 3,32,32 --classes 10 --weights " +
                     dir + "/q.pt --thread-counts 1 --no-baseline --min-seconds 0.01 --json");
  EXPECT_EQ(ok.status, 0) << ok.out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace onebit
