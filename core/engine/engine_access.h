// The engine's resident model and calibration set, for work that runs beside
// the engine on the same worker thread and must not load a second copy
// (evaluation: core/eval/evaluator.h). Not thread-safe: call only where
// RunScheme could be called, never while it runs.
#pragma once

#include "core/engine/engine.h"
#include "core/model/qwen2_5_vl/calib_set.h"
#include "core/model/qwen2_5_vl/model.h"

namespace autoquant {

Qwen2_5_VLModel& EngineModel(Engine& engine);
const CalibSet& EngineCalibSet(const Engine& engine);

}  // namespace autoquant
