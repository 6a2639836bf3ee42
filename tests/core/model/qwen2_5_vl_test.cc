// Qwen2.5-VL model: host-side position bookkeeping on the reference's worked
// examples, checkpoint key verification, input validation, tied head, and the
// layer-by-layer path against the one-call Forward.
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <numeric>

#include "core/io/checkpoint.h"
#include "core/io/safetensors_file.h"
#include "core/io/safetensors_writer.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/model.h"
#include "core/model/qwen2_5_vl/presets.h"
#include "core/model/qwen2_5_vl/rope_index.h"
#include "core/model/qwen2_5_vl/vision_windows.h"
#include "core/model/qwen2_5_vl/weights.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace autoquant {
namespace {

using ::testing::HasSubstr;

TEST(VisionWindows, Image480x640MatchesReferenceWindowIndexAndBoundaries) {
  // smart_resize(480, 640) -> (476, 644) -> grid (1, 34, 46).
  VisionWindows w = ComputeVisionWindows({{1, 34, 46}}, 112, 2, 14);
  ASSERT_EQ(w.window_index.size(), 391u);
  std::vector<int64_t> prefix(w.window_index.begin(), w.window_index.begin() + 20);
  EXPECT_EQ(prefix, (std::vector<int64_t>{0, 1, 2, 3, 23, 24, 25, 26, 46, 47, 48, 49, 69, 70, 71, 72, 4, 5, 6, 7}));
  ASSERT_EQ(w.cu_window_seqlens.size(), 31u);
  std::vector<int32_t> head(w.cu_window_seqlens.begin(), w.cu_window_seqlens.begin() + 8);
  EXPECT_EQ(head, (std::vector<int32_t>{0, 64, 128, 192, 256, 320, 368, 432}));
  std::vector<int32_t> tail(w.cu_window_seqlens.end() - 8, w.cu_window_seqlens.end());
  EXPECT_EQ(tail, (std::vector<int32_t>{1424, 1472, 1488, 1504, 1520, 1536, 1552, 1564}));
  std::vector<int64_t> sorted = w.window_index;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 391; ++i) ASSERT_EQ(sorted[i], i);
}

TEST(VisionWindows, Image448DropsEmptyWindows) {
  VisionWindows w = ComputeVisionWindows({{1, 32, 32}}, 112, 2, 14);
  ASSERT_EQ(w.cu_window_seqlens.size(), 17u);
  for (int i = 0; i < 17; ++i) EXPECT_EQ(w.cu_window_seqlens[i], 64 * i);
  EXPECT_EQ(FrameCuSeqlens({{2, 4, 6}, {1, 2, 2}}), (std::vector<int32_t>{0, 24, 48, 52}));
}

TEST(RopeIndex, Image448GivesDeltaMinus240AndReferencePositions) {
  constexpr int64_t kImage = 151655, kStart = 151652, kEnd = 151653;
  const int64_t s = 3;  // <vision_start> is the 3rd token
  std::vector<int64_t> ids = {10, 11, kStart};
  ids.insert(ids.end(), 256, kImage);
  ids.push_back(kEnd);
  ids.push_back(12);
  auto r = ComputeRopeIndex(ids, {}, 1, ids.size(), {{1, 32, 32}}, kImage, 2);
  ASSERT_OK(r.status());
  const int64_t n = ids.size();
  auto pos = [&](int row, int64_t i) { return r->positions[row * n + i]; };
  for (int64_t i = 0; i < s; ++i) EXPECT_EQ(pos(0, i), i);
  for (int64_t k = 0; k < 256; ++k) {
    EXPECT_EQ(pos(0, s + k), s);
    EXPECT_EQ(pos(1, s + k), s + k / 16);
    EXPECT_EQ(pos(2, s + k), s + k % 16);
  }
  EXPECT_EQ(pos(1, s + 256), s + 16);  // <vision_end>
  EXPECT_EQ(pos(2, s + 257), s + 17);
  EXPECT_EQ(r->deltas[0], -240);
}

