// Data-parallel training in separate processes (the `onebit` tool, Gloo over 127.0.0.1): the
// local launcher, a killed worker, a hung worker. Needs Fashion-MNIST (scripts/setup.sh).

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "onebit/train/checkpoint.h"
#include "onebit/train/distributed.h"
#include "process_util.h"

namespace {

/// The arguments of a small larq-mnist run on Fashion-MNIST that lasts long enough to be hit.
std::vector<std::string> long_run(const std::string& out) {
  return {"train",
          "--model",
          "larq-mnist",
          "--epochs",
          "50",
          "--train-limit",
          "1024",
          "--test-limit",
          "128",
          "--threads",
          "1",
          "--no-progress",
          "--dist-timeout",
          "4",
          "--out",
          out};
}

/// Starts two ranks, waits for the first checkpoint, applies `signal` to rank 1 and checks that
/// rank 0 stops in time with an error naming rank 1, and that the checkpoint still loads.
void check_peer_failure(int signal, const std::string& name) {
  const std::string dir = temp_dir(name);
  const int port = onebit::train::free_local_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    pids.push_back(spawn(long_run(dir),
                         {"RANK=" + std::to_string(r), "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
                          "MASTER_PORT=" + std::to_string(port)},
                         dir + "/out" + std::to_string(r), dir + "/err" + std::to_string(r)));
  }
  const auto ckpt = fs::path(dir) / "checkpoint.pt";
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (!fs::exists(ckpt) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(fs::exists(ckpt)) << read_file(dir + "/err0") << read_file(dir + "/err1");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // into the next epoch
  const auto t0 = Clock::now();
  ::kill(pids[1], signal);
  const int status = wait_for(pids[0], 4 + 20);  // the timeout plus the diagnosis, generously
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  ::kill(pids[1], SIGKILL);
  ::waitpid(pids[1], nullptr, 0);
  if (status == -1) {
    ::kill(pids[0], SIGKILL);
    ::waitpid(pids[0], nullptr, 0);
    FAIL() << "rank 0 still runs " << seconds << " s after rank 1 got signal " << signal;
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  const std::string err = read_file(dir + "/err0");
  EXPECT_NE(err.find("data-parallel training failed on rank 0 of 2"), std::string::npos) << err;
  EXPECT_NE(err.find("rank 1 stopped sending heartbeats"), std::string::npos) << err;
  std::cerr << "rank 0 stopped " << seconds << " s after signal " << signal << ": " << err;
  auto ck = onebit::train::load_checkpoint(dir);
  EXPECT_GE(ck.config.at("epoch").get<int>(), 1);
}

}  // namespace

TEST(DistributedProcesses, NprocTrainsWithRankZeroAloneWriting) {
  const std::string dir = temp_dir("nproc");
  const pid_t pid =
      spawn({"train", "--nproc", "2", "--epochs", "1", "--train-limit", "512", "--test-limit",
             "128", "--threads", "1", "--no-progress", "--json", "--out", dir},
            {}, dir + "/stdout", dir + "/stderr");
  const int status = wait_for(pid, 120);
  ASSERT_NE(status, -1);
  const std::string out = read_file(dir + "/stdout");
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out << read_file(dir + "/stderr");
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;  // rank 0's result only
  EXPECT_NE(out.find("\"epochs\":1"), std::string::npos) << out;
  auto ck = onebit::train::load_checkpoint(dir);
  EXPECT_EQ(ck.config.at("world_size").get<int>(), 2);
  EXPECT_EQ(ck.config.at("step").get<int>(), 8);  // 512 images, global batch 64
}

TEST(DistributedProcesses, LauncherStopsTheOthersWhenAWorkerFails) {
  const auto t0 = Clock::now();
  const int code = onebit::train::run_local_workers(
      {"/bin/sh", "-c", "if [ \"$RANK\" = 1 ]; then exit 3; fi; exec sleep 60"}, 3, 2);
  EXPECT_EQ(code, 3);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 20);
  EXPECT_EQ(onebit::train::run_local_workers(
                {"/bin/sh", "-c", "test \"$WORLD_SIZE\" = 2 && test -n \"$MASTER_PORT\""}, 2),
            0);
}

TEST(DistributedProcesses, KilledWorkerStopsTheOtherAndTheCheckpointLoads) {
  check_peer_failure(SIGKILL, "killed");
}

TEST(DistributedProcesses, HungWorkerStopsTheOtherWithinTheTimeout) {
  check_peer_failure(SIGSTOP, "hung");
}
