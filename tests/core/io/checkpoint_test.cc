#include "core/io/checkpoint.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/io/checkpoint_writer.h"
#include "core/util/file_util.h"
#include "core/util/hash.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace autoquant {
namespace {
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::vector<PlannedTensor> Plan(int n, int64_t numel) {
  std::vector<PlannedTensor> plan;
  for (int i = 0; i < n; ++i) {
    std::string name = "layers." + std::to_string(i) + ".weight";
    plan.push_back({{name, DType::kF32, {numel}},
                    [i, numel] { return absl::StatusOr<torch::Tensor>(torch::full({numel}, float(i))); }});
  }
  return plan;
}

TEST(CheckpointWriterTest, ShardsGreedilyInPlanOrder) {
  auto plan = Plan(5, 100);  // 400 bytes each
  auto shards = PlanShards(plan, 1000);
  ASSERT_EQ(shards.size(), 3u);
  EXPECT_THAT(shards[0], ElementsAre(0, 1));
  EXPECT_THAT(shards[2], ElementsAre(4));
  // A tensor larger than the limit still gets a shard of its own.
  EXPECT_EQ(PlanShards(Plan(2, 1000), 10).size(), 2u);
}

TEST(CheckpointWriterTest, ShardedWriteProducesIndexAndReadsBack) {
  auto dir = testing::TempDir();
  int produced = 0;
  auto plan = Plan(5, 100);
  for (auto& p : plan) {
    auto inner = p.produce;
    p.produce = [inner, &produced] {
      ++produced;
      return inner();
    };
  }
  ASSERT_OK_AND_ASSIGN(auto result, WriteShardedSafetensors(dir, plan, {.max_shard_bytes = 1000}));
  EXPECT_EQ(produced, 5);
  EXPECT_THAT(result.files, ElementsAre("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                        "model-00003-of-00003.safetensors"));
  auto index = nlohmann::json::parse(*ReadFile(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 2000);
  EXPECT_EQ(index["weight_map"]["layers.4.weight"], "model-00003-of-00003.safetensors");

  ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(dir));
  EXPECT_EQ(ckpt.num_tensors(), 5u);
  EXPECT_EQ(ckpt.total_bytes(), 2000u);
  ASSERT_OK_AND_ASSIGN(torch::Tensor t3, ckpt.Get("layers.3.weight"));
  EXPECT_TRUE(torch::equal(t3, torch::full({100}, 3.0f)));
}

// A digest the producer learned is taken as is (these are deliberately not
// the bytes' digests, which shows the worker did not hash them); an empty one
// leaves the hashing to the worker.
TEST(CheckpointWriterTest, DigestsTheProducerLearnedAreTakenAsIs) {
  auto dir = testing::TempDir();
  auto plan = Plan(3, 100);
  plan[0].produced_sha256 = [] { return std::string(64, 'a'); };
  plan[1].produced_sha256 = [] { return std::string(); };
  ASSERT_OK_AND_ASSIGN(auto result, WriteShardedSafetensors(dir, plan, {.producers = 2}));
  EXPECT_EQ(result.sha256.at("layers.0.weight"), std::string(64, 'a'));
  for (const char* name : {"layers.1.weight", "layers.2.weight"}) {
    torch::Tensor t = torch::full({100}, float(name[7] - '0'));
    ASSERT_OK_AND_ASSIGN(std::string want, Sha256Hex(absl::string_view(static_cast<const char*>(t.const_data_ptr()),
                                                                       static_cast<size_t>(t.nbytes()))));
    EXPECT_EQ(result.sha256.at(name), want) << name;
  }
}

// Eight workers produce, hash and write out of order; the files, digests and progress are what one
// thread writing in order gives.
TEST(CheckpointWriterTest, ParallelWorkersWriteEveryTensorInPlace) {
  auto dir = testing::TempDir();
  constexpr int kTensors = 40;
  auto plan = Plan(kTensors, 1000);
  for (int i = 0; i < kTensors; ++i) {
    auto inner = plan[i].produce;
    // Later tensors finish first: the writes land out of order.
    plan[i].produce = [inner, i] {
      std::this_thread::sleep_for(std::chrono::microseconds(200 * ((kTensors - i) % 7)));
      return inner();
    };
  }
  const auto caller = std::this_thread::get_id();
  std::vector<size_t> seen;
  bool other_thread = false;
  ShardingOptions o{.max_shard_bytes = 30000, .producers = 8};
  o.progress = [&](size_t done, size_t total) {
    seen.push_back(done);
    other_thread = other_thread || std::this_thread::get_id() != caller;
    EXPECT_EQ(total, static_cast<size_t>(kTensors));
  };
  ASSERT_OK_AND_ASSIGN(auto result, WriteShardedSafetensors(dir, plan, o));
  EXPECT_FALSE(other_thread);
  ASSERT_FALSE(seen.empty());
  // Once per tensor, in order.
  ASSERT_EQ(seen.size(), static_cast<size_t>(kTensors));
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i + 1);
  EXPECT_EQ(result.files.size(), 6u);  // 7 tensors of 4000 bytes per 30000-byte shard

  auto serial_dir = testing::TempDir() / "serial";
  fs::create_directories(serial_dir);
  ASSERT_OK_AND_ASSIGN(auto serial, WriteShardedSafetensors(serial_dir, Plan(kTensors, 1000),
                                                            {.max_shard_bytes = 30000, .producers = 1}));
  for (const auto& f : result.files) EXPECT_EQ(*ReadFile(dir / f), *ReadFile(serial_dir / f)) << f;
  EXPECT_EQ(result.sha256, serial.sha256);
  ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(dir));
  for (int i = 0; i < kTensors; ++i) {
    const std::string name = "layers." + std::to_string(i) + ".weight";
    ASSERT_OK_AND_ASSIGN(torch::Tensor t, ckpt.Get(name));
    EXPECT_TRUE(torch::equal(t, torch::full({1000}, float(i)))) << name;
    Sha256 h;
    h.Update(t.const_data_ptr(), t.nbytes());
    EXPECT_EQ(*h.HexDigest(), result.sha256.at(name)) << name;
  }
}

// The workers' time by step is summed over the workers: four 20 ms producers on two threads count 80 ms
// of producing in about 40 ms of wall time.
TEST(CheckpointWriterTest, WorkerSecondsAreSummedOverTheWorkers) {
  auto dir = testing::TempDir();
  auto plan = Plan(4, 1 << 16);
  for (auto& p : plan) {
    auto inner = p.produce;
    p.produce = [inner] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return inner();
    };
  }
  ASSERT_OK_AND_ASSIGN(auto result, WriteShardedSafetensors(dir, plan, {.producers = 2}));
  EXPECT_GE(result.seconds.produce, 0.08);
  EXPECT_GT(result.seconds.hash, 0);
  EXPECT_GT(result.seconds.write, 0);
}

