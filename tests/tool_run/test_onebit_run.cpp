// onebit-run as a user runs it: on a model file written by the runtime's builder (no LibTorch),
// `bench` reports the model's facts, latencies and a per-op profile; `run` gives the same scores
// as the Interpreter in this process; `peak` and `conv` report against the measured peak; bad
// input (missing or corrupt model, wrong input size, NaNs, bad options) ends with a message that
// names what was wrong. No test compares a time with a threshold.

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/wait.h>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "onebit/runtime/builder.h"
#include "onebit/runtime/interpreter.h"
#include "onebit/runtime/model.h"

namespace onebit::runtime {
namespace {

struct Result {
  int status = -1;
  std::string out;  // stdout and stderr
};

Result run_tool(const std::string& args) {
  const std::string cmd = std::string(ONEBIT_RUN_PATH) + " " + args + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 4096> buf;
  while (fgets(buf.data(), buf.size(), pipe.get())) out += buf.data();
  const int status = pclose(pipe.release());
  return {WEXITSTATUS(status), out};
}

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '{') lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

std::vector<float> random_values(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

std::vector<float> random_signs(std::size_t n, std::mt19937& rng) {
  std::bernoulli_distribution coin;
  std::vector<float> v(n);
  for (float& x : v) x = coin(rng) ? 1.0f : -1.0f;
  return v;
}

// A small BNN with a shortcut: float stem, binary conv + BN + sign, binary conv, add, pool, dense.
Model small_bnn() {
  std::mt19937 rng(5);
  ModelBuilder b;
  b.set_name_scope("stem");
  ValueRef x = b.conv2d(b.input({3, 12, 12}), Conv2dParams(16, 3).padding(1, 1),
                        random_values(16 * 3 * 9, rng, 0.3f));
  b.set_name_scope("bn");
  x = b.batch_norm(x, random_values(16, rng), random_values(16, rng));
  b.set_name_scope("sign");
  const ValueRef s = b.sign(x);
  b.set_name_scope("binary_conv");
  ValueRef y = b.conv2d(s, Conv2dParams(16, 3).padding(1, 1).binary_kernel(true),
                        random_signs(16 * 16 * 9, rng));
  b.set_name_scope("add");
  y = b.add(y, x);
  b.set_name_scope("pool");
  y = b.max_pool2d(y, Pool2dParams(2));
  b.set_name_scope("head");
  b.output(b.dense(b.flatten(y), DenseParams(10), random_values(10 * 16 * 36, rng, 0.05f)));
  return b.build();
}

class OnebitRun : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("onebit_run_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    model_ = small_bnn();
    model_path_ = (dir_ / "small.obnn").string();
    save_model(model_, model_path_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  void write_floats(const std::string& file, const std::vector<float>& v) const {
    std::ofstream out(file, std::ios::binary);
    out.write(reinterpret_cast<const char*>(v.data()),
              static_cast<std::streamsize>(v.size() * sizeof(float)));
  }

  std::filesystem::path dir_;
  Model model_;
  std::string model_path_;
};

TEST_F(OnebitRun, BenchReportsFactsLatenciesAndAProfileOfEveryOp) {
  const Result r = run_tool("bench " + model_path_ +
                            " --threads 1,2 --batch 4 --min-seconds 0.01 --profile "
                            "--profile-runs 3 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.out;
  const nlohmann::json& j = lines[0];
  const Interpreter net(model_);
  EXPECT_EQ(j["model"], model_path_);
  EXPECT_EQ(j["input_shape"], nlohmann::json(std::vector<std::int64_t>{3, 12, 12}));
  EXPECT_EQ(j["num_classes"].get<std::size_t>(), 10u);
  EXPECT_EQ(j["file_bytes"].get<std::size_t>(), std::filesystem::file_size(model_path_));
  EXPECT_EQ(j["binary_macs"].get<std::int64_t>(), net.binary_macs_per_image());
  EXPECT_EQ(j["activation_bytes"].get<std::size_t>(), net.activation_bytes(1));
  EXPECT_GT(j["peak_rss_bytes"].get<std::size_t>(), 0u);
  EXPECT_FALSE(j["cpu"].get<std::string>().empty());
  ASSERT_EQ(j["latency_batch1"].size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& t = j["latency_batch1"][i];
    EXPECT_EQ(t["threads"].get<int>(), static_cast<int>(i) + 1);
    EXPECT_GT(t["runtime_ms"].get<double>(), 0.0);
    EXPECT_EQ(t["batch"].get<int>(), 4);
    EXPECT_GT(t["images_per_second"].get<double>(), 0.0);
  }
  const auto& p = j["profile"];
  EXPECT_EQ(p["runs"].get<int>(), 3);
  ASSERT_EQ(p["ops"].size(), model_.ops.size());
  double share = 0, total = 0, binary = 0;
  for (std::size_t i = 0; i < model_.ops.size(); ++i) {
    const auto& op = p["ops"][i];
    EXPECT_EQ(op["op"].get<std::size_t>(), i);
    EXPECT_EQ(op["type"], op_name(model_.ops[i].type));
    EXPECT_EQ(op["name"], model_.ops[i].name);
    share += op["share"].get<double>();
    total += op["ms"].get<double>();
    if (op["binary"].get<bool>()) binary += op["ms"].get<double>();
  }
  EXPECT_NEAR(share, 1.0, 1e-9);
  EXPECT_NEAR(p["total_ms"].get<double>(), total, 1e-9 * total);
  EXPECT_NEAR(p["binary_ms"].get<double>(), binary, 1e-9 * total + 1e-12);
  EXPECT_GT(binary, 0.0);  // the binary conv and its quantize ran

  // The text form names the model, the kernels and every op of the profile.
  const Result text = run_tool("bench " + model_path_ +
                               " --threads 1 --min-seconds 0.01 --profile-runs 2 --profile");
  ASSERT_EQ(text.status, 0) << text.out;
  EXPECT_NE(text.out.find("batch-1 latency, median ms"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("binary_conv"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("kernels "), std::string::npos) << text.out;
}

TEST_F(OnebitRun, RunGivesTheInterpretersScores) {
  std::mt19937 rng(9);
  const std::size_t images = 5, per_image = 3 * 12 * 12;
  const std::vector<float> x = random_values(images * per_image, rng);
  write_floats(path("images.f32"), x);
  const Result r = run_tool("run " + model_path_ + " --input " + path("images.f32") + " --output " +
                            path("scores.f32") + " --threads 2 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::vector<float> expected = Interpreter(model_).run(x, images);
  std::ifstream in(path("scores.f32"), std::ios::binary);
  std::vector<float> scores(expected.size());
  in.read(reinterpret_cast<char*>(scores.data()),
          static_cast<std::streamsize>(scores.size() * sizeof(float)));
  ASSERT_EQ(in.gcount(), static_cast<std::streamsize>(scores.size() * sizeof(float)));
  EXPECT_EQ(scores, expected);
  EXPECT_FALSE(std::filesystem::exists(path("scores.f32.tmp")));
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.out;
  ASSERT_EQ(lines[0]["images"].get<std::size_t>(), images);
  for (std::size_t n = 0; n < images; ++n) {
    const auto first = expected.begin() + static_cast<std::ptrdiff_t>(n * 10);
    const auto top = static_cast<std::size_t>(std::max_element(first, first + 10) - first);
    EXPECT_EQ(lines[0]["top"][n]["class"].get<std::size_t>(), top) << n;
  }
}

TEST_F(OnebitRun, PeakAndConvReportAgainstTheMeasuredPeak) {
  const Result p = run_tool("peak --json");
  ASSERT_EQ(p.status, 0) << p.out;
  const auto peak = json_lines(p.out);
  ASSERT_EQ(peak.size(), 1u) << p.out;
  EXPECT_FALSE(peak[0]["peaks"].empty());
  const Result c =
      run_tool("conv --shapes 64x8x8,96x7x7 --threads 1,2 --repeats 1 --min-seconds 0.01 --json");
  ASSERT_EQ(c.status, 0) << c.out;
  const auto lines = json_lines(c.out);
  ASSERT_EQ(lines.size(), 5u) << c.out;  // the peaks, then 2 shapes x 2 thread counts
  double active_peak = 0;
  for (const auto& q : lines[0]["peaks"]) {
    if (q["isa"] == lines[0]["active_isa"]) active_peak = q["binary_macs_per_s"].get<double>();
  }
  ASSERT_GT(active_peak, 0.0) << c.out;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const auto& l = lines[i];
    EXPECT_EQ(l["shape"], i <= 2 ? "64x8x8" : "96x7x7");
    EXPECT_EQ(l["threads"].get<int>(), i % 2 == 1 ? 1 : 2);
    EXPECT_EQ(l["peak_binary_macs_per_s"].get<double>(), active_peak);
    const double expected =
        100.0 * l["binary_macs_per_s"].get<double>() / (active_peak * l["threads"].get<double>());
    EXPECT_NEAR(l["percent_of_peak"].get<double>(), expected, 1e-6 * expected);
  }
}

TEST_F(OnebitRun, BadInputEndsWithAMessageThatNamesIt) {
  const auto expect_error = [](const Result& r, const std::string& text) {
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_NE(r.out.find(text), std::string::npos) << "expected \"" << text << "\" in:\n" << r.out;
  };
  expect_error(run_tool("bench " + path("missing.obnn")), path("missing.obnn"));
  {
    std::ofstream(path("corrupt.obnn"), std::ios::binary) << "this is not a model file";
    expect_error(run_tool("bench " + path("corrupt.obnn")), "corrupt.obnn");
  }
  expect_error(run_tool("bench " + model_path_ + " --threads 0"), "--threads");
  expect_error(run_tool("bench " + model_path_ + " --batch 0"), "--batch");
  expect_error(run_tool("conv --shapes 64x8"), "64x8");
  write_floats(path("short.f32"), std::vector<float>(100, 0.5f));
  expect_error(run_tool("run " + model_path_ + " --input " + path("short.f32")),
               "not a whole number of 3x12x12 float32 images");
  std::vector<float> nan_image(3 * 12 * 12, 0.5f);
  nan_image[7] = std::nanf("");
  write_floats(path("nan.f32"), nan_image);
  expect_error(run_tool("run " + model_path_ + " --input " + path("nan.f32")),
               "nan.f32\": Interpreter::run: input value 7 (image 0, channel 0, row 0, "
               "column 7) is NaN");
  expect_error(run_tool("run " + model_path_ + " --input " + path("none.f32")), "none.f32");
  expect_error(run_tool("frobnicate"), "frobnicate");
}

}  // namespace
}  // namespace onebit::runtime
