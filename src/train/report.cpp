#include "onebit/train/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../json_integer.h"
#include "onebit/io.h"
#include "onebit/optim/scheduler.h"
#include "onebit/summary.h"
#include "onebit/train/checkpoint.h"

namespace onebit::train {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// An epoch count or number from a run's files: 0 when absent; a value that is not an integer is
// an error naming the key (not a truncated or undefined conversion of a float).
int epoch_of(const nlohmann::json& j, const char* key) {
  return j.contains(key) ? detail::json_integer<int>(j.at(key), std::string("\"") + key + "\"") : 0;
}

std::string escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (epoch, value)
};

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

// A line chart as inline SVG: one polyline and one marker per point for each series, axes with
// ticks, and an HTML legend.
std::string chart(const std::string& id, const std::string& title, const std::vector<Series>& input,
                  bool log_y = false) {
  // A log axis needs positive values: with any other value the chart stays linear.
  for (const auto& s : input) {
    for (const auto& p : s.points) log_y = log_y && p.second > 0;
  }
  std::vector<Series> series = input;
  if (log_y) {
    for (auto& s : series) {
      for (auto& p : s.points) p.second = std::log10(p.second);
    }
  }
  constexpr double kW = 560, kH = 260, kLeft = 64, kRight = 16, kTop = 16, kBottom = 36;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  std::size_t total_points = 0;
  for (const auto& s : series) {
    for (const auto& [x, y] : s.points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
      ++total_points;
    }
  }
  std::string out = "<section class=\"chart\" id=\"" + id + "\"><h3>" + escape(title) + "</h3>";
  if (total_points == 0) return out + "<p class=\"empty\">no values yet</p></section>";
  if (x1 == x0) x0 -= 1, x1 += 1;
  if (y1 == y0) {
    const double pad = y0 == 0 ? 1 : std::abs(y0) * 0.1;
    y0 -= pad, y1 += pad;
  } else {
    const double pad = (y1 - y0) * 0.05;
    // Values that cannot be negative (losses, accuracies, ratios) keep the axis at >= 0.
    y0 = (y0 >= 0 && !log_y) ? std::max(0.0, y0 - pad) : y0 - pad;
    y1 += pad;
  }
  const auto shown = [&](double v) { return log_y ? std::pow(10.0, v) : v; };
  const auto px = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * (kW - kLeft - kRight); };
  const auto py = [&](double y) { return kTop + (y1 - y) / (y1 - y0) * (kH - kTop - kBottom); };
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt("%.0f", kW) + "\" height=\"" +
         fmt("%.0f", kH) + "\" viewBox=\"0 0 " + fmt("%.0f", kW) + " " + fmt("%.0f", kH) +
         "\" role=\"img\" aria-label=\"" + escape(title) + "\">";
  out += "<rect x=\"" + fmt("%.1f", kLeft) + "\" y=\"" + fmt("%.1f", kTop) + "\" width=\"" +
         fmt("%.1f", kW - kLeft - kRight) + "\" height=\"" + fmt("%.1f", kH - kTop - kBottom) +
         "\" class=\"plot\"/>";
  for (int i = 0; i <= 4; ++i) {  // y grid and labels
    const double v = y0 + (y1 - y0) * i / 4.0, y = py(v);
    out += "<line x1=\"" + fmt("%.1f", kLeft) + "\" x2=\"" + fmt("%.1f", kW - kRight) + "\" y1=\"" +
           fmt("%.1f", y) + "\" y2=\"" + fmt("%.1f", y) + "\" class=\"grid\"/>";
    out += "<text x=\"" + fmt("%.1f", kLeft - 6) + "\" y=\"" + fmt("%.1f", y + 4) +
           "\" class=\"ylabel\">" + fmt("%.4g", shown(v)) + "</text>";
  }
  const double step = std::max(1.0, std::ceil((x1 - x0) / 10.0));
  for (double e = std::ceil(x0); e <= x1; e += step) {  // epochs on x
    out += "<text x=\"" + fmt("%.1f", px(e)) + "\" y=\"" + fmt("%.1f", kH - kBottom + 16) +
           "\" class=\"xlabel\">" + fmt("%.0f", e) + "</text>";
  }
  out += "<text x=\"" + fmt("%.1f", (kLeft + kW - kRight) / 2) + "\" y=\"" + fmt("%.1f", kH - 4) +
         "\" class=\"xlabel\">epoch</text>";
  std::string legend = "<ul class=\"legend\">";
  for (std::size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    const char* color = kColors[k % (sizeof kColors / sizeof kColors[0])];
    std::string points;
    for (const auto& [x, y] : s.points) {
      points += (points.empty() ? "" : " ") + fmt("%.2f", px(x)) + "," + fmt("%.2f", py(y));
    }
    out += "<g class=\"series\" data-series=\"" + escape(s.name) + "\" data-points=\"" +
           std::to_string(s.points.size()) + "\"><polyline fill=\"none\" stroke=\"" + color +
           "\" stroke-width=\"2\" points=\"" + points + "\"/>";
    for (const auto& [x, y] : s.points) {
      out += "<circle cx=\"" + fmt("%.2f", px(x)) + "\" cy=\"" + fmt("%.2f", py(y)) +
             "\" r=\"3\" fill=\"" + color + "\"><title>" + escape(s.name) + ", epoch " +
             fmt("%.0f", x) + ": " + fmt("%.6g", shown(y)) + "</title></circle>";
    }
    out += "</g>";
    legend += "<li><span class=\"swatch\" style=\"background:" + std::string(color) + "\"></span>" +
              escape(s.name) + "</li>";
  }
  return out + "</svg>" + legend + "</ul></section>";
}

