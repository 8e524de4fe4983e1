#include "progress.h"

#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <iomanip>

namespace onebit::train {

ProgressBar::ProgressBar(bool enabled, int epoch, int epochs, int64_t steps)
    : enabled_(enabled), tty_(::isatty(2) != 0), epoch_(epoch), epochs_(epochs), steps_(steps) {}

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
