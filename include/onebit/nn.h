#pragma once
/// \file
/// All onebit layers.
#include "onebit/nn/batch_norm.h"
#include "onebit/nn/conv.h"
#include "onebit/nn/dense.h"
#include "onebit/nn/quant_layer.h"