// With min_shard_bytes, shards are sized for one per worker (within the bounds), and the workers spread
// over them: several files are being written at once.
TEST(CheckpointWriterTest, SmallerShardsSpreadTheWorkersOverFiles) {
  auto plan = Plan(64, 1000);  // 64 tensors of 4000 bytes
  ShardingOptions o{.max_shard_bytes = 1 << 20, .producers = 8, .min_shard_bytes = 1};
  EXPECT_EQ(ShardLimit(plan, o), 64u * 4000 / 8);
  EXPECT_EQ(ShardLimit(plan, {.max_shard_bytes = 1 << 20, .producers = 8, .min_shard_bytes = 1 << 19}), 1u << 19);
  EXPECT_EQ(ShardLimit(plan, {.max_shard_bytes = 1000, .producers = 8, .min_shard_bytes = 1 << 19}), 1000u);
  EXPECT_EQ(ShardLimit(plan, {.max_shard_bytes = 1 << 20, .producers = 8}), 1u << 20);

  std::mutex mu;
  std::map<std::string, int> writing;  // shard of the tensor being produced -> workers on it
  int most_files = 0;
  auto dir = testing::TempDir();
  for (int i = 0; i < 64; ++i) {
    auto inner = plan[i].produce;
    const std::string shard = std::to_string(i / 8);  // 8 tensors of 4000 bytes per 32000-byte shard
    plan[i].produce = [&, inner, shard] {
      {
        std::lock_guard<std::mutex> lock(mu);
        ++writing[shard];
        int files = 0;
        for (const auto& [_, n] : writing) files += n > 0 ? 1 : 0;
        most_files = std::max(most_files, files);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      std::lock_guard<std::mutex> lock(mu);
      --writing[shard];
      return inner();
    };
  }
  ASSERT_OK_AND_ASSIGN(auto result, WriteShardedSafetensors(dir, plan, o));
  EXPECT_EQ(result.files.size(), 8u);
  EXPECT_GE(most_files, 4);  // all eight workers on one file before
  ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(dir));
  for (int i = 0; i < 64; ++i) {
    ASSERT_OK_AND_ASSIGN(torch::Tensor t, ckpt.Get("layers." + std::to_string(i) + ".weight"));
    EXPECT_TRUE(torch::equal(t, torch::full({1000}, float(i))));
  }
}

// A digest the caller already knows is recorded as given, not computed again.
TEST(CheckpointWriterTest, KnownDigestsAreTakenAsGiven) {
  auto dir = testing::TempDir();
  auto plan = Plan(3, 10);
  plan[1].sha256 = "given";
  ASSERT_OK_AND_ASSIGN(auto result, WriteShardedSafetensors(dir, plan, {}));
  EXPECT_EQ(result.sha256.at("layers.1.weight"), "given");
  Sha256 h;
  torch::Tensor t0 = torch::full({10}, 0.0f);
  h.Update(t0.const_data_ptr(), t0.nbytes());
  EXPECT_EQ(result.sha256.at("layers.0.weight"), *h.HexDigest());
}

