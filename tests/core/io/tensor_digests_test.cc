#include "core/io/tensor_digests.h"

#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "core/io/safetensors_writer.h"
#include "core/util/hash.h"
#include "core/util/status_macros.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {
namespace fs = std::filesystem;

absl::Status WriteFile(const fs::path& path, const std::vector<std::pair<std::string, torch::Tensor>>& ts) {
  std::vector<TensorSpec> specs;
  for (const auto& [n, t] : ts) specs.push_back(*SpecOf(n, t));
  ASSIGN_OR_RETURN(auto w, SafetensorsWriter::Create(path, specs, {}));
  for (const auto& [n, t] : ts) RETURN_IF_ERROR(w.Write(t));
  return w.Finish();
}

std::string Hex(const torch::Tensor& t) {
  Sha256 h;
  h.Update(t.contiguous().const_data_ptr(), t.nbytes());
  return *h.HexDigest();
}

TEST(TensorDigestsTest, EachTensorsBytesHashedAndRememberedUntilTheFileChanges) {
  auto dir = testing::TempDir();
  torch::manual_seed(0);
  std::vector<std::pair<std::string, torch::Tensor>> ts = {
      {"a", torch::randn({300, 7})}, {"b", torch::randn({5}).to(torch::kBFloat16)}, {"empty", torch::empty({0})}};
  ASSERT_OK(WriteFile(dir / "m.safetensors", ts));
  ASSERT_OK_AND_ASSIGN(auto f, SafetensorsFile::Open(dir / "m.safetensors"));
  EXPECT_FALSE(RememberedDigest(*f, "a").has_value());
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> d, TensorDigestsOf(*f, 2));
  ASSERT_EQ(d.size(), 3u);
  for (size_t i = 0; i < f->tensors().size(); ++i) {
    const auto& info = f->tensors()[i];
    EXPECT_EQ(d[i], Hex(*f->Get(info.name))) << info.name;
    EXPECT_EQ(RememberedDigest(*f, info.name), d[i]) << info.name;
  }
  RememberDigest(*f, "a#fp8-x", "derived");
  EXPECT_EQ(RememberedDigest(*f, "a#fp8-x"), "derived");

  // Rewritten with other values (a new inode and mtime): everything remembered is forgotten.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ts[0].second = torch::randn({300, 7});
  ASSERT_OK(WriteFile(dir / "m.safetensors", ts));
  ASSERT_OK_AND_ASSIGN(auto g, SafetensorsFile::Open(dir / "m.safetensors"));
  EXPECT_FALSE(RememberedDigest(*g, "a").has_value());
  EXPECT_FALSE(RememberedDigest(*g, "a#fp8-x").has_value());
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> d2, TensorDigestsOf(*g));
  EXPECT_EQ(d2[0], Hex(ts[0].second));
  EXPECT_NE(d2[0], d[0]);
}

}  // namespace
}  // namespace autoquant
