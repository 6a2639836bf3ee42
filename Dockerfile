# autoquantd in a container (docs/deployment.md).
#
#   docker build -t autoquant:latest .
#   docker run --gpus 1 -v /srv/qwen:/base:ro -v /srv/calib.safetensors:/calib/calib.safetensors:ro \
#       -v autoquant-models:/models -v ./token:/run/secrets/autoquant_token:ro -p 50051:50051 -p 9464:9464 autoquant
#
# Stage 1 builds on the CUDA devel image: LibTorch comes from the torch wheel (scripts/requirements.txt's
# pin, CUDA 13.0 build), the rest from Ubuntu's packages, as scripts/setup.sh does on Debian.
# Stage 2 is the CUDA runtime image plus the two binaries, the non-system libraries they load (gRPC,
# Abseil, Protobuf, prometheus-cpp, civetweb, spdlog, SQLite, ...) and LibTorch's libraries with the NVIDIA
# wheels' beside them (libtorch_cuda finds cuDNN, cuBLAS, NCCL through $ORIGIN/../../nvidia/...).
ARG CUDA_VERSION=13.0.2
ARG UBUNTU=ubuntu24.04

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${UBUNTU} AS build
# Hopper (sm_90) and Blackwell workstation/server parts (sm_120). We compile no CUDA code ourselves;
# torch's CMake config reads these and the wheel's kernels cover both.
ENV TORCH_CUDA_ARCH_LIST="9.0;12.0" \
    DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config python3 python3-venv \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev nlohmann-json3-dev prometheus-cpp-dev libcivetweb-dev \
      libgtest-dev libgmock-dev libsqlite3-dev libcli11-dev libspdlog-dev libfmt-dev \
      libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

# Only the torch pin: the image needs LibTorch, not the test references. The cu130 index holds the
# CUDA 13.0 build (PyPI's default wheel may target another CUDA).
COPY scripts/requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --index-url https://download.pytorch.org/whl/cu130 \
      "$(grep -E '^torch==' /tmp/requirements.txt)"

WORKDIR /src
COPY . .
# Tests off: GoogleTest suites and fuzz targets stay out of the image. The last -D wins over
# build.sh's own CMAKE_CUDA_ARCHITECTURES.
RUN AUTOQUANT_PYTHON=/opt/venv/bin/python bash scripts/build.sh /src/build Release \
      -DAUTOQUANT_BUILD_TESTS=OFF "-DCMAKE_CUDA_ARCHITECTURES=90;120"

# Gather what stage 2 copies. Libraries of the runtime image itself (glibc, libstdc++, libgcc) and
# CUDA's (the runtime image's or the wheels') are left out; everything else ldd resolves is kept.
# torch/lib and nvidia/ keep their relative layout so that libtorch_cuda's RPATHs still resolve.
RUN set -eu; mkdir -p /out/bin /out/lib /out/torch \
 && for b in autoquantd autoquant; do strip --strip-debug -o /out/bin/$b build/bin/$b; done \
 && ldd /out/bin/autoquantd /out/bin/autoquant | awk '/=> \//{print $3}' | sort -u \
    | grep -v -E '/site-packages/|/usr/local/cuda|/(ld-linux[^/]*|lib(c|m|dl|rt|pthread|stdc\+\+|gcc_s)\.so[^/]*)$' \
    | xargs -r -I{} cp -L {} /out/lib/ \
 && site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && mkdir -p /out/torch/torch && cp -a "$site/torch/lib" /out/torch/torch/lib && cp -a "$site/nvidia" /out/torch/nvidia \
 && ls /out/lib

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU} AS runtime
COPY --from=build /out/torch /opt/libtorch
COPY --from=build /out/lib /opt/autoquant/lib
COPY --from=build /out/bin /opt/autoquant/bin
# A fixed UID that is not the image's default `ubuntu` (1000), so volume ownership is predictable.
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin autoquant \
 && mkdir -p /models /calib /base \
 && chown autoquant:autoquant /models
ENV PATH=/opt/autoquant/bin:${PATH} \
    LD_LIBRARY_PATH=/opt/autoquant/lib:/opt/libtorch/torch/lib:${LD_LIBRARY_PATH}
# Flags from the environment (autoquantd --help lists every AUTOQUANTD_* name). Off loopback the daemon
# refuses to start without a token: mount one at AUTOQUANTD_TOKEN_FILE (a compose or Kubernetes secret).
ENV AUTOQUANTD_MODEL=/base \
    AUTOQUANTD_CALIB=/calib/calib.safetensors \
    AUTOQUANTD_MODELS_ROOT=/models \
    AUTOQUANTD_LISTEN=0.0.0.0:50051 \
    AUTOQUANTD_METRICS=0.0.0.0:9464 \
    AUTOQUANTD_TOKEN_FILE=/run/secrets/autoquant_token \
    AUTOQUANTD_DEVICE=cuda
# Schemes, the SQLite job store and the baseline cache live here; /base and /calib are read-only inputs.
VOLUME ["/models"]
EXPOSE 50051 9464
USER autoquant
# grpc.health.v1 through the CLI: SERVING only once the model is on the device and warmed up, so loading
# a large checkpoint gets a long start period. Health needs no token. With TLS, add --tls-ca here.
HEALTHCHECK --interval=30s --timeout=10s --start-period=15m --retries=3 \
  CMD autoquant server health --server "127.0.0.1:${AUTOQUANTD_LISTEN##*:}" --timeout 5 >/dev/null || exit 1
# SIGTERM drains: the running job is re-queued, then the daemon exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["autoquantd"]
