# axial-deploy on a Jetson Orin with JetPack 6.1 / 6.2 (Jetson Linux R36.4, CUDA 12.6, TensorRT
# 10.3, Python 3.10, Orin = sm_87), in NVIDIA's L4T JetPack image; `pip install .` compiles the
# kernel library and the TensorRT plugin into the package (axial_deploy/lib/).
#
#   docker build -f docker/l4t-jetpack.Dockerfile -t axial-deploy:l4t .      (on the Jetson)
#   docker run --runtime nvidia --rm -v $PWD/out:/work axial-deploy:l4t \
#       axial-deploy build /work/model.axial.onnx -o /work/model.engine
#
# JetPack 6.1/6.2 only: JetPack 6.0 (R36.3) is older than the plugin needs, and JetPack 7
# (Thor, and Orin on 7.2) has no l4t-jetpack image; it uses the Arm server (SBSA) CUDA 13
# software, so use docker/ngc-tensorrt.Dockerfile there (docs/install/jetpack7.md). The base's
# L4T release must match the device's (`cat /etc/nv_tegra_release`); the tag below is the one
# this file was written for, not checked against NGC's list (no NGC access where it was written).
# Step by step: docs/install/jetpack6.md. Not built here (x86, no Docker daemon, no Jetson).
ARG BASE=nvcr.io/nvidia/l4t-jetpack:r36.4.0
FROM ${BASE}

ARG CUDA_ARCHITECTURES=87

# The TensorRT Python bindings of JetPack are the python3-libnvinfer .deb (system Python 3.10);
# the venv sees them through --system-site-packages.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv python3-pip python3-libnvinfer \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv --system-site-packages /opt/axial-deploy/venv
ENV PATH=/opt/axial-deploy/venv/bin:/usr/local/cuda/bin:${PATH}

COPY . /opt/axial-deploy/src
WORKDIR /opt/axial-deploy/src

# Ubuntu 22.04's CMake is 3.22: the build takes CMake >= 3.25 from PyPI by itself
# (pyproject.toml, cmake.version). TensorRT: /usr/include/aarch64-linux-gnu and
# /usr/lib/aarch64-linux-gnu, found by cmake/TensorRTPlugin.cmake without options. nvcc is not
# on a Jetson's PATH: CUDACXX names it. constraints/jetpack6.txt keeps numpy 1 (JetPack 6's
# torch wheels are built against it) and a CUDA 12 cuda-python.
# hadolint ignore=DL3013
RUN python3 -m pip install --no-cache-dir --upgrade pip \
 && CUDACXX=/usr/local/cuda/bin/nvcc CUDAARCHS="${CUDA_ARCHITECTURES}" \
      python3 -m pip install --no-cache-dir -v -c constraints/jetpack6.txt '.[gpu]' \
 && axial-deploy plugin-path \
 && python3 -c "from axial_deploy.native import KERNEL, PLUGIN, locate; \
assert locate(KERNEL).path and locate(PLUGIN).path, 'native parts were not built'"

WORKDIR /work
CMD ["axial-deploy", "doctor"]
