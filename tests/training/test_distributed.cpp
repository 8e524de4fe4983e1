// Data-parallel training (onebit/train/distributed.h): every rank is a thread of this process
// with its own Gloo process group over 127.0.0.1, so the tests run the real collectives without
// starting processes (tests/distributed/ starts processes: launcher, killed and hung workers).

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "onebit/nn.h"
#include "onebit/train/checkpoint.h"
#include "onebit/train/distributed.h"
#include "onebit/train/trainer.h"
#include "onebit/zoo/models.h"

namespace fs = std::filesystem;
using namespace onebit;

namespace {

/// The class is which quadrant is brightest (as in test_trainer.cpp); double images, or float.
data::Dataset quadrants(int64_t n, uint64_t seed, at::ScalarType type = at::kDouble) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto images = at::rand({n, 1, 28, 28}, gen) * 2 - 1;
  auto labels = at::randint(4, {n}, gen);
  auto acc = labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = acc[i];
    images[i].slice(1, (q / 2) * 14, (q / 2) * 14 + 14).slice(2, (q % 2) * 14, (q % 2) * 14 + 14) +=
        1.0;
  }
  return {images.clamp(-1, 1).to(type), labels, 10};
}

/// A binary MLP without batch norm, in double precision, for the comparisons with one process:
/// - with per-rank batch statistics (docs/distributed.md) a BN model computes different
///   gradients on 2 x 32 images than on 64; BN models are tested for identical ranks instead;
/// - in float32 the rounding of a different summation order is amplified chaotically: Adam's
///   first step is lr g / (|g| + 1e-8), so near-zero gradients turn 1e-7 relative noise into
///   differences of 5e-6, which move latent weights across zero and flip their sign (71 of
///   50,176 signs differed after 20 steps here). In double the noise stays far below that, and
///   the comparison checks the data-parallel arithmetic itself.
nn::Graph binary_mlp(uint64_t seed) {
  at::manual_seed(seed);
  nn::Graph g = torch::nn::Sequential(torch::nn::Flatten(),
                                      nn::QuantDense(nn::QuantDenseOptions(784, 64)
                                                         .kernel_quantizer("ste_sign")
                                                         .kernel_constraint("weight_clip")),
                                      nn::QuantDense(nn::QuantDenseOptions(64, 10)
                                                         .input_quantizer("ste_sign")
                                                         .kernel_quantizer("ste_sign")
                                                         .kernel_constraint("weight_clip")));
  g->to(at::kDouble);
  return g;
}

std::string temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("onebit_dist_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  return d.string();
}

train::DistributedOptions local(int rank, int world, int port, double timeout = 20) {
  train::DistributedOptions o;
  o.rank = rank;
  o.world_size = world;
  o.master_port = port;
  o.timeout_seconds = timeout;
  o.bucket_bytes = 16 << 10;  // several buckets even for small models
  return o;
}

/// Runs fn(rank, group) on `world` threads, each with its own process group.
void run_ranks(int world,
               const std::function<void(int, std::shared_ptr<train::ProcessGroup>)>& fn) {
  const int port = train::free_local_port();
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r, std::make_shared<train::ProcessGroup>(local(r, world, port)));
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

train::TrainOptions options(const std::string& out, const std::string& optimizer) {
  train::TrainOptions o;
  o.epochs = 1;
  o.batch_size = 64;
  o.seed = 3;
  o.optimizer = optimizer;
  o.progress = false;
  o.out_dir = out;
  return o;
}

/// Largest absolute difference over all parameters and buffers of two models.
double max_difference(const nn::Graph& a, const nn::Graph& b) {
  auto pa = a->named_parameters(), pb = b->named_parameters();
  double m = 0;
  for (const auto& item : pa) {
    m = std::max(m, (item.value() - pb[item.key()]).abs().max().item<double>());
  }
  auto ba = a->named_buffers(), bb = b->named_buffers();
  for (const auto& item : ba) {
    m = std::max(m, (item.value() - bb[item.key()]).abs().max().item<double>());
  }
  return m;
}

bool bit_equal(const nn::Graph& a, const nn::Graph& b) {
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& item : pa) {
    if (!at::equal(item.value(), pb[item.key()])) return false;
  }
  auto ba = a->named_buffers(), bb = b->named_buffers();
  for (const auto& item : ba) {
    if (!at::equal(item.value(), bb[item.key()])) return false;
  }
  return true;
}

/// Trains `world` ranks of `make_model()` with `o` and returns their models.
std::vector<nn::Graph> train_ranks(int world, const std::function<nn::Graph()>& make_model,
                                   const data::Dataset& train_set, const data::Dataset& test_set,
                                   const train::TrainOptions& o,
                                   std::vector<train::TrainResult>* results = nullptr) {
  std::vector<nn::Graph> models;
  for (int r = 0; r < world; ++r) models.push_back(make_model());
  std::vector<train::TrainResult> rs(static_cast<size_t>(world));
  run_ranks(world, [&](int r, std::shared_ptr<train::ProcessGroup> group) {
    auto ro = o;
    ro.process_group = group;
    rs[static_cast<size_t>(r)] =
        train::fit(models[static_cast<size_t>(r)], train_set, test_set, ro);
  });
  if (results) *results = rs;
  return models;
}

