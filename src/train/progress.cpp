#include "progress.h"

#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <iomanip>

namespace onebit::train {

ProgressBar::ProgressBar(bool enabled, int epoch, int epochs, int64_t steps, int64_t first_step)
    : enabled_(enabled),
      tty_(::isatty(2) != 0),
      epoch_(epoch),
      epochs_(epochs),
      steps_(steps),
      first_step_(first_step),
      next_plain_(first_step),
      start_(std::chrono::steady_clock::now()) {}

std::string ProgressBar::format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "?";
  const auto total = static_cast<int64_t>(seconds + 0.5);
  const int64_t h = total / 3600, m = total / 60 % 60, sec = total % 60;
  char buf[48];
  if (h > 0) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(h),
                  static_cast<long long>(m), static_cast<long long>(sec));
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(m),
                  static_cast<long long>(sec));
  }
  return buf;
}

std::string ProgressBar::line(int64_t step, double loss, double accuracy, double ips,
                              const std::map<std::string, double>& extra) const {
  constexpr int kWidth = 24;
  const int filled = steps_ > 0 ? static_cast<int>(kWidth * step / steps_) : kWidth;
  std::ostringstream s;
  s << "epoch " << epoch_ << "/" << epochs_ << " [";
  for (int i = 0; i < kWidth; ++i) s << (i < filled ? '=' : (i == filled ? '>' : ' '));
  s << "] " << step << "/" << steps_ << std::fixed << std::setprecision(4) << " loss " << loss
    << std::setprecision(2) << " acc " << 100.0 * accuracy << "%" << std::setprecision(0) << " "
    << ips << " img/s";
  const int64_t done = step - first_step_;
  if (done > 0) {
    const double per_step =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count() /
        static_cast<double>(done);
    const double epoch_left = per_step * static_cast<double>(steps_ - step);
    s << " left " << format_duration(epoch_left);
    if (epoch_ < epochs_) {
      // Later epochs at this pace (evaluation not counted).
      s << " (run " << format_duration(epoch_left + per_step * static_cast<double>(steps_) *
                                                        static_cast<double>(epochs_ - epoch_))
        << ")";
    }
  }
  for (const auto& kv : extra) s << std::setprecision(4) << " " << kv.first << " " << kv.second;
  return s.str();
}

void ProgressBar::update(int64_t step, double loss, double accuracy, double ips,
                         const std::map<std::string, double>& extra) {
  if (!enabled_) return;
  if (tty_) {
    auto now = std::chrono::steady_clock::now();
    if (step < steps_ && now - last_draw_ < std::chrono::milliseconds(200)) return;
    last_draw_ = now;
    std::fprintf(stderr, "\r%s\033[K", line(step, loss, accuracy, ips, extra).c_str());
  } else if (step >= next_plain_) {
    std::fprintf(stderr, "%s\n", line(step, loss, accuracy, ips, extra).c_str());
    next_plain_ = step + std::max<int64_t>(1, steps_ / 4);
  }
  std::fflush(stderr);
}

void ProgressBar::finish(const std::string& summary) {
  if (!enabled_) return;
  if (tty_) std::fprintf(stderr, "\n");
  std::fprintf(stderr, "%s\n", summary.c_str());
  std::fflush(stderr);
}

}  // namespace onebit::train
