#pragma once
/// \file
/// Where a training step's time goes, per LibTorch operator and autograd node.
///
/// ```
/// onebit::train::OpProfile profile;          // starts recording
/// for (int i = 0; i < 10; ++i) step();       // forward, backward, optimizer step
/// for (const auto& op : profile.ops()) ...   // op.name, op.calls, op.self_seconds
/// ```
///
/// Built on ATen's RecordFunction callbacks, which LibTorch runs for every dispatched operator
/// and, in the backward pass, for every autograd node (named like `ConvolutionBackward0`, or the
/// C++ type of a custom autograd function). An op's self time is its wall time less the wall time
/// of the ops it called, so the self times of the ops add up to the time spent inside recorded
/// ops. Work a kernel hands to LibTorch's intra-op threads counts towards the op that waits for
/// it.

#include <cstdint>
#include <string>
#include <vector>

namespace onebit::train {

/// Records the time of every operator and autograd node run while it is alive (on any thread);
/// one profile at a time in a process.
class OpProfile {
 public:
  /// Per name: how often it ran and its self time (without the ops it called).
  struct Op {
    std::string name;
    int64_t calls = 0;
    double self_seconds = 0;
  };

  /// Starts recording; throws std::logic_error when another OpProfile is alive.
  OpProfile();
  /// Stops recording.
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  /// The ops recorded so far, the largest self time first.
  std::vector<Op> ops() const;

  /// Forgets what was recorded so far (e.g. after warm-up steps); keeps recording.
  void clear();

 private:
  uint64_t handle_ = 0;
};

}  // namespace onebit::train
