#include "zoo_args.h"

#include "commands.h"
#include "onebit/train/checkpoint.h"

namespace onebit::cli {

ZooModel build_zoo_model(const ZooModelArgs& args) {
  ZooModel z;
  z.name = zoo::canonical_name(args.model);
  zoo::ModelOptions o;
  o.quantized = args.quantized;
  o.num_classes = args.classes;
  if (!args.input_shape.empty()) o.input_shape = parse_shape(args.input_shape);
  z.options = zoo::resolve_options(z.name, o);
  z.model = zoo::build(z.name, z.options);
  if (!args.weights.empty()) train::load_model_state(args.weights, z.model);
  z.model->eval();
  return z;
}

}  // namespace onebit::cli
