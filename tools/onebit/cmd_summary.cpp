// onebit summary: Larq's model summary of a zoo model or a trained checkpoint.

#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "commands.h"
#include "onebit/summary.h"
#include "onebit/train/checkpoint.h"
#include "onebit/zoo/models.h"
#include "zoo_args.h"

namespace onebit::cli {
namespace {

void add_summary(CLI::App& app) {
  struct Args {
    std::string model = "larq-mnist", input_shape, checkpoint;
    int64_t num_classes = 0;
    bool json = false, float_model = false, no_macs = false, combine_nested = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "summary", "Print Larq's model summary: bits, memory and MACs per layer, and totals");
  cmd->add_option("--model", a->model, "Zoo model name")->capture_default_str();
  cmd->add_option("--input-shape", a->input_shape,
                  "Input shape C,H,W (default: the model's: 1,28,28 for onebit's MNIST models, "
                  "3,224,224 for the published ones)");
  cmd->add_option("--classes,--num-classes", a->num_classes,
                  "Number of output classes (default: the model's: 10 or 1000)");
  cmd->add_option("--checkpoint", a->checkpoint,
                  "Summarize a trained checkpoint (file or directory) instead of --model");
  cmd->add_flag("--float", a->float_model,
                "Summarize the float copy of the model (all quantizers off)");
  cmd->add_flag("--no-macs", a->no_macs, "Leave out the MAC columns and lines");
  cmd->add_flag("--combine-nested", a->combine_nested,
                "One row per nested graph (block) with its layers' totals, as Larq shows a "
                "nested model (the totals do not change)");
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
      ZooModelArgs z;
      z.model = a->model;
      z.input_shape = a->input_shape;
      z.classes = a->num_classes;
      z.quantized = !a->float_model;
      const ZooModel built = build_zoo_model(z);
      name = built.name;
      shape = built.options.input_shape;
      model = built.model;
    }
    SummaryOptions options;
    options.combine_nested = a->combine_nested;
    auto s = summary(model, shape, name, options);
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
