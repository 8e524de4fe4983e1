#pragma once
// Shared by the tests that run the `onebit` tool as separate processes: temporary directories,
// starting the tool with its output in files, waiting with a deadline.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

/// A fresh, empty directory under the system's temporary directory.
std::string temp_dir(const std::string& name) {
  auto d =
      fs::temp_directory_path() / ("onebit_dist_proc_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

/// The whole content of a text file ("" if missing).
std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Starts the tool with `args` and extra environment `env`, stdout and stderr to files.
pid_t spawn(const std::vector<std::string>& args, const std::vector<std::string>& env,
            const std::string& out, const std::string& err) {
  std::vector<std::string> argv{ONEBIT_TOOL_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& kv : env) ::putenv(const_cast<char*>(kv.c_str()));
    if (!std::freopen(out.c_str(), "w", stdout) || !std::freopen(err.c_str(), "w", stderr)) {
      ::_exit(126);
    }
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    ::_exit(127);
  }
  return pid;
}

/// Waits for `pid` at most `seconds`; returns its status, or -1 on timeout.
int wait_for(pid_t pid, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

}  // namespace
