#include "onebit/optim/fused_adam.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <tuple>

#include "state_key.h"

namespace onebit::optim {
namespace {

// The scalars of one step of one parameter, as LibTorch's tensor operations see them (double
// options rounded to float where a float tensor meets them).
struct StepScalars {
  float beta1 = 0, one_minus_beta1 = 0, beta2 = 0, one_minus_beta2 = 0;
  float weight_decay = 0;      // Adam: added to the gradient (grad + wd * p)
  float decay_factor = 1;      // AdamW: p * (1 - lr * wd) before the update
  float sqrt_correction2 = 1;  // sqrt(1 - beta2^t)
  float eps = 0;
  float neg_step_size = 0;  // -lr / (1 - beta1^t)
  bool amsgrad = false;
};

// One pass over elements [begin, end): p, g (read), m, v, vmax (read and written; vmax only with
// AMSGrad). The options are template parameters so that the loop has no branch, and the file is
// compiled with -fno-math-errno (CMakeLists.txt: a square root that may set errno is a call, and
// the loop would not vectorize; the roots here are of non-negative numbers or NaN).
template <bool kDecoupledDecay, bool kL2, bool kAmsgrad>
void update_range(float* p, const float* g, float* m, float* v, float* vmax, std::int64_t begin,
                  std::int64_t end, const StepScalars& s) {
  const float beta1 = s.beta1, one_minus_beta1 = s.one_minus_beta1, beta2 = s.beta2,
              one_minus_beta2 = s.one_minus_beta2, decay = s.decay_factor, l2 = s.weight_decay,
              sqrt_correction2 = s.sqrt_correction2, eps = s.eps, step = s.neg_step_size;
  for (std::int64_t i = begin; i < end; ++i) {
    float pi = p[i];
    if constexpr (kDecoupledDecay) pi = pi * decay;
    float gi = g[i];
    if constexpr (kL2) gi = gi + l2 * pi;
    const float mi = m[i] * beta1 + one_minus_beta1 * gi;
    const float vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float second = vi;
    if constexpr (kAmsgrad) {
      second = vmax[i] > vi ? vmax[i] : vi;  // a NaN moment stays NaN, as in at::max
      vmax[i] = second;
    }
    const float denom = std::sqrt(second) / sqrt_correction2 + eps;
    p[i] = pi + step * (mi / denom);
  }
}

template <bool kDecoupledDecay, bool kL2>
void update_range(float* p, const float* g, float* m, float* v, float* vmax, std::int64_t begin,
                  std::int64_t end, const StepScalars& s) {
  if (s.amsgrad) {
    update_range<kDecoupledDecay, kL2, true>(p, g, m, v, vmax, begin, end, s);
  } else {
    update_range<kDecoupledDecay, kL2, false>(p, g, m, v, vmax, begin, end, s);
  }
}

void fused_update(float* p, const float* g, float* m, float* v, float* vmax, std::int64_t n,
                  const StepScalars& s) {
  at::parallel_for(0, n, 16384, [&](std::int64_t begin, std::int64_t end) {
    if (s.decay_factor != 1.0f) {
      update_range<true, false>(p, g, m, v, vmax, begin, end, s);
    } else if (s.weight_decay != 0.0f) {
      update_range<false, true>(p, g, m, v, vmax, begin, end, s);
    } else {
      update_range<false, false>(p, g, m, v, vmax, begin, end, s);
    }
  });
}

bool fusable(const at::Tensor& t, const at::Tensor& p) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
         t.numel() == p.numel();
}

// LibTorch's operations, for parameters the loop does not take (double, non-contiguous, GPU).
void reference_update(at::Tensor& p, at::Tensor grad, at::Tensor& m, at::Tensor& v,
                      at::Tensor& vmax, double lr, double beta1, double beta2, double eps,
                      double weight_decay, bool decoupled, bool amsgrad, double correction1,
                      double correction2) {
  if (decoupled && weight_decay != 0) p.mul_(1 - lr * weight_decay);
  if (!decoupled && weight_decay != 0) grad = grad.add(p, weight_decay);
  m.mul_(beta1).add_(grad, 1 - beta1);
  v.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  at::Tensor denom;
  if (amsgrad) {
    at::max_out(vmax, v, vmax);
    denom = (vmax.sqrt() / std::sqrt(correction2)).add_(eps);
  } else {
    denom = (v.sqrt() / std::sqrt(correction2)).add_(eps);
  }
  p.addcdiv_(m, denom, -lr / correction1);
}

// The step of Adam (decoupled = false) or AdamW (true) over an optimizer's groups and state.
template <typename Options, typename State, typename Optimizer>
at::Tensor fused_step(Optimizer& opt, const torch::optim::Optimizer::LossClosure& closure,
                      bool decoupled, const char* name) {
  at::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  at::NoGradGuard no_grad;
  auto& state = opt.state();
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const Options&>(group.options());
    for (at::Tensor& p : group.params()) {
      if (!p.grad().defined()) continue;
      const at::Tensor grad = p.grad();
      if (grad.is_sparse()) {
        throw std::invalid_argument(std::string(name) +
                                    " does not support sparse gradients; use SparseAdam");
      }
      const auto key = detail::state_key(p);
      auto it = state.find(key);
      if (it == state.end()) {
        auto s = std::make_unique<State>();
        s->step(0);
        s->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        s->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        if (o.amsgrad()) s->max_exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        it = state.emplace(key, std::move(s)).first;
      }
      auto& s = static_cast<State&>(*it->second);
      s.step(s.step() + 1);
      const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
      const double correction1 = 1 - std::pow(beta1, static_cast<double>(s.step()));
      const double correction2 = 1 - std::pow(beta2, static_cast<double>(s.step()));
      at::Tensor m = s.exp_avg(), v = s.exp_avg_sq(), vmax = s.max_exp_avg_sq();
      if (!(fusable(p, p) && fusable(grad, p) && fusable(m, p) && fusable(v, p) &&
            (!o.amsgrad() || fusable(vmax, p)))) {
        reference_update(p, grad, m, v, vmax, o.lr(), beta1, beta2, o.eps(), o.weight_decay(),
                         decoupled, o.amsgrad(), correction1, correction2);
        continue;
      }
      StepScalars k;
      k.beta1 = static_cast<float>(beta1);
      k.one_minus_beta1 = static_cast<float>(1 - beta1);
      k.beta2 = static_cast<float>(beta2);
      k.one_minus_beta2 = static_cast<float>(1 - beta2);
      if (o.weight_decay() != 0) {
        if (decoupled) {
          k.decay_factor = static_cast<float>(1 - o.lr() * o.weight_decay());
        } else {
          k.weight_decay = static_cast<float>(o.weight_decay());
        }
      }
      k.sqrt_correction2 = static_cast<float>(std::sqrt(correction2));
      k.eps = static_cast<float>(o.eps());
      k.neg_step_size = static_cast<float>(-o.lr() / correction1);
      k.amsgrad = o.amsgrad();
      fused_update(p.data_ptr<float>(), grad.data_ptr<float>(), m.data_ptr<float>(),
                   v.data_ptr<float>(), o.amsgrad() ? vmax.data_ptr<float>() : nullptr, p.numel(),
                   k);
    }
  }
  return loss;
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  return fused_step<torch::optim::AdamOptions, torch::optim::AdamParamState>(*this, closure, false,
                                                                             "FusedAdam");
}

torch::Tensor FusedAdamW::step(LossClosure closure) {
  return fused_step<torch::optim::AdamWOptions, torch::optim::AdamWParamState>(*this, closure, true,
                                                                               "FusedAdamW");
}

}  // namespace onebit::optim
