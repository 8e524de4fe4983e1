// onebit convert: a trained checkpoint -> a bit-packed .obnn model for onebit_runtime.

#include <iomanip>
#include <iostream>
#include <memory>

#include "commands.h"
#include "onebit/convert.h"
#include "onebit/summary.h"

namespace onebit::cli {
namespace {

void add_convert(CLI::App& app) {
  struct Args {
    std::string checkpoint, out = "model.obnn";
    bool json = false, no_fuse = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "convert", "Convert a trained checkpoint into a bit-packed .obnn model for the runtime");
  cmd->add_option("--checkpoint", a->checkpoint, "Checkpoint file or training output directory")
      ->required();
  cmd->add_option("--out", a->out, "The .obnn file to write (atomically)")->capture_default_str();
  cmd->add_flag("--no-fuse", a->no_fuse,
                "Keep batch norm and sign as separate ops (same results, slower)");
  cmd->add_flag("--json", a->json, "Print the result as one JSON line");
  cmd->callback([a] {
    ConvertOptions options;
    options.fuse = !a->no_fuse;
    const ConvertResult r = convert_checkpoint(a->checkpoint, a->out, options);
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