// The series of `key` (a number per epoch) over the history; epochs without it are skipped.
Series series_of(const std::vector<Json>& history, const std::string& key,
                 const std::string& name) {
  Series s{name, {}};
  for (const auto& m : history) {
    if (m.contains(key) && m.at(key).is_number() && m.contains("epoch")) {
      const double v = m.at(key).get<double>();
      if (std::isfinite(v)) s.points.emplace_back(m.at("epoch").get<double>(), v);
    }
  }
  return s;
}

std::string value_text(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) return fmt("%.6g", v.get<double>());
  return v.dump();
}

}  // namespace

std::string render_report(const ReportData& data) {
  const auto& h = data.history;
  std::string page =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
      "style-src 'unsafe-inline'\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<title>" +
      escape(data.title) +
      "</title><style>"
      "body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}"
      "h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}"
      "h3{font-size:15px;margin:0 0 4px}.status{color:#555;margin:0 0 16px}"
      ".figures{display:flex;flex-wrap:wrap;gap:12px}.figure{border:1px solid #ddd;"
      "border-radius:6px;padding:8px 14px;min-width:120px}.figure b{display:block;font-size:20px}"
      ".charts{display:flex;flex-wrap:wrap;gap:20px}.chart{border:1px solid #eee;padding:8px}"
      ".plot{fill:#fafafa;stroke:#999}.grid{stroke:#e4e4e4}.ylabel{font-size:11px;"
      "text-anchor:end;fill:#555}.xlabel{font-size:11px;text-anchor:middle;fill:#555}"
      ".legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:10px;"
      "font-size:12px;max-width:560px}.swatch{display:inline-block;width:12px;height:12px;"
      "margin-right:4px;vertical-align:middle}table{border-collapse:collapse;font-size:13px}"
      "td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}pre{font-size:12px;"
      "background:#f6f6f6;padding:10px;overflow-x:auto}.empty{color:#888}"
      "</style></head><body>\n";
  page += "<h1>" + escape(data.title) + "</h1>";
  const int done = h.empty() ? 0 : epoch_of(h.back(), "epoch");
  std::time_t now = std::time(nullptr);
  char stamp[64];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  page += "<p class=\"status\" id=\"status\">epoch " + std::to_string(done) +
          (data.planned_epochs > 0 ? " of " + std::to_string(data.planned_epochs) : "") +
          (data.planned_epochs > 0 && done >= data.planned_epochs ? " (finished)" : "") +
          "; written " + stamp + "</p>\n";

  // Final figures: the last epoch, the best test accuracy, total time.
  page += "<h2>Figures</h2><div class=\"figures\" id=\"figures\">";
  const auto figure = [&](const std::string& label, const std::string& value) {
    page += "<div class=\"figure\"><b>" + escape(value) + "</b>" + escape(label) + "</div>";
  };
  if (!h.empty()) {
    const Json& last = h.back();
    if (last.contains("test_accuracy"))
      figure("test accuracy", fmt("%.2f%%", 100 * last.at("test_accuracy").get<double>()));
    if (last.contains("test_loss"))
      figure("test loss", fmt("%.4f", last.at("test_loss").get<double>()));
    if (last.contains("train_accuracy"))
      figure("train accuracy", fmt("%.2f%%", 100 * last.at("train_accuracy").get<double>()));
    double best = -1, seconds = 0;
    int best_epoch = 0;
    for (const auto& m : h) {
      if (m.contains("test_accuracy") && m.at("test_accuracy").get<double>() > best) {
        best = m.at("test_accuracy").get<double>(), best_epoch = epoch_of(m, "epoch");
      }
      seconds += m.value("seconds", 0.0);
    }
    if (best >= 0)
      figure("best test accuracy (epoch " + std::to_string(best_epoch) + ")",
             fmt("%.2f%%", 100 * best));
    if (last.contains("images_per_second"))
      figure("images/s (last epoch)", fmt("%.0f", last.at("images_per_second").get<double>()));
    figure("training time", fmt("%.1f s", seconds));
  } else {
    page += "<p class=\"empty\">no epoch finished yet</p>";
  }
  page += "</div>\n";

  // Curves.
  std::vector<Series> flips;
  std::map<std::string, Series> by_layer;
  for (const auto& m : h) {
    if (!m.contains("flip_ratio") || !m.at("flip_ratio").is_object()) continue;
    for (const auto& item : m.at("flip_ratio").items()) {
      if (!item.value().is_number()) continue;
      Series& s = by_layer[item.key()];
      s.name = item.key();
      s.points.emplace_back(epoch_of(m, "epoch"), item.value().get<double>());
    }
  }
  for (auto& item : by_layer) flips.push_back(std::move(item.second));
  std::vector<Series> schedule;
  for (const auto& m : h) {
    for (const auto& item : m.items()) {
      const std::string& k = item.key();
      const bool hyper = k == "lr" || k == "gamma" || k == "threshold" || k == "momentum" ||
                         k.find("/lr") != std::string::npos ||
                         k.find("/gamma") != std::string::npos ||
                         k.find("/threshold") != std::string::npos;
      if (hyper && std::none_of(schedule.begin(), schedule.end(),
                                [&](const Series& s) { return s.name == k; })) {
        schedule.push_back(series_of(h, k, k));
      }
    }
  }
  page += "<h2>Curves</h2><div class=\"charts\">";
  page += chart("loss", "Loss",
                {series_of(h, "train_loss", "train loss"), series_of(h, "test_loss", "test loss")});
  page += chart("accuracy", "Accuracy",
                {series_of(h, "train_accuracy", "train accuracy"),
                 series_of(h, "test_accuracy", "test accuracy")});
  page += chart("flip_ratio", "Flip ratio per layer (share of binary weights that changed sign)",
                flips);
  page += chart("schedule", "Schedules (learning rate, Bop gamma and threshold; log scale)",
                schedule, /*log_y=*/true);
  page += "</div>\n";

  if (!flips.empty()) {
    page +=
        "<h2>Flip ratio, last epoch</h2><table id=\"flip_table\"><tr><th>layer</th>"
        "<th>flip ratio</th></tr>";
    for (const auto& s : flips) {
      page += "<tr><td>" + escape(s.name) + "</td><td>" + fmt("%.6g", s.points.back().second) +
              "</td></tr>";
    }
    page += "</table>\n";
  }
  if (!data.summary_table.empty()) {
    page += "<h2>Model summary</h2><pre id=\"summary\">" + escape(data.summary_table) + "</pre>\n";
  }
  if (data.config.is_object() && !data.config.empty()) {
    page += "<h2>Configuration</h2><table id=\"config\"><tr><th>option</th><th>value</th></tr>";
    for (const auto& item : data.config.items()) {
      page += "<tr><td>" + escape(item.key()) + "</td><td>" + escape(value_text(item.value())) +
              "</td></tr>";
    }
    page += "</table>\n";
  }
  return page + "</body></html>\n";
}

