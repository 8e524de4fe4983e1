// The run report's renderer and its inputs: series per metric, escaping, the no-request policy,
// corrupt metrics files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "ext_test_util.h"
#include "onebit/train/report.h"

using namespace onebit;
using onebit::testing::expect_throw_with;
namespace fs = std::filesystem;

namespace {

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST(Report, EveryMetricBecomesASeriesWithOnePointPerEpoch) {
  train::ReportData d;
  d.title = "bireal <test> & co";
  d.planned_epochs = 4;
  d.config = {{"model", "bireal-mnist"}, {"lr", 0.001}, {"note", "<script>alert(1)</script>"}};
  for (int e = 1; e <= 3; ++e) {
    d.history.push_back({{"epoch", e},
                         {"train_loss", 1.0 / e},
                         {"test_loss", 1.1 / e},
                         {"train_accuracy", 0.5 + 0.1 * e},
                         {"test_accuracy", 0.45 + 0.1 * e},
                         {"images_per_second", 1000.0},
                         {"seconds", 2.0},
                         {"lr", 0.001 / e},
                         {"bop/gamma", 1e-4},
                         {"flip_ratio", {{"conv<1>", 0.01 / e}, {"dense", 0.02 / e}}}});
  }
  d.summary_table = "+ layer | params +";
  const std::string html = train::render_report(d);
  for (const char* s : {"train loss", "test loss", "train accuracy", "test accuracy", "lr",
                        "bop/gamma", "conv&lt;1&gt;", "dense"}) {
    EXPECT_NE(html.find("data-series=\"" + std::string(s) + "\" data-points=\"3\""),
              std::string::npos)
        << s;
  }
  EXPECT_EQ(count(html, "<circle"), 8u * 3u);
  EXPECT_EQ(count(html, "<script"), 0u);  // the config's text is escaped, the page has no script
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("bireal &lt;test&gt; &amp; co"), std::string::npos);
  EXPECT_NE(html.find("Content-Security-Policy\" content=\"default-src 'none'"), std::string::npos);
  EXPECT_NE(html.find("epoch 3 of 4;"), std::string::npos);
  EXPECT_NE(html.find("75.00%"), std::string::npos);  // best test accuracy, epoch 3
  EXPECT_NE(html.find("best test accuracy (epoch 3)"), std::string::npos);
  EXPECT_NE(html.find("+ layer | params +"), std::string::npos);
  // Nothing to fetch: the only URL is the SVG namespace name.
  EXPECT_EQ(count(html, "http:") + count(html, "https:"),
            count(html, "http://www.w3.org/2000/svg"));
}

TEST(Report, AnEmptyRunRendersAndCorruptMetricsNameTheLine) {
  const std::string empty = train::render_report({});
  EXPECT_NE(empty.find("no epoch finished yet"), std::string::npos);
  EXPECT_EQ(count(empty, "<circle"), 0u);

  const fs::path dir = fs::temp_directory_path() / "onebit_test_report";
  fs::create_directories(dir);
  const std::string metrics = (dir / "metrics.jsonl").string();
  std::ofstream(metrics) << "{\"epoch\": 1, \"test_accuracy\": 0.5}\n\n[1, 2]\n";
  expect_throw_with<std::runtime_error>([&] { train::read_metrics(metrics); },
                                        {metrics, "line 3", "not a JSON object"});
  EXPECT_TRUE(train::read_metrics((dir / "missing.jsonl").string()).empty());
  expect_throw_with<std::runtime_error>([&] { train::write_report((dir / "nope").string()); },
                                        {"config.json", "cannot read"});
  fs::remove_all(dir);
}
