# Third-party packages. LibTorch is found through torch.utils.cmake_prefix_path
# (scripts/build.sh passes it in CMAKE_PREFIX_PATH); the rest come from Debian
# or, on the GPU machine, from Debian packages unpacked into a private prefix.
# Without an explicit arch list, torch's CMake config try-runs a CUDA program
# to detect GPUs, which fails on machines without one. We compile no CUDA code
# ourselves; LibTorch's own kernels cover sm_90 (H100).
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "9.0")
endif()
find_package(Torch REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(GTest CONFIG REQUIRED)
find_package(Threads REQUIRED)

# Torch's exported flags carry the C++ ABI define that every TU linking it must share.
string(REPLACE " " ";" AUTOQUANT_TORCH_CXX_FLAGS "${TORCH_CXX_FLAGS}")
add_library(aq_torch INTERFACE)
target_link_libraries(aq_torch INTERFACE ${TORCH_LIBRARIES})
target_compile_options(aq_torch INTERFACE ${AUTOQUANT_TORCH_CXX_FLAGS})
add_compile_options(${AUTOQUANT_TORCH_CXX_FLAGS})

# One precompiled header for every target that includes torch; targets reuse it.
function(autoquant_use_torch_pch target)
  if(NOT AUTOQUANT_PCH)
    return()
  endif()
  if(NOT TARGET aq_torch_pch)
    add_library(aq_torch_pch STATIC ${CMAKE_SOURCE_DIR}/cmake/torch_pch.cc)
    target_link_libraries(aq_torch_pch PUBLIC aq_torch)
    target_precompile_headers(aq_torch_pch PRIVATE <torch/torch.h>)
  endif()
  target_precompile_headers(${target} REUSE_FROM aq_torch_pch)
endfunction()

# LibTorch's wheel exports its own statically linked copy of std::filesystem
# from libtorch.so; some of those entry points crash when called from outside
# (seen: remove_all jumping to a null address). Making libstdc++ the first
# DT_NEEDED entry lets the dynamic linker bind std::filesystem to libstdc++.
add_link_options("LINKER:--push-state,--no-as-needed" "-lstdc++" "LINKER:--pop-state")
