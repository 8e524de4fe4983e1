#pragma once
// Sub-commands of the onebit tool register themselves here; main() builds the CLI from them.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <string>

namespace onebit::cli {

/// Adds a sub-command (and its callback) to the application.
using CommandSetup = std::function<void(CLI::App& app)>;

/// Registers a sub-command at static-initialization time; `order` sorts the help listing.
struct Registrar {
  Registrar(int order, CommandSetup setup);
};

/// Prints one JSON object on a line of stdout.
void print_json(const nlohmann::json& j);

}  // namespace onebit::cli
