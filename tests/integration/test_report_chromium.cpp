// The HTML report of a real training run, opened in a real headless Chromium (Debian's chromium,
// installed by scripts/setup.sh): the curves render with one marker per epoch, the page makes no
// network request (Chromium's own net log is read back), and a screenshot is taken.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "onebit/train/report.h"
#include "onebit/train/trainer.h"

namespace fs = std::filesystem;
using namespace onebit;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const char* chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (fs::exists(p)) return p;
  }
  return nullptr;
}

// Runs headless Chromium on `page` with `extra` arguments (--dump-dom, --screenshot=...), a fresh
// profile and a net log; returns stdout.
std::string run_chromium(const std::string& page, const std::string& extra,
                         const std::string& net_log, const std::string& profile) {
  const std::string cmd = std::string(chromium()) +
                          " --headless=new --no-sandbox --disable-gpu --no-first-run "
                          "--disable-extensions --disable-background-networking "
                          "--user-data-dir=" +
                          profile + " --log-net-log=" + net_log + " --window-size=1300,2400 " +
                          extra + " file://" + page + " 2>/dev/null";
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  pclose(pipe);
  return out;
}

// URLs the page itself asked for: net-log events whose initiator is the page's (opaque, "null")
// file origin. Chromium's own background traffic has initiator "not an origin".
std::set<std::string> page_requests(const std::string& net_log) {
  std::set<std::string> urls;
  const auto log = nlohmann::json::parse(read_all(net_log), nullptr, false);
  if (log.is_discarded() || !log.contains("events")) {
    urls.insert("<unreadable net log " + net_log + ">");
    return urls;
  }
  for (const auto& e : log.at("events")) {
    if (!e.contains("params")) continue;
    const auto& p = e.at("params");
    if (p.is_object() && p.value("initiator", "") == "null" && p.contains("url")) {
      const std::string url = p.at("url").get<std::string>();
      if (url.rfind("file:", 0) != 0 && url.rfind("data:", 0) != 0) urls.insert(url);
    }
  }
  return urls;
}

}  // namespace

TEST(Report, RendersInHeadlessChromiumWithoutNetworkRequests) {
  if (!chromium()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  const fs::path dir = fs::temp_directory_path() / ("onebit_report_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  train::TrainOptions o;
  o.model = "larq-mnist";
  o.epochs = 3;
  o.train_limit = 512;
  o.test_limit = 256;
  o.threads = 2;
  o.progress = false;
  o.optimizer = "bop";
  o.out_dir = dir.string();
  const auto result = train::train(o);
  ASSERT_EQ(result.epochs, 3);
  const std::string page = (dir / "report.html").string();
  ASSERT_TRUE(fs::exists(page));

  // The DOM after Chromium parsed and laid it out: every curve has one marker per epoch.
  const std::string dom =
      run_chromium(page, "--dump-dom", (dir / "net1.json").string(), (dir / "profile1").string());
  ASSERT_NE(dom.find("<svg"), std::string::npos) << dom.substr(0, 500);
  for (const char* series : {"train loss", "test loss", "train accuracy", "test accuracy", "lr"}) {
    EXPECT_NE(dom.find("data-series=\"" + std::string(series) + "\" data-points=\"3\""),
              std::string::npos)
        << series;
  }
  // Bop's gamma (its default cosine schedule logs it as "bop/gamma") and threshold are logged and
  // drawn; larq-mnist has 5 binary kernels.
  EXPECT_NE(dom.find("data-series=\"bop/gamma\" data-points=\"3\""), std::string::npos);
  const std::regex flip_series("<g class=\"series\" data-series=\"[^\"]+\" data-points=\"3\">");
  std::size_t series_count = 0;
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), flip_series);
       it != std::sregex_iterator(); ++it) {
    ++series_count;
  }
  EXPECT_GE(series_count, 4u + 2u + 5u);  // loss, accuracy, schedule (lr, gamma, ...), 5 layers
  std::size_t circles = 0;
  for (std::size_t at = dom.find("<circle"); at != std::string::npos;
       at = dom.find("<circle", at + 1)) {
    ++circles;
  }
  EXPECT_EQ(circles, 3 * series_count);
  EXPECT_NE(dom.find("Model summary"), std::string::npos);
  EXPECT_NE(dom.find("epoch 3 of 3 (finished)"), std::string::npos);
  EXPECT_TRUE(page_requests((dir / "net1.json").string()).empty());

  // A screenshot: a real PNG of a real size.
  const std::string shot = (dir / "report.png").string();
  run_chromium(page, "--screenshot=" + shot, (dir / "net2.json").string(),
               (dir / "profile2").string());
  ASSERT_TRUE(fs::exists(shot));
  const std::string png = read_all(shot);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  EXPECT_GT(png.size(), 20000u) << "a blank page would compress to a few kB";
  EXPECT_TRUE(page_requests((dir / "net2.json").string()).empty());

  // The check itself sees a request when a page makes one.
  const std::string leaky = (dir / "leaky.html").string();
  std::ofstream(leaky) << "<!DOCTYPE html><img src=\"http://127.0.0.1:9/x.png\">";
  run_chromium(leaky, "--dump-dom", (dir / "net3.json").string(), (dir / "profile3").string());
  EXPECT_EQ(page_requests((dir / "net3.json").string()).count("http://127.0.0.1:9/x.png"), 1u);
  if (std::getenv("ONEBIT_KEEP_REPORT") == nullptr) fs::remove_all(dir);
}