TEST(RopeIndex, PaddedTokensGetZeroAndRunMismatchIsAnError) {
  std::vector<int64_t> ids = {0, 0, 5, 7, 7, 7, 7, 6};
  std::vector<int64_t> mask = {0, 0, 1, 1, 1, 1, 1, 1};
  auto r = ComputeRopeIndex(ids, mask, 1, 8, {{1, 4, 4}}, 7, 2);
  ASSERT_OK(r.status());
  EXPECT_EQ(r->positions[0], 0);
  EXPECT_EQ(r->positions[2], 0);  // first valid token
  EXPECT_EQ(r->positions[7], 3);  // 1 + max(2, 2)
  auto bad = ComputeRopeIndex(ids, mask, 1, 8, {{1, 4, 8}}, 7, 2);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

// A tiny float32 checkpoint written by the `tiny` preset, shared by the tests below.
class TinyModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     ("aq_tiny_model_test." + std::to_string(::getpid())));
    std::filesystem::remove_all(*dir_);
    InitCheckpointOptions o;
    o.preset = "tiny";
    o.out = *dir_;
    o.seed = 3;
    o.dtype = torch::kFloat32;
    ASSERT_TRUE(InitRandomCheckpoint(o).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static Qwen2_5_VLModel Load() {
    auto ckpt = Checkpoint::Open(*dir_);
    EXPECT_TRUE(ckpt.ok());
    auto m = LoadQwen2_5_VL(*ckpt, torch::kCPU, torch::kFloat32);
    EXPECT_TRUE(m.ok()) << m.status();
    return *m;
  }
  // One 112x112 image (16 merged tokens) in a 24-token prompt.
  static Qwen2_5_VLInputs ImageInputs(const Qwen2_5_VLConfig& c) {
    SynthOptions s;
    s.samples = 2;
    s.seq_len = 24;
    s.image_height = s.image_width = 112;
    auto set = SynthesizeCalibSet(c, s);
    EXPECT_TRUE(set.ok()) << set.status();
    return *set->Batch(0, 2);
  }
  static std::filesystem::path* dir_;
};
std::filesystem::path* TinyModelTest::dir_ = nullptr;

TEST_F(TinyModelTest, ParameterAndLinearNamesFollowTransformers) {
  Qwen2_5_VLModel m = Load();
  auto params = m->named_parameters();
  EXPECT_TRUE(params.contains("model.visual.patch_embed.proj.weight"));
  EXPECT_TRUE(params.contains("model.visual.merger.mlp.0.weight"));
  EXPECT_TRUE(params.contains("model.language_model.layers.2.self_attn.q_proj.bias"));
  EXPECT_TRUE(params.contains("lm_head.weight"));
  auto linears = m->Linears();
  std::vector<std::string> names;
  for (const auto& [name, lin] : linears) names.push_back(name);
  EXPECT_EQ(names.front(), "model.visual.blocks.0.attn.qkv");
  EXPECT_EQ(names.back(), "lm_head");
  EXPECT_NE(std::find(names.begin(), names.end(), "model.language_model.layers.0.self_attn.q_proj"), names.end());
  // 3 vision blocks x 5 + merger 2 + 3 text layers x 7 + lm_head.
  EXPECT_EQ(linears.size(), 3u * 5 + 2 + 3 * 7 + 1);
}

TEST_F(TinyModelTest, LayerByLayerEqualsForward) {
  Qwen2_5_VLModel m = Load();
  torch::InferenceMode guard;
  Qwen2_5_VLInputs in = ImageInputs(m->config());
  auto logits = m->Forward(in);
  ASSERT_OK(logits.status());
  auto d = m->Prepare(in);
  ASSERT_OK(d.status());
  torch::Tensor h = d->hidden;
  for (auto& layer : m->layers()) h = layer->forward(h, *d);
  torch::Tensor manual = m->Head(h);
  EXPECT_EQ(manual.sizes(), logits->sizes());
  EXPECT_EQ(logits->scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(manual, *logits));
}

