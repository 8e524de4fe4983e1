#pragma once
/// \file
/// Helpers shared by the layers' pretty_print.

#include <ostream>

#include "onebit/constraints.h"
#include "onebit/quantizers.h"

namespace onebit::nn {

/// Writes ", input_quantizer=..., kernel_quantizer=..., kernel_constraint=..." for the set ones.
void print_quantizers(std::ostream& stream, const quantizers::QuantizerPtr& input,
                      const quantizers::QuantizerPtr& kernel,
                      const constraints::ConstraintPtr& constraint);

}  // namespace onebit::nn
