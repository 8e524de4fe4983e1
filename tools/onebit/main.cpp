// The onebit command-line tool: train, evaluate, summarize, convert and run binarized networks.

#include <algorithm>
#include <exception>
#include <iostream>
#include <utility>
#include <vector>

#include "commands.h"

namespace onebit::cli {
namespace {
std::vector<std::pair<int, CommandSetup>>& registry() {
  static std::vector<std::pair<int, CommandSetup>> r;
  return r;
}
}  // namespace

Registrar::Registrar(int order, CommandSetup setup) {
  registry().emplace_back(order, std::move(setup));
}

void print_json(const nlohmann::json& j) { std::cout << j.dump() << std::endl; }

}  // namespace onebit::cli

int main(int argc, char** argv) {
  CLI::App app{"onebit: train binarized neural networks and run them fast"};
  app.require_subcommand(1);
  auto& commands = onebit::cli::registry();
  std::stable_sort(commands.begin(), commands.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& command : commands) command.second(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "onebit: error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
