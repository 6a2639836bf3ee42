// What the service may read of a loaded engine while the worker runs schemes on it: its identity,
// its device memory and the baselines it already holds. Every function is thread-safe and cheap (no
// scoring, no model access). The Engine implements it; the gRPC service holds only this, so it
// neither links nor builds the engine, and its tests implement it over fixed values.
//
// Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/quant/baseline.h"
#include "core/quant/scheme_spec.h"

namespace autoquant {

// Device memory as the CUDA caching allocator sees it (all 0 on CPU).
struct DeviceMemory {
  int64_t allocated = 0;      // in use by tensors now
  int64_t reserved = 0;       // held by the allocator now
  int64_t peak_reserved = 0;  // highest reserved since the engine was created
  int64_t total = 0;          // the device's memory (a MIG slice's own); 0 on the CPU
};

class EngineInfo {
 public:
  virtual ~EngineInfo() = default;

  // Content SHA-256 of the base model's weights and of the calibration set.
  virtual const std::string& model_fingerprint() const = 0;
  virtual const std::string& calib_fingerprint() const = 0;
  virtual int64_t calib_samples() const = 0;
  virtual std::string device() const = 0;  // "cpu", "cuda:0"
  virtual std::string dtype() const = 0;   // "bfloat16", "float32"
  virtual DeviceMemory device_memory() const = 0;
  // Keys of the baselines held in memory.
  virtual std::vector<std::string> cached_baseline_keys() const = 0;
  // The baseline for these settings if it is in memory or in the baseline cache; FailedPrecondition
  // if it has not been computed. batch_size 0: the engine's.
  virtual absl::StatusOr<Baseline> CachedBaseline(const BaselineRequest& request) const = 0;
};

}  // namespace autoquant
