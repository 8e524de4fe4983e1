#include "onebit/nn/format.h"

namespace onebit::nn {

void print_quantizers(std::ostream& stream, const quantizers::QuantizerPtr& input,
                      const quantizers::QuantizerPtr& kernel,
                      const constraints::ConstraintPtr& constraint) {
  if (input) stream << ", input_quantizer=" << input->id();
  if (kernel) stream << ", kernel_quantizer=" << kernel->id();
  if (constraint) stream << ", kernel_constraint=" << constraint->id();
}

}  // namespace onebit::nn
