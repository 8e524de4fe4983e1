// onebit convert: a trained checkpoint -> a bit-packed .obnn model for onebit_runtime.

#include <iomanip>
#include <iostream>
#include <memory>

#include "commands.h"
#include "onebit/convert.h"
#include "onebit/summary.h"
#include "zoo_args.h"

namespace onebit::cli {
namespace {

struct Args {
  std::string checkpoint, out = "model.obnn";
  ZooModelArgs zoo;
  bool json = false, no_fuse = false;
  int max_thermometer_bits = ConvertOptions{}.max_thermometer_bits;
  std::uint32_t format_version = ConvertOptions{}.format_version;
};

// `--model NAME [--weights FILE]`: a zoo model converted like a checkpoint.
ConvertResult convert_zoo_model(const Args& a, ConvertOptions options) {
  const ZooModel z = build_zoo_model(a.zoo);
  options.metadata.emplace("model", z.name);
  if (!a.zoo.weights.empty()) options.metadata.emplace("checkpoint", a.zoo.weights);
  ConvertResult r = convert_to_file(z.model, z.options.input_shape, a.out, options, z.name);
  r.checkpoint = a.zoo.weights;
  return r;
}

void add_convert(CLI::App& app) {
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("convert",
                                 "Convert a trained checkpoint (or a zoo model) into a bit-packed "
                                 ".obnn model for the runtime");
  auto* ck = cmd->add_option("--checkpoint", a->checkpoint,
                             "Checkpoint file or training output directory");
  auto* model = cmd->add_option("--model", a->zoo.model,
                                "Convert this zoo model instead (random weights, or --weights)");
  ck->excludes(model);
  cmd->add_option("--weights", a->zoo.weights,
                  "With --model: load the weights of this checkpoint; missing or mis-shaped "
                  "tensors are listed")
      ->needs(model);
  cmd->add_option("--input-shape", a->zoo.input_shape, "With --model: input C,H,W")->needs(model);
  cmd->add_option("--classes", a->zoo.classes, "With --model: number of classes")->needs(model);
  cmd->add_option("--out", a->out, "The .obnn file to write (atomically)")->capture_default_str();
  cmd->add_flag("--no-fuse", a->no_fuse,
                "Keep batch norm and sign as separate ops (same results, slower)");
  cmd->add_option("--max-thermometer-bits", a->max_thermometer_bits,
                  "k-bit activations (DoReFa) up to this k run on packed bits as 2^k - 1 "
                  "thermometer planes into binary layers; larger k, or 0, as float levels into "
                  "float layers")
      ->capture_default_str()
      ->check(CLI::Range(0, 6));
  cmd->add_option("--format-version", a->format_version,
                  "The .obnn format version to write, for an older runtime (3: no thermometer "
                  "planes, see --max-thermometer-bits)")
      ->capture_default_str()
      ->check(CLI::Range(1u, runtime::kModelFormatVersion));
  cmd->add_flag("--json", a->json, "Print the result as one JSON line");
  cmd->callback([a] {
    ConvertOptions options;
    options.fuse = !a->no_fuse;
    options.max_thermometer_bits = a->max_thermometer_bits;
    options.format_version = a->format_version;
    if (a->checkpoint.empty() && a->zoo.model.empty()) {
      throw std::invalid_argument("convert: give --checkpoint or --model");
    }
    const ConvertResult r = a->zoo.model.empty()
                                ? convert_checkpoint(a->checkpoint, a->out, options)
                                : convert_zoo_model(*a, options);
    const double float32_bytes = static_cast<double>(r.float32_bits) / 8.0;
    const double summary_bytes = static_cast<double>(r.summary_bits) / 8.0;
    const double ratio = static_cast<double>(r.file_bytes) / float32_bytes;
    if (a->json) {
      print_json({{"out", r.out_path},
                  {"checkpoint", r.checkpoint},
                  {"model", r.model_name},
                  {"file_bytes", r.file_bytes},
                  {"binary_weights", r.storage.binary_weights},
                  {"stored_numbers", r.storage.stored_numbers},
                  {"summary_bytes", summary_bytes},
                  {"float32_bytes", float32_bytes},
                  {"ratio_to_float32", ratio}});
      return;
    }
    std::cout << "wrote " << r.out_path << ": " << r.file_bytes << " bytes ("
              << format_memory(8.0 * static_cast<double>(r.file_bytes)) << ")\n"
              << "  binary weights: " << r.storage.binary_weights
              << " (1 bit each), other numbers: " << r.storage.stored_numbers << " (32 bits each)\n"
              << "  summary model size: " << format_memory(static_cast<double>(r.summary_bits))
              << ", float32 model: " << format_memory(static_cast<double>(r.float32_bits)) << "\n"
              << std::fixed << std::setprecision(4) << "  file / float32 size: " << ratio << " ("
              << std::setprecision(1) << 1.0 / ratio << "x smaller)" << std::endl;
  });
}

const Registrar convert_cmd(40, add_convert);

}  // namespace
}  // namespace onebit::cli