std::vector<Json> read_metrics(const std::string& path) {
  std::vector<Json> out;
  std::ifstream in(path);
  if (!in) return out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Json j = Json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      throw std::runtime_error(path + ": line " + std::to_string(number) +
                               " is not a JSON object of epoch metrics");
    }
    out.push_back(std::move(j));
  }
  return out;
}

std::string write_report(const std::string& run_dir) {
  const fs::path dir(run_dir);
  const std::string config_path = (dir / "config.json").string();
  std::ifstream in(config_path);
  if (!in) throw std::runtime_error(config_path + ": cannot read the run's config");
  const Json config = Json::parse(in, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    throw std::runtime_error(config_path + ": not a JSON object");
  }
  ReportData data;
  data.config = config;
  data.title = config.value("model", std::string("model")) + ": " + run_dir;
  data.planned_epochs = epoch_of(config, "epochs");
  data.history = read_metrics((dir / "metrics.jsonl").string());
  const fs::path checkpoint = dir / "checkpoint.pt";
  if (fs::exists(checkpoint)) {
    const Checkpoint ck = load_checkpoint(checkpoint.string());
    std::vector<int64_t> shape;
    if (config.contains("model_options") && config.at("model_options").contains("input_shape")) {
      shape = config.at("model_options").at("input_shape").get<std::vector<int64_t>>();
    }
    if (!shape.empty()) {
      data.summary_table =
          summary(ck.model, shape, config.value("model", std::string("model"))).to_string();
    }
  }
  const std::string path = (dir / "report.html").string();
  io::atomic_write_text(path, render_report(data));
  return path;
}

