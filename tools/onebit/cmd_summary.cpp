// onebit summary: Larq's model summary of a zoo model or a trained checkpoint.

#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "commands.h"
#include "onebit/summary.h"
#include "onebit/train/checkpoint.h"
#include "onebit/zoo/models.h"

namespace onebit::cli {
namespace {

std::vector<int64_t> parse_shape(const std::string& text) {
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
      throw std::invalid_argument("--input-shape: expected positive sizes like 1,28,28, got \"" +
                                  text + "\"");
    }
    shape.push_back(v);
  }
  if (shape.empty()) throw std::invalid_argument("--input-shape: empty shape");
  return shape;
}

void add_summary(CLI::App& app) {
  struct Args {
    std::string model = "larq-mnist", input_shape, checkpoint;
    int64_t num_classes = 10;
    bool json = false, float_model = false, no_macs = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "summary", "Print Larq's model summary: bits, memory and MACs per layer, and totals");
  cmd->add_option("--model", a->model, "Zoo model name")->capture_default_str();
  cmd->add_option("--input-shape", a->input_shape,
                  "Input shape C,H,W (default: the model's, 1,28,28)");
  cmd->add_option("--num-classes", a->num_classes, "Number of output classes")
      ->capture_default_str();
  cmd->add_option("--checkpoint", a->checkpoint,
                  "Summarize a trained checkpoint (file or directory) instead of --model");
  cmd->add_flag("--float", a->float_model,
                "Summarize the float copy of the model (all quantizers off)");
  cmd->add_flag("--no-macs", a->no_macs, "Leave out the MAC columns and lines");
  cmd->add_flag("--json", a->json, "Print the numbers as one JSON object");
  cmd->callback([a] {
    nn::Graph model(nullptr);
    std::vector<int64_t> shape;
    std::string name;
    if (!a->checkpoint.empty()) {
      auto ck = train::load_checkpoint(a->checkpoint);
      const auto& t = ck.config.at("train");
      name = t.at("model").get<std::string>();
      auto options = zoo::ModelOptions::from_json(t.at("model_options"));
      shape = a->input_shape.empty() ? options.input_shape : parse_shape(a->input_shape);
      model = ck.model;
    } else {
      zoo::ModelOptions options;
      options.quantized = !a->float_model;
      options.num_classes = a->num_classes;
      if (!a->input_shape.empty()) options.input_shape = parse_shape(a->input_shape);
      shape = options.input_shape;
      name = a->model;
      model = zoo::build(a->model, options);
    }
    auto s = summary(model, shape, name);
    if (a->json) {
      print_json(s.to_json());
    } else {
      std::cout << s.to_string(!a->no_macs) << std::flush;
    }
  });
}

const Registrar summary_cmd(30, add_summary);

}  // namespace
}  // namespace onebit::cli
