# axial-deploy on a datacenter GPU, in NVIDIA's NGC TensorRT image: TensorRT (headers, libnvinfer,
# trtexec, Python bindings) and the CUDA toolkit come with the image; `pip install .` compiles the
# kernel library and the TensorRT plugin into the package (axial_deploy/lib/).
#
#   docker build -f docker/ngc-tensorrt.Dockerfile -t axial-deploy:ngc .
#   docker build -f docker/ngc-tensorrt.Dockerfile --build-arg BASE=nvcr.io/nvidia/tensorrt:<tag> \
#       --build-arg CUDA_ARCHITECTURES="90-real" -t axial-deploy:ngc .
#   docker run --gpus all --rm -v $PWD/out:/work axial-deploy:ngc \
#       axial-deploy build /work/model.axial.onnx -o /work/model.engine
#
# Pick BASE by the TensorRT version you deploy with (the engine must be built and run with the
# same TensorRT); the Frameworks Support Matrix lists each release's TensorRT and CUDA
# (https://docs.nvidia.com/deeplearning/frameworks/support-matrix/index.html). The NGC releases
# from 25.08 on are based on CUDA 13 (Triton's 25.08 release notes), 25.06 and older on CUDA 12.
# CUDA_ARCHITECTURES: the GPUs the kernel is compiled for (CUDA >= 12.8 for 100/120; CUDA 13
# drops everything below 75). Step by step: docs/install/ngc-container.md.
# Not built on the machine this file was written on (no Docker daemon, no NGC access).
ARG BASE=nvcr.io/nvidia/tensorrt:25.01-py3
FROM ${BASE}

ARG CUDA_ARCHITECTURES="80-real;86-real;89-real;90"

# A venv that still sees the image's own TensorRT Python bindings (installed system-wide).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv --system-site-packages /opt/axial-deploy/venv
ENV PATH=/opt/axial-deploy/venv/bin:/usr/local/cuda/bin:${PATH}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY . /opt/axial-deploy/src
WORKDIR /opt/axial-deploy/src

# The image installs TensorRT from .deb packages: headers in /usr/include/<arch>-linux-gnu and
# libnvinfer in /usr/lib/<arch>-linux-gnu, where cmake/TensorRTPlugin.cmake looks by itself.
# cuda-python of the image's own CUDA major, read from its nvcc (the comment above says which
# releases are CUDA 13), through constraints/cuda<major>.txt.
# hadolint ignore=DL3013
RUN CUDA_MAJOR="$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')" \
 && test -f "constraints/cuda${CUDA_MAJOR}.txt" \
 && python3 -m pip install --no-cache-dir --upgrade pip \
 && CUDAARCHS="${CUDA_ARCHITECTURES}" python3 -m pip install --no-cache-dir -v \
      -c "constraints/cuda${CUDA_MAJOR}.txt" '.[gpu]' \
 && axial-deploy plugin-path \
 && python3 -c "from axial_deploy.native import KERNEL, PLUGIN, locate; \
assert locate(KERNEL).path and locate(PLUGIN).path, 'native parts were not built'"

WORKDIR /work
CMD ["axial-deploy", "doctor"]
