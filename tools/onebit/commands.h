#pragma once
// Sub-commands of the onebit tool register themselves here; main() builds the CLI from them.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace onebit::cli {

/// Adds a sub-command (and its callback) to the application.
using CommandSetup = std::function<void(CLI::App& app)>;

/// Registers a sub-command at static-initialization time; `order` sorts the help listing.
struct Registrar {
  Registrar(int order, CommandSetup setup);
};

/// Parses a shape such as "3,224,224" given to `option`; throws std::invalid_argument naming the
/// option for anything but positive integers separated by commas.
std::vector<int64_t> parse_shape(const std::string& text,
                                 const std::string& option = "--input-shape");

/// Prints one JSON object on a line of stdout.
void print_json(const nlohmann::json& j);

}  // namespace onebit::cli
