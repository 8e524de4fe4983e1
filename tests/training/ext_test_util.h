// Helpers shared by the tests of the extra layers, activations, metrics and serialization.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "onebit/log.h"

namespace onebit::testing {

/// sign with sign(0) = +1, computed independently of the quantizers.
inline at::Tensor sign_ref(const at::Tensor& x) {
  return at::where(x >= 0, at::ones_like(x), -at::ones_like(x));
}

/// Fills every parameter of `m` with normal values scaled by `scale` (so that some latent
/// weights fall outside the STE clip range) and returns it.
template <typename M>
void randomize(M& m, double scale = 1.5) {
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters()) {
    if (p.defined()) p.normal_(0, scale);
  }
}

/// Copies `from` into `to` (both defined), without autograd.
inline void copy_into(at::Tensor& to, const at::Tensor& from) {
  torch::NoGradGuard no_grad;
  to.copy_(from);
}

/// Collects warnings while alive instead of printing them.
class CaptureWarnings {
 public:
  CaptureWarnings() {
    previous_ = set_warning_handler([this](const std::string& m) { text += m + "\n"; });
  }
  ~CaptureWarnings() { set_warning_handler(previous_); }
  std::string text;

 private:
  WarningHandler previous_;
};

/// Expects `f` to throw E whose message contains every string in `parts`.
template <typename E, typename F>
void expect_throw_with(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an exception";
  } catch (const E& e) {
    const std::string what = e.what();
    for (const auto& part : parts) {
      EXPECT_NE(what.find(part), std::string::npos) << "\"" << part << "\" not in: " << what;
    }
  }
}

}  // namespace onebit::testing
