#pragma once
/// \file
/// All onebit layers.
#include "onebit/nn/activations.h"
#include "onebit/nn/batch_norm.h"
#include "onebit/nn/blocks.h"
#include "onebit/nn/conv.h"
#include "onebit/nn/dense.h"
#include "onebit/nn/depthwise.h"
#include "onebit/nn/locally_connected.h"
#include "onebit/nn/padding.h"
#include "onebit/nn/quant_layer.h"
#include "onebit/nn/separable.h"
#include "onebit/nn/transpose.h"
