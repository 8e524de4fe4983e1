// The onebit command-line tool: train, evaluate, summarize, convert and run binarized networks.

#include <algorithm>
#include <exception>
#include <iostream>
#include <sstream>
#include <stdexcept>
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

std::vector<int64_t> parse_shape(const std::string& text, const std::string& option) {
  std::vector<int64_t> shape;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != part.size() || v <= 0) {
      throw std::invalid_argument(option + ": expected positive sizes like 3,224,224, got \"" +
                                  text + "\"");
    }
    shape.push_back(v);
  }
  if (shape.empty()) throw std::invalid_argument(option + ": empty shape");
  return shape;
}

}  // namespace onebit::cli

int main(int argc, char** argv) {
  CLI::App app{"onebit: train binarized neural networks and run them fast"};
  app.require_subcommand(1);
  auto& commands = onebit::cli::registry();
  std::stable_sort(commands.begin(), commands.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& command : commands) command.second(app);
  // A repeated single-value option takes its last value, so that options given after a script's
  // defaults override them (`scripts/main.sh --epochs 1` passes `--epochs 6 ... --epochs 1`).
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    for (CLI::Option* opt : sub->get_options()) {
      if (opt->get_items_expected_max() == 1 &&
          opt->get_multi_option_policy() == CLI::MultiOptionPolicy::Throw) {
        opt->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
      }
    }
  }
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
