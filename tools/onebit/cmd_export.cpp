// onebit export: write a trained checkpoint as a self-describing model file.

#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "onebit/serialize.h"
#include "onebit/train/checkpoint.h"

namespace onebit::cli {
namespace {

void add_export(CLI::App& app) {
  struct Args {
    std::string checkpoint, out;
    bool quantized = false;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "export",
      "Write a checkpoint as a model file (architecture + weights) that onebit::load reads");
  cmd->add_option("--checkpoint", a->checkpoint, "Checkpoint file or training output directory")
      ->required();
  cmd->add_option("--out", a->out, "Model file to write")->required();
  cmd->add_flag("--quantized", a->quantized,
                "Store quantized kernels only (binary kernels as bits, read back as exact +-1)");
  cmd->add_flag("--json", a->json, "Print the result as one JSON line");
  cmd->callback([a] {
    auto ck = train::load_checkpoint(a->checkpoint);
    save(ck.model, a->out, a->quantized);
    if (a->json) {
      print_json({{"checkpoint", ck.path}, {"out", a->out}, {"quantized", a->quantized}});
    } else {
      std::cout << "model written to: " << a->out << (a->quantized ? " (quantized)" : "")
                << std::endl;
    }
  });
}

const Registrar export_cmd(45, add_export);

}  // namespace
}  // namespace onebit::cli