TEST_F(TinyModelTest, InputValidationNamesTheProblem) {
  Qwen2_5_VLModel m = Load();
  torch::InferenceMode guard;
  const Qwen2_5_VLInputs good = ImageInputs(m->config());
  auto expect = [&](Qwen2_5_VLInputs in, absl::string_view needle) {
    absl::Status s = m->Forward(in).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(std::string(needle)));
  };
  Qwen2_5_VLInputs in = good;
  in.input_ids = torch::Tensor();
  expect(in, "input_ids is missing");
  in = good;
  in.input_ids = good.input_ids.to(torch::kInt32);
  expect(in, "input_ids must be int64");
  in = good;
  in.input_ids = good.input_ids.flatten();
  expect(in, "[batch, seq_len]");
  in = good;
  in.image_grid_thw = torch::Tensor();
  expect(in, "pixel_values given without image_grid_thw");
  in = good;
  in.input_ids = good.input_ids.clone();
  in.input_ids.index_put_({0, 0}, m->config().image_token_id);  // one extra image token (text position)
  expect(in, "33 image tokens but the images have 32 merged patches");
  in = good;
  in.pixel_values = good.pixel_values.narrow(0, 0, 100);
  expect(in, "pixel_values has 100 patches but image_grid_thw describes sum(t*h*w) = 128");
  in = good;
  in.image_grid_thw = torch::tensor({1, 8, 8, 1, 4, 16}, torch::kInt64).view({2, 3}).clone();
  in.image_grid_thw.index_put_({1}, torch::tensor({1, 3, 16}));
  in.pixel_values = good.pixel_values.narrow(0, 0, 64 + 48);
  expect(in, "divisible by spatial_merge_size");
}

// Inputs whose data cannot be read to the host (meta tensors: right dtype and
// shape, no storage) fail inside torch while being validated or prepared; the
// caller must get a Status naming the input, not an exception.
TEST_F(TinyModelTest, UnreadableInputIsAStatusNotAnException) {
  Qwen2_5_VLModel m = Load();
  torch::InferenceMode guard;
  const Qwen2_5_VLInputs good = ImageInputs(m->config());
  auto on_meta = [](const torch::Tensor& t) { return torch::empty_like(t, t.options().device(torch::kMeta)); };
  struct Case {
    const char* name;
    Qwen2_5_VLInputs in;
  };
  std::vector<Case> cases = {{"input_ids", good}, {"attention_mask", good}, {"image_grid_thw", good}};
  cases[0].in.input_ids = on_meta(good.input_ids);
  cases[1].in.attention_mask = on_meta(good.attention_mask);
  cases[2].in.image_grid_thw = on_meta(good.image_grid_thw);
  for (const Case& c : cases) {
    absl::StatusOr<torch::Tensor> r = absl::UnknownError("not run");
    EXPECT_NO_THROW(r = m->Forward(c.in)) << c.name;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << c.name << ": " << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(std::string("reading ") + c.name));
  }
}

TEST_F(TinyModelTest, TiedHeadSharesStorageWithEmbedding) {
  auto ckpt = Checkpoint::Open(*dir_);
  ASSERT_OK(ckpt.status());
  auto config = CheckpointConfig(*ckpt);
  ASSERT_OK(config.status());
  // Write a tied copy: same tensors minus lm_head.weight, config flag set.
  auto tied_dir = testing::TempDir() / "tied";
  std::filesystem::create_directories(tied_dir);
  nlohmann::json j = *ckpt->config();
  j["tie_word_embeddings"] = true;
  std::ofstream(tied_dir / "config.json") << j.dump();
  std::vector<TensorSpec> specs;
  std::vector<torch::Tensor> tensors;
  for (const auto& name : ckpt->TensorNames()) {
    if (name == "lm_head.weight") continue;
    auto t = ckpt->Get(name);
    specs.push_back(*SpecOf(name, *t));
    tensors.push_back(*t);
  }
  auto w = SafetensorsWriter::Create(tied_dir / "model.safetensors", specs, {{"format", "pt"}});
  ASSERT_OK(w.status());
  for (const auto& t : tensors) ASSERT_OK(w->Write(t));
  ASSERT_OK(w->Finish());
  auto tied_ckpt = Checkpoint::Open(tied_dir);
  ASSERT_OK(tied_ckpt.status());
  auto m = LoadQwen2_5_VL(*tied_ckpt, torch::kCPU, torch::kFloat32);
  ASSERT_OK(m.status());
  const auto& embed = (*m)->model->language_model->embed_tokens->weight;
  EXPECT_EQ((*m)->lm_head->weight.data_ptr(), embed.data_ptr());
  EXPECT_TRUE((*m)->lm_head->weight.is_alias_of(embed));
}

