// onebit report: regenerates a run directory's HTML report from its files.

#include <iostream>
#include <string>

#include "commands.h"
#include "onebit/train/report.h"

namespace onebit::cli {
namespace {

void add_report(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "report",
      "Write RUN_DIR/report.html (curves, schedules, summary, figures) from the run's "
      "config.json, metrics.jsonl and checkpoint.pt; `onebit train` writes it after every epoch");
  cmd->add_option("run_dir", *dir, "Training output directory (--out-dir of onebit train)")
      ->required();
  cmd->callback([dir] { std::cout << train::write_report(*dir) << std::endl; });
}

const Registrar report_cmd(25, add_report);

}  // namespace
}  // namespace onebit::cli
