// Precompiled header shared by the LibTorch-based targets: LibTorch's headers cost 10-20 s per
// file to parse on a small machine.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <memory>
#include <string>
#include <vector>