ReportCallback::ReportCallback(TrainOptions options, std::vector<int64_t> input_shape,
                               std::string title)
    : options_(std::move(options)), input_shape_(std::move(input_shape)) {
  data_.title = std::move(title);
  data_.config = options_.to_json();
  data_.planned_epochs = options_.epochs;
}

std::string ReportCallback::path() const {
  return (fs::path(options_.out_dir) / "report.html").string();
}

void ReportCallback::on_train_begin(Context& ctx) {
  // A resumed run shows its earlier epochs too.
  data_.history = read_metrics((fs::path(options_.out_dir) / "metrics.jsonl").string());
  if (!input_shape_.empty()) {
    try {
      data_.summary_table = summary(ctx.model, input_shape_, options_.model).to_string();
    } catch (const std::exception& e) {
      data_.summary_table = std::string("(no summary: ") + e.what() + ")";
    }
  }
  io::atomic_write_text(path(), render_report(data_));
}

void ReportCallback::on_epoch_end(Context& ctx, Json& metrics) {
  for (const std::string name : {"lr", "gamma", "threshold"}) {
    // A scheduler logs "name" or "optimizer/name".
    const std::string suffix = "/" + name;
    bool logged = false;
    for (const auto& item : metrics.items()) {
      const std::string& k = item.key();
      logged |= k == name || (k.size() > suffix.size() &&
                              k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0);
    }
    if (logged || ctx.optimizer == nullptr) continue;
    try {
      metrics[name] = optim::get_hyperparameter(*ctx.optimizer, name);
    } catch (const std::invalid_argument&) {  // this optimizer has no such hyperparameter
    }
  }
  data_.history.push_back(metrics);
  io::atomic_write_text(path(), render_report(data_));
}

}  // namespace onebit::train