/// 2 ranks x 32 images vs one process x 64 images, 50 steps: same weights up to float rounding,
/// and bit-identical ranks.
void check_equivalence(const std::string& optimizer) {
  const auto train_set = quadrants(50 * 64, 11), test_set = quadrants(100, 12);
  auto single = binary_mlp(5);
  auto r1 = train::fit(single, train_set, test_set, options(temp_dir(optimizer + "_1"), optimizer));
  std::vector<train::TrainResult> rs;
  auto ranks = train_ranks(
      2, [] { return binary_mlp(5); }, train_set, test_set,
      options(temp_dir(optimizer + "_2"), optimizer), &rs);
  EXPECT_TRUE(bit_equal(ranks[0], ranks[1])) << "the ranks' weights differ";
  EXPECT_LT(max_difference(single, ranks[0]), 1e-9);
  EXPECT_EQ(rs[0].history.at(0).at("step").get<int64_t>(), 50);
  EXPECT_DOUBLE_EQ(rs[0].test_accuracy, r1.test_accuracy);
  EXPECT_DOUBLE_EQ(rs[0].test_accuracy, rs[1].test_accuracy);
}

}  // namespace

TEST(Distributed, OptionsFromEnvironment) {
  ::unsetenv("WORLD_SIZE");
  EXPECT_EQ(train::DistributedOptions::from_env().world_size, 1);
  ::setenv("WORLD_SIZE", "4", 1);
  ::unsetenv("RANK");
  EXPECT_THROW(train::DistributedOptions::from_env(), std::invalid_argument);
  ::setenv("RANK", "3", 1);
  ::setenv("MASTER_ADDR", "10.0.0.7", 1);
  ::setenv("MASTER_PORT", "29555", 1);
  auto o = train::DistributedOptions::from_env();
  EXPECT_EQ(o.rank, 3);
  EXPECT_EQ(o.world_size, 4);
  EXPECT_EQ(o.local_rank, 3);
  EXPECT_EQ(o.master_addr, "10.0.0.7");
  EXPECT_EQ(o.master_port, 29555);
  ::setenv("RANK", "4", 1);
  try {
    train::DistributedOptions::from_env();
    ADD_FAILURE() << "rank 4 of 4 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("rank must be in [0, 3]"), std::string::npos) << e.what();
  }
  ::setenv("RANK", "x1", 1);
  EXPECT_THROW(train::DistributedOptions::from_env(), std::invalid_argument);
  for (const char* v : {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(v);
  train::DistributedOptions nccl;
  nccl.backend = "nccl";
  EXPECT_THROW(nccl.validate(), std::invalid_argument);
}

TEST(Distributed, CollectivesAndShards) {
  run_ranks(3, [](int r, std::shared_ptr<train::ProcessGroup> group) {
    auto x = at::full({5}, static_cast<double>(r + 1), at::kFloat);
    auto n = at::full({2}, r, at::kLong);
    group->all_reduce_sum({x, n});
    EXPECT_TRUE(at::equal(x, at::full({5}, 6.0, at::kFloat)));
    EXPECT_TRUE(at::equal(n, at::full({2}, 3, at::kLong)));
    auto b = at::full({3}, static_cast<double>(r), at::kFloat);
    group->broadcast({b}, 0);
    EXPECT_TRUE(at::equal(b, at::zeros({3})));
    group->barrier();
  });
  // Shards of a global batch: contiguous, disjoint, covering it, also with fewer images than ranks.
  for (const int64_t m : {64, 7, 2}) {
    std::vector<at::Tensor> shards(3);
    run_ranks(3, [&](int r, std::shared_ptr<train::ProcessGroup> group) {
      train::DataParallel dp(group, binary_mlp(1));
      shards[static_cast<size_t>(r)] = dp.shard(at::arange(m) * 10);
      EXPECT_DOUBLE_EQ(dp.loss_scale(shards[static_cast<size_t>(r)].size(0), m),
                       shards[static_cast<size_t>(r)].size(0) * 3.0 / static_cast<double>(m));
    });
    EXPECT_TRUE(at::equal(at::cat(shards), at::arange(m) * 10)) << m;
  }
}

TEST(Distributed, TwoRanksMatchOneProcessWithAdam) { check_equivalence("adam"); }

TEST(Distributed, TwoRanksMatchOneProcessWithBop) { check_equivalence("bop"); }

TEST(Distributed, BatchNormModelStaysIdenticalOnEveryRankAndOnlyRankZeroWrites) {
  // larq-mnist (batch norm: per-rank batch statistics, running statistics averaged each epoch)
  // with Bop on 3 ranks: global batches of 30, 30, 30 and 10 images.
  const auto train_set = quadrants(100, 21, at::kFloat), test_set = quadrants(37, 22, at::kFloat);
  auto o = options(temp_dir("bn"), "bop");
  o.batch_size = 30;
  o.epochs = 2;
  std::vector<train::TrainResult> rs;
  auto ranks = train_ranks(
      3,
      [] {
        at::manual_seed(9);
        return zoo::build("larq-mnist");
      },
      train_set, test_set, o, &rs);
  EXPECT_TRUE(bit_equal(ranks[0], ranks[1]));
  EXPECT_TRUE(bit_equal(ranks[0], ranks[2]));
  for (const auto& r : rs) {
    EXPECT_DOUBLE_EQ(r.test_accuracy, rs[0].test_accuracy);
    EXPECT_EQ(r.history.at(1).at("step").get<int64_t>(), 8);
  }
  // Rank 0's evaluation covers the whole test set (37 images over 3 ranks).
  auto direct = train::evaluate(ranks[0], test_set);
  EXPECT_NEAR(rs[0].test_accuracy, direct.accuracy, 1e-12);
  EXPECT_NEAR(rs[0].test_loss, direct.loss, 1e-5);
  // One metrics line per epoch (rank 0 only), a loadable checkpoint of rank 0's model.
  std::ifstream metrics(fs::path(o.out_dir) / "metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(metrics, line);) ++lines;
  EXPECT_EQ(lines, 2);
  auto ck = train::load_checkpoint(o.out_dir);
  EXPECT_EQ(ck.config.at("world_size").get<int>(), 3);
  EXPECT_TRUE(bit_equal(ck.model, ranks[0]));
}

TEST(Distributed, LastBatchWithFewerImagesThanRanks) {
  // 130 images, global batch 64: the last batch has 2 images for 3 ranks, so rank 0 trains on
  // none and adds zero gradients; the loss scaling keeps the mean over the 2 images.
  const auto train_set = quadrants(130, 41), test_set = quadrants(10, 42);
  auto o = options(temp_dir("small_last"), "adam");
  o.epochs = 2;
  auto single = binary_mlp(7);
  train::fit(single, train_set, test_set, o);
  o.out_dir = temp_dir("small_last_3");
  auto ranks = train_ranks(
      3, [] { return binary_mlp(7); }, train_set, test_set, o);
  EXPECT_TRUE(bit_equal(ranks[0], ranks[1]));
  EXPECT_TRUE(bit_equal(ranks[0], ranks[2]));
  EXPECT_LT(max_difference(single, ranks[0]), 1e-9);
}

TEST(Distributed, ResumeWithAnotherWorldSize) {
  // Epoch 1 on 2 ranks, epoch 2 on 1 process (and the other way round) give the weights of 2
  // epochs on one process: the checkpoint (weights, Adam state, epoch, step) has no world size.
  const auto train_set = quadrants(20 * 64, 31), test_set = quadrants(64, 32);
  auto o = options(temp_dir("resume_ref"), "adam");
  o.epochs = 2;
  auto reference = binary_mlp(6);
  train::fit(reference, train_set, test_set, o);

  auto first = options(temp_dir("resume_a"), "adam");
  train_ranks(
      2, [] { return binary_mlp(6); }, train_set, test_set, first);
  auto second = options(temp_dir("resume_a2"), "adam");
  second.epochs = 2;
  second.resume = first.out_dir;
  auto resumed = binary_mlp(99);  // replaced by the checkpoint
  auto r = train::fit(resumed, train_set, test_set, second);
  EXPECT_EQ(r.epochs, 2);
  EXPECT_EQ(r.history.at(0).at("step").get<int64_t>(), 40);
  EXPECT_LT(max_difference(reference, resumed), 1e-9);

  auto one = options(temp_dir("resume_b"), "adam");
  auto start = binary_mlp(6);
  train::fit(start, train_set, test_set, one);
  auto two = options(temp_dir("resume_b2"), "adam");
  two.epochs = 2;
  two.resume = one.out_dir;
  auto ranks = train_ranks(
      2, [] { return binary_mlp(98); }, train_set, test_set, two);
  EXPECT_TRUE(bit_equal(ranks[0], ranks[1]));
  EXPECT_LT(max_difference(reference, ranks[0]), 1e-9);
}

TEST(Distributed, PortInUseAndUnreachableMasterAreClearErrors) {
  // Rank 0 cannot host the store on a port another socket listens on.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int busy = ntohs(addr.sin_port);
  try {
    train::ProcessGroup group(local(0, 2, busy, 2));
    ADD_FAILURE() << "rank 0 started on a busy port";
  } catch (const train::DistributedError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 0 could not host the rendezvous store on 127.0.0.1:" +
                        std::to_string(busy)),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("port in use"), std::string::npos) << what;
  }
  ::close(fd);
  // Rank 1 finds no master on a free port: fails after the timeout (1 s), naming the address.
  const int nobody = train::free_local_port();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    train::ProcessGroup group(local(1, 2, nobody, 1));
    ADD_FAILURE() << "rank 1 joined without a master";
  } catch (const train::DistributedError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 could not reach the master at 127.0.0.1:" +
                                         std::to_string(nobody)),
              std::string::npos)
        << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30);
}
