#pragma once
// Progress line on stderr: redrawn in place on a terminal, a few plain lines otherwise.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace onebit::train {

class ProgressBar {
 public:
  /// A bar for `epoch` of `epochs`, whose `steps` batches start at `first_step` (a resumed
  /// epoch starts after its first batches). Time left is estimated from this epoch's pace.
  ProgressBar(bool enabled, int epoch, int epochs, int64_t steps, int64_t first_step = 0);
  /// "1:02:03" / "2:03" for a number of seconds.
  static std::string format_duration(double seconds);
  /// Updates after `step` of `steps` batches.
  void update(int64_t step, double loss, double accuracy, double images_per_second,
              const std::map<std::string, double>& extra);
  /// Ends the line with the epoch's summary.
  void finish(const std::string& summary);

 private:
  std::string line(int64_t step, double loss, double accuracy, double ips,
                   const std::map<std::string, double>& extra) const;
  bool enabled_;
  bool tty_;
  int epoch_, epochs_;
  int64_t steps_;
  int64_t first_step_;
  int64_t next_plain_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace onebit::train
