#include "core/io/safetensors_header.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;

// A file image: 8-byte length, `json`, then `data_bytes` zero bytes.
std::string Image(const std::string& json, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  return out + json + std::string(data_bytes, '\0');
}

absl::Status ParseError(const std::string& image) { return ParseSafetensorsHeader(image, "f.safetensors").status(); }

TEST(SafetensorsHeaderTest, ParsesTensorsMetadataScalarsAndEmpty) {
  std::string json = R"({"__metadata__":{"format":"pt"},)"
                     R"("b":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]},)"
                     R"("a":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
                     R"("e":{"dtype":"BF16","shape":[0,4],"data_offsets":[32,32]}})";
  auto h = ParseSafetensorsHeader(Image(json, 32), "f");
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 3u);
  EXPECT_EQ(h->tensors[0].name, "a");  // data order
  EXPECT_TRUE(h->tensors[0].shape.empty());
  EXPECT_EQ(h->tensors[0].numel(), 1);
  EXPECT_EQ(h->tensors[1].name, "b");
  EXPECT_EQ(h->tensors[1].dtype, DType::kF32);
  EXPECT_EQ(h->tensors[2].numel(), 0);
  EXPECT_EQ(h->metadata.at("format"), "pt");
  EXPECT_EQ(h->data_start, 8 + json.size());
}

TEST(SafetensorsHeaderTest, TruncatedFileIsAnError) {
  absl::Status s = ParseError("abc");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("truncated"));
  EXPECT_THAT(s.message(), HasSubstr("f.safetensors"));
}

TEST(SafetensorsHeaderTest, HeaderLengthBeyondFileIsAnError) {
  std::string image = Image("{}", 0);
  uint64_t n = 1000;
  std::memcpy(image.data(), &n, 8);
  EXPECT_THAT(ParseError(image).message(), HasSubstr("beyond the end of the file"));
}

TEST(SafetensorsHeaderTest, HeaderNotJsonIsAnError) {
  EXPECT_THAT(ParseError(Image("{not json", 0)).message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(ParseError(Image("[1,2]", 0)).message(), HasSubstr("not an object"));
}

TEST(SafetensorsHeaderTest, UnknownDtypeIsAnError) {
  auto s = ParseError(Image(R"({"x":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", 1));
  EXPECT_THAT(s.message(), HasSubstr("unknown dtype 'F4'"));
  EXPECT_THAT(s.message(), HasSubstr("'x'"));
}

TEST(SafetensorsHeaderTest, OffsetsOutOfRangeAreAnError) {
  auto s = ParseError(Image(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8));
  EXPECT_THAT(s.message(), HasSubstr("outside the data buffer"));
  auto s2 = ParseError(Image(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8));
  EXPECT_THAT(s2.message(), HasSubstr("outside the data buffer"));
}

TEST(SafetensorsHeaderTest, OverlappingOffsetsAreAnError) {
  auto s = ParseError(Image(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            12));
  EXPECT_THAT(s.message(), HasSubstr("overlap"));
}

TEST(SafetensorsHeaderTest, ShapeTimesDtypeMustMatchSpan) {
  auto s = ParseError(Image(R"({"x":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8));
  EXPECT_THAT(s.message(), HasSubstr("spans 8 bytes"));
  EXPECT_THAT(s.message(), HasSubstr("needs 6"));
}

TEST(SafetensorsHeaderTest, DuplicateNamesAreAnError) {
  auto s = ParseError(Image(R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                            R"("x":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                            2));
  EXPECT_THAT(s.message(), HasSubstr("duplicate tensor names"));
}

TEST(SafetensorsHeaderTest, NegativeOrHugeDimensionsAreErrors) {
  EXPECT_THAT(ParseError(Image(R"({"x":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", 0)).message(),
              HasSubstr("negative"));
  EXPECT_THAT(ParseError(Image(R"({"x":{"dtype":"F64","shape":[4611686018427387904,8],)"
                               R"("data_offsets":[0,0]}})",
                               0))
                  .message(),
              HasSubstr("too large"));
}

TEST(SafetensorsHeaderTest, SerializedHeaderIsPaddedAndParsesBack) {
  std::vector<TensorInfo> ts = {{"w", DType::kF8E4M3, {3, 5}, 0, 15}, {"s", DType::kF32, {}, 15, 19}};
  std::string header = SerializeSafetensorsHeader(ts, {{"format", "pt"}});
  EXPECT_EQ(header.size() % 8, 0u);
  auto h = ParseSafetensorsHeader(header + std::string(19, '\0'), "mem");
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->tensors[0].dtype, DType::kF8E4M3);
  EXPECT_EQ(h->tensors[1].begin, 15u);
  EXPECT_EQ(h->metadata.at("format"), "pt");
}

}  // namespace
}  // namespace autoquant
