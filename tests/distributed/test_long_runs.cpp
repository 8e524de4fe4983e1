// Runs that people leave running, as separate `onebit train` processes on Fashion-MNIST: Ctrl-C
// saves the exact position and --resume finishes the run (alone and with --nproc 2), SIGKILL
// while checkpoints are written leaves a loadable checkpoint, --config reproduces a run.

#include <gtest/gtest.h>

#include <random>

#include "onebit/io.h"
#include "onebit/train/checkpoint.h"
#include "process_util.h"

namespace {

/// A 3-epoch larq-mnist run of 64 batches per epoch, about 15 s on one core.
std::vector<std::string> three_epochs(const std::string& out) {
  return {"train",   "--epochs",     "3",   "--train-limit", "2048", "--test-limit",
          "256",     "--batch-size", "32",  "--threads",     "1",    "--seed",
          "3",       "--out",        out};
}

/// Waits until `path` contains `text` (at most `seconds`).
bool wait_for_text(const std::string& path, const std::string& text, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    if (read_file(path).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

int lines_of(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) n += !line.empty();
  return n;
}

/// Ctrl-C during epoch 2, then --resume: exit code 130 with the resume hint, the checkpoint holds
/// the position, and the resumed run finishes all 3 epochs.
void interrupt_and_resume(const std::vector<std::string>& extra, const std::string& name) {
  const std::string dir = temp_dir(name);
  auto args = three_epochs(dir + "/run");
  args.insert(args.end(), extra.begin(), extra.end());
  const pid_t pid = spawn(args, {}, dir + "/out", dir + "/err");
  // Not a terminal: plain progress lines, every quarter epoch, with the time left.
  ASSERT_TRUE(wait_for_text(dir + "/err", "epoch 2/3 [", 120)) << read_file(dir + "/err");
  ::kill(pid, SIGINT);
  const int status = wait_for(pid, 60);
  if (status == -1) ::kill(pid, SIGKILL);
  ASSERT_NE(status, -1) << "still running 60 s after Ctrl-C: " << read_file(dir + "/err");
  const std::string err = read_file(dir + "/err");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << status << err;
  EXPECT_NE(err.find("continue with: onebit train --resume " + dir + "/run"), std::string::npos)
      << err;
  EXPECT_NE(err.find(" left "), std::string::npos) << err;
  const auto ck = onebit::train::load_checkpoint(dir + "/run");
  ASSERT_TRUE(ck.config.contains("position")) << ck.config.dump();
  EXPECT_EQ(ck.config.at("position").at("epoch"), 2);
  EXPECT_EQ(lines_of(dir + "/run/metrics.jsonl"), 1);

  args.insert(args.end(), {"--resume", dir + "/run", "--json"});
  const pid_t again = spawn(args, {}, dir + "/out2", dir + "/err2");
  const int done = wait_for(again, 180);
  if (done == -1) ::kill(again, SIGKILL);
  ASSERT_TRUE(done != -1 && WIFEXITED(done) && WEXITSTATUS(done) == 0)
      << done << read_file(dir + "/err2");
  EXPECT_EQ(lines_of(dir + "/run/metrics.jsonl"), 3);
  EXPECT_NE(read_file(dir + "/out2").find("\"epochs\":3"), std::string::npos)
      << read_file(dir + "/out2");
  fs::remove_all(dir);
}

}  // namespace

TEST(LongRuns, CtrlCSavesThePositionAndResumeFinishesTheRun) {
  interrupt_and_resume({}, "sigint");
}

TEST(LongRuns, CtrlCWithNprocSavesAndResumes) {
  interrupt_and_resume({"--nproc", "2"}, "sigint_nproc");
}

TEST(LongRuns, SigkillWhileCheckpointsAreWrittenLeavesALoadableCheckpoint) {
  // One step per epoch: the process spends most of its time evaluating and writing checkpoint.pt
  // and best.pt (1.1 MB each), so kills land inside writes.
  const std::string dir = temp_dir("sigkill");
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> delay_ms(0, 200);
  int inside_write = 0;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const int epochs_before = lines_of(dir + "/run/metrics.jsonl");
    const pid_t pid = spawn({"train", "--epochs", "100000", "--train-limit", "64", "--test-limit",
                             "32", "--batch-size", "64", "--bn-reestimate-batches", "0",
                             "--threads", "1", "--no-progress", "--out", dir + "/run",
                             attempt == 0 ? "--seed" : "--resume",
                             attempt == 0 ? "1" : dir + "/run"},
                            {}, dir + "/out", dir + "/err");
    const auto ckpt = fs::path(dir) / "run" / "checkpoint.pt";
    // Past start-up: two more epochs logged, then a random moment of the epoch cycle.
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (lines_of(dir + "/run/metrics.jsonl") < epochs_before + 2 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    for (const auto& entry : fs::directory_iterator(dir + "/run")) {
      inside_write += entry.path().filename().string().find(".tmp.") != std::string::npos;
    }
    // Whatever was interrupted, the last complete checkpoint loads (and so does best.pt).
    ASSERT_NO_THROW(onebit::io::check_torch_archive(ckpt.string())) << read_file(dir + "/err");
    const auto ck = onebit::train::load_checkpoint(ckpt.string());
    EXPECT_GE(ck.config.at("epoch").get<int>(), 1);
    ASSERT_NO_THROW(onebit::train::load_checkpoint(dir + "/run/best.pt"));
  }
  // A resumed run removes the temporary files that killed writers left behind.
  std::cerr << "killed inside a write (temporary file left) " << inside_write << " of 10 times\n";
  fs::remove_all(dir);
}

TEST(LongRuns, ConfigFileReproducesARunAndTheCommandLineOverridesIt) {
  const std::string dir = temp_dir("config");
  const auto train = [&](std::vector<std::string> args, const std::string& tag) {
    args.insert(args.begin(), "train");
    const pid_t pid = spawn(args, {}, dir + "/out_" + tag, dir + "/err_" + tag);
    const int status = wait_for(pid, 180);
    if (status == -1) ::kill(pid, SIGKILL);
    EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << tag << ": " << read_file(dir + "/err_" + tag);
    return status;
  };
  train({"--epochs", "1", "--train-limit", "1024", "--test-limit", "256", "--threads", "1",
         "--lr", "0.002", "--augment", "--label-smoothing", "0.1", "--lr-schedule", "cosine",
         "--seed", "5", "--no-progress", "--out", dir + "/a"},
        "a");
  const std::string command = read_file(dir + "/a/command.txt");
  EXPECT_NE(command.find("--label-smoothing 0.1"), std::string::npos) << command;
  EXPECT_EQ(command.rfind("cd ", 0), 0u) << command;
  // The stored config reproduces the run exactly.
  train({"--config", dir + "/a/config.json", "--no-progress", "--out", dir + "/b"}, "b");
  const std::string a = read_file(dir + "/a/metrics.jsonl"), b = read_file(dir + "/b/metrics.jsonl");
  const auto field = [](const std::string& jsonl, const std::string& key) {
    const auto at = jsonl.find("\"" + key + "\":");
    return at == std::string::npos ? std::string("missing")
                                   : jsonl.substr(at, jsonl.find(',', at) - at);
  };
  for (const char* key : {"train_loss", "test_accuracy", "test_loss"}) {
    EXPECT_EQ(field(a, key), field(b, key)) << key;
  }
  // Options on the command line win over the file's.
  train({"--config", dir + "/a/config.json", "--epochs", "2", "--test-limit", "128",
         "--no-progress", "--out", dir + "/c"},
        "c");
  const std::string c = read_file(dir + "/c/config.json");
  EXPECT_NE(c.find("\"epochs\": 2"), std::string::npos) << c;
  EXPECT_NE(c.find("\"lr\": 0.002"), std::string::npos) << c;
  EXPECT_NE(c.find("\"augment\": true"), std::string::npos) << c;
  EXPECT_NE(c.find("\"test_limit\": 128"), std::string::npos) << c;
  // A broken config file names itself.
  std::ofstream(dir + "/bad.json") << "{\"epochs\": \"many\"}";
  const pid_t bad = spawn({"train", "--config", dir + "/bad.json"}, {}, dir + "/out_bad",
                          dir + "/err_bad");
  const int status = wait_for(bad, 60);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  const std::string err = read_file(dir + "/err_bad");
  EXPECT_NE(err.find(dir + "/bad.json"), std::string::npos) << err;
  EXPECT_NE(err.find("\"epochs\" has the wrong type"), std::string::npos) << err;
  fs::remove_all(dir);
}

TEST(LongRuns, AWriterKilledInTheMiddleOfACheckpointLeavesThePreviousOne) {
  // Deterministic counterpart of the test above: a child process writes half of a checkpoint
  // through io::atomic_write (as save_checkpoint does) and is killed there.
  const std::string dir = temp_dir("half_write");
  const pid_t trainer = spawn({"train", "--epochs", "1", "--train-limit", "64", "--test-limit",
                               "32", "--threads", "1", "--no-progress", "--out", dir + "/run"},
                              {}, dir + "/out", dir + "/err");
  const int status = wait_for(trainer, 120);
  ASSERT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << read_file(dir + "/err");
  const std::string ckpt = dir + "/run/checkpoint.pt";
  std::string bytes;
  {
    std::ifstream in(ckpt, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const pid_t writer = ::fork();
  if (writer == 0) {
    onebit::io::atomic_write(ckpt, [&](const std::string& tmp) {
      std::ofstream out(tmp, std::ios::binary);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
      out.flush();
      ::raise(SIGSTOP);  // the parent kills it here
    });
    ::_exit(0);
  }
  int stopped = 0;
  ASSERT_EQ(::waitpid(writer, &stopped, WUNTRACED), writer);
  ASSERT_TRUE(WIFSTOPPED(stopped));
  int temporaries = 0;
  for (const auto& entry : fs::directory_iterator(dir + "/run")) {
    temporaries += entry.path().filename().string().rfind("checkpoint.pt.tmp.", 0) == 0;
  }
  EXPECT_EQ(temporaries, 1);
  ::kill(writer, SIGKILL);
  ::waitpid(writer, nullptr, 0);
  EXPECT_EQ(read_file(ckpt).size(), bytes.size());
  EXPECT_NO_THROW(onebit::train::load_checkpoint(ckpt));
  // Resuming cleans up the dead writer's temporary file and continues.
  const pid_t resumed =
      spawn({"train", "--epochs", "2", "--train-limit", "64", "--test-limit", "32", "--threads",
             "1", "--no-progress", "--out", dir + "/run", "--resume", dir + "/run"},
            {}, dir + "/out", dir + "/err");
  const int done = wait_for(resumed, 120);
  ASSERT_TRUE(done != -1 && WIFEXITED(done) && WEXITSTATUS(done) == 0) << read_file(dir + "/err");
  for (const auto& entry : fs::directory_iterator(dir + "/run")) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos)
        << entry.path();
  }
  EXPECT_EQ(onebit::train::load_checkpoint(ckpt).config.at("epoch"), 2);
  fs::remove_all(dir);
}