TEST(CheckpointWriterTest, OneShardIsWrittenAsModelSafetensors) {
  auto dir = testing::TempDir();
  ASSERT_OK_AND_ASSIGN(auto result, WriteShardedSafetensors(dir, Plan(2, 4), {}));
  EXPECT_THAT(result.files, ElementsAre("model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(dir));
  EXPECT_EQ(ckpt.num_tensors(), 2u);
}

TEST(CheckpointWriterTest, CancelStopsBetweenTensors) {
  auto dir = testing::TempDir();
  std::atomic<bool> cancel{false};
  auto plan = Plan(4, 4);
  plan[1].produce = [&cancel] {
    cancel = true;
    return absl::StatusOr<torch::Tensor>(torch::zeros({4}));
  };
  auto r = WriteShardedSafetensors(dir, plan, {.cancel = &cancel});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(fs::is_empty(dir));
}

// A producer that lets a torch exception escape (the exporter quantizes on the
// device) ends the write with a Status and leaves no partial shard.
TEST(CheckpointWriterTest, ThrowingProducerIsAStatusAndLeavesNothing) {
  auto dir = testing::TempDir();
  auto plan = Plan(3, 4);
  plan[1].produce = []() -> absl::StatusOr<torch::Tensor> {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 2.00 GiB");
    return torch::zeros({4});
  };
  absl::StatusOr<ShardingResult> r = absl::UnknownError("not run");
  EXPECT_NO_THROW(r = WriteShardedSafetensors(dir, plan, {}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("layers.1.weight"));
  EXPECT_TRUE(fs::is_empty(dir));

  plan[1].produce = []() -> absl::StatusOr<torch::Tensor> {
    return torch::zeros({4}).index_select(0, torch::tensor({9}));
  };
  EXPECT_NO_THROW(r = WriteShardedSafetensors(dir, plan, {}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(CheckpointTest, MissingShardNamedByIndexIsNotFound) {
  auto dir = testing::TempDir();
  ASSERT_OK(WriteShardedSafetensors(dir, Plan(3, 100), {.max_shard_bytes = 500}).status());
  fs::remove(dir / "model-00002-of-00003.safetensors");
  auto c = Checkpoint::Open(dir);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr("model-00002-of-00003.safetensors"));
  EXPECT_THAT(c.status().message(), HasSubstr("model.safetensors.index.json"));
}

TEST(CheckpointTest, IndexEntryAbsentFromItsShardIsAnError) {
  auto dir = testing::TempDir();
  ASSERT_OK(WriteShardedSafetensors(dir, Plan(2, 4), {.always_index = true}).status());
  auto index = nlohmann::json::parse(*ReadFile(dir / "model.safetensors.index.json"));
  index["weight_map"]["ghost.weight"] = "model-00001-of-00001.safetensors";
  ASSERT_OK(WriteFileAtomic(dir / "model.safetensors.index.json", index.dump()));
  auto c = Checkpoint::Open(dir);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("'ghost.weight'"));
}

TEST(CheckpointTest, TensorInTwoShardsIsAnError) {
  auto dir = testing::TempDir();
  ASSERT_OK(WriteShardedSafetensors(dir, Plan(2, 4), {.max_shard_bytes = 16}).status());
  // Rewrite shard 2 so it also holds shard 1's tensor.
  fs::path shard2 = dir / "model-00002-of-00002.safetensors";
  auto plan = Plan(2, 4);
  ASSERT_OK_AND_ASSIGN(auto w, SafetensorsWriter::Create(shard2, {plan[0].spec, plan[1].spec}, {}));
  ASSERT_OK(w.Write(torch::zeros({4})));
  ASSERT_OK(w.Write(torch::zeros({4})));
  ASSERT_OK(w.Finish());
  auto c = Checkpoint::Open(dir);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("appears in both"));
}

TEST(CheckpointTest, DirectoryWithoutWeightsIsNotFound) {
  auto dir = testing::TempDir();
  auto c = Checkpoint::Open(dir);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr("neither model.safetensors"));
}

TEST(CheckpointTest, ReadsConfigAndCopiesSideFiles) {
  auto src = testing::TempDir();
  auto dst = testing::TempDir();
  ASSERT_OK(WriteShardedSafetensors(src, Plan(1, 4), {}).status());
  ASSERT_OK(WriteFileAtomic(src / "config.json", R"({"model_type":"qwen2_5_vl"})"));
  ASSERT_OK(WriteFileAtomic(src / "tokenizer.json", "{}"));
  ASSERT_OK(WriteFileAtomic(src / "chat_template.jinja", "{{ messages }}"));
  ASSERT_OK(WriteFileAtomic(src / "unrelated.txt", "x"));
  ASSERT_OK_AND_ASSIGN(Checkpoint ckpt, Checkpoint::Open(src));
  ASSERT_TRUE(ckpt.config().has_value());
  EXPECT_EQ((*ckpt.config())["model_type"], "qwen2_5_vl");
  ASSERT_OK_AND_ASSIGN(auto copied, CopySideFiles(src, dst));
  EXPECT_THAT(copied, ElementsAre("tokenizer.json", "chat_template.jinja"));
  EXPECT_EQ(*ReadFile(dst / "chat_template.jinja"), "{{ messages }}");
  EXPECT_FALSE(fs::exists(dst / "unrelated.txt"));
}

}  // namespace
}  // namespace autoquant