TEST_F(TinyModelTest, KeyVerificationNamesMissingUnexpectedAndMisshapedTogether) {
  auto ckpt = Checkpoint::Open(*dir_);
  ASSERT_OK(ckpt.status());
  auto bad_dir = testing::TempDir() / "bad";
  std::filesystem::create_directories(bad_dir);
  std::ofstream(bad_dir / "config.json") << ckpt->config()->dump();
  std::vector<TensorSpec> specs;
  std::vector<torch::Tensor> tensors;
  for (const auto& name : ckpt->TensorNames()) {
    if (name == "model.layers.1.mlp.up_proj.weight") continue;  // missing
    torch::Tensor t = *ckpt->Get(name);
    if (name == "visual.blocks.0.attn.proj.bias") t = torch::zeros({7});  // mis-shaped
    specs.push_back(*SpecOf(name, t));
    tensors.push_back(t);
  }
  specs.push_back(*SpecOf("model.layers.0.extra.weight", torch::zeros({2})));  // unexpected
  tensors.push_back(torch::zeros({2}));
  auto w = SafetensorsWriter::Create(bad_dir / "model.safetensors", specs, {{"format", "pt"}});
  ASSERT_OK(w.status());
  for (const auto& t : tensors) ASSERT_OK(w->Write(t));
  ASSERT_OK(w->Finish());
  auto bad = Checkpoint::Open(bad_dir);
  ASSERT_OK(bad.status());
  absl::Status s = LoadQwen2_5_VL(*bad, torch::kCPU, torch::kFloat32).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.language_model.layers.1.mlp.up_proj.weight"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.layers.0.extra.weight"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("visual.blocks.0.attn.proj.bias (checkpoint [7], model [32])"));
}

TEST_F(TinyModelTest, CalibSetRoundTripsAndBatchesSliceImages) {
  auto ckpt = Checkpoint::Open(*dir_);
  ASSERT_OK(ckpt.status());
  auto config = CheckpointConfig(*ckpt);
  ASSERT_OK(config.status());
  SynthOptions s;
  s.samples = 3;
  s.seq_len = 40;
  s.images_per_sample = 2;
  s.image_height = 56;
  s.image_width = 84;
  auto set = SynthesizeCalibSet(*config, s);
  ASSERT_OK(set.status());
  auto path = testing::TempDir() / "calib.safetensors";
  ASSERT_OK(set->Save(path));
  auto loaded = CalibSet::Load(path);
  ASSERT_OK(loaded.status());
  EXPECT_EQ(loaded->num_samples(), 3);
  EXPECT_EQ(loaded->num_images(), 6);
  EXPECT_EQ(loaded->BatchRanges(2), (std::vector<std::pair<int64_t, int64_t>>{{0, 2}, {2, 3}}));
  auto b = loaded->Batch(2, 3);
  ASSERT_OK(b.status());
  EXPECT_EQ(b->image_grid_thw.size(0), 2);
  EXPECT_EQ(b->pixel_values.size(0), 2 * 4 * 6);
  EXPECT_TRUE(torch::equal(b->input_ids, set->input_ids().narrow(0, 2, 1)));
}

// Found by the calib_set fuzz target: a grid whose t*h*w overflows int64 was undefined behaviour.
TEST(CalibSetTest, CorruptImageGridsAreInvalidArgumentNotOverflow) {
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor ids = torch::zeros({1, 4}, i64), mask = torch::ones({1, 4}, i64);
  torch::Tensor pixels = torch::zeros({4, 1176});
  for (std::vector<int64_t> grid : {std::vector<int64_t>{7454231306853138352, 2021624182105490108, 1},
                                    std::vector<int64_t>{1, -4, -1}, std::vector<int64_t>{1, 0, 4}}) {
    auto r = CalibSet::FromTensors(ids, mask, pixels, torch::tensor(grid, i64).reshape({1, 3}),
                                   torch::tensor({0, 1}, i64), torch::tensor({0, 4}, i64));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  }
  auto ok = CalibSet::FromTensors(ids, mask, pixels, torch::tensor({1, 2, 2}, i64).reshape({1, 3}),
                                  torch::tensor({0, 1}, i64), torch::tensor({0, 4}, i64));
  EXPECT_TRUE(ok.ok()) << ok.status();
}

}  // namespace
}  // namespace autoquant
