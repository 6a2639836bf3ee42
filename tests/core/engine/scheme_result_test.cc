// A scheme's result has one set of names: what the job result (and so GetStatus and /metrics) and
// `autoquant quantize --json` show, per layout.
#include "core/engine/scheme_result.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace autoquant {
namespace {

using ::testing::Contains;
using ::testing::Key;
using ::testing::Not;

SchemeResult Result(ExportLayout layout) {
  SchemeResult r;
  r.out_dir = "/models/top50";
  r.scheme = "top50";
  r.format = ExportFormat::kModelOpt;
  r.layout = layout;
  r.effective_bits = 12.5;
  r.groups_quantized = 7;
  r.groups_total = 14;
  r.baseline_key = "abc";
  r.baseline_seconds = 1.5;
  r.export_seconds = 0.25;
  r.export_bytes = 123456789012;
  r.blobs_reused = 3;
  r.blobs_written = 4;
  r.export_writer_threads = 6;
  r.export_produce_seconds = 2;
  return r;
}

TEST(SchemeResultTest, MetricsCarryTheLayoutsOwnStatisticsOnly) {
  const auto shared = Result(ExportLayout::kShared).ToMetrics();
  EXPECT_EQ(shared.at("blobs_reused"), 3);
  EXPECT_EQ(shared.at("blobs_written"), 4);
  EXPECT_THAT(shared, Not(Contains(Key("export_writer_threads"))));
  const auto standalone = Result(ExportLayout::kStandalone).ToMetrics();
  EXPECT_EQ(standalone.at("export_writer_threads"), 6);
  EXPECT_EQ(standalone.at("export_produce_seconds"), 2);
  EXPECT_THAT(standalone, Not(Contains(Key("blobs_reused"))));
  for (const auto* m : {&shared, &standalone}) {
    EXPECT_EQ(m->at("baseline_seconds"), 1.5);
    EXPECT_EQ(m->at("export_seconds"), 0.25);
    EXPECT_EQ(m->at("export_bytes"), 123456789012.0);
  }
}

TEST(SchemeResultTest, JsonHoldsTheWordsThenEveryMetricWithCountsAsIntegers) {
  const SchemeResult r = Result(ExportLayout::kShared);
  const nlohmann::ordered_json j = r.ToJson();
  EXPECT_EQ(j.at("out_dir"), "/models/top50");
  EXPECT_EQ(j.at("format"), "modelopt");
  EXPECT_EQ(j.at("layout"), "shared");
  EXPECT_EQ(j.at("effective_bits"), 12.5);
  EXPECT_EQ(j.at("groups_quantized"), 7);
  for (const auto& [name, value] : r.ToMetrics()) EXPECT_EQ(j.at(name).get<double>(), value) << name;
  EXPECT_TRUE(j.at("export_bytes").is_number_integer());
  EXPECT_TRUE(j.at("blobs_reused").is_number_integer());
  EXPECT_TRUE(j.at("export_seconds").is_number_float());
}

}  // namespace
}  // namespace autoquant
