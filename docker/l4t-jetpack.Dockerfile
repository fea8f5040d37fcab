# axial-deploy on a Jetson (JetPack 6.x: L4T r36.x, CUDA 12.6, TensorRT 10.3, Python 3.10, Orin =
# sm_87), in NVIDIA's L4T JetPack image; `pip install .` compiles the kernel library and the
# TensorRT plugin into the package (axial_deploy/lib/).
#
#   docker build -f docker/l4t-jetpack.Dockerfile -t axial-deploy:l4t .      (on the Jetson)
#   docker run --runtime nvidia --rm -v $PWD/out:/work axial-deploy:l4t \
#       axial-deploy build /work/model.axial.onnx -o /work/model.engine
#
# The base's L4T release must match the device's (`cat /etc/nv_tegra_release`). For JetPack 7 /
# Thor use a JetPack 7 base (CUDA 13, TensorRT 10.13+) and CUDA_ARCHITECTURES=110.
# Not built on the machine this file was written on (x86, no Docker daemon, no Jetson).
ARG BASE=nvcr.io/nvidia/l4t-jetpack:r36.4.0
FROM ${BASE}

ARG CUDA_ARCHITECTURES=87

# The TensorRT Python bindings of JetPack are the python3-libnvinfer .deb (system Python 3.10);
# the venv sees them through --system-site-packages.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv python3-pip python3-libnvinfer \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv --system-site-packages /opt/axial-deploy/venv
ENV PATH=/opt/axial-deploy/venv/bin:/usr/local/cuda/bin:${PATH}

COPY . /opt/axial-deploy/src
WORKDIR /opt/axial-deploy/src

# Ubuntu 22.04's CMake is 3.22: the build takes CMake >= 3.25 from PyPI by itself
# (pyproject.toml, cmake.version). TensorRT: /usr/include/aarch64-linux-gnu and
# /usr/lib/aarch64-linux-gnu, found by cmake/TensorRTPlugin.cmake without options.
RUN python3 -m pip install --no-cache-dir --upgrade pip \
 && CUDAARCHS="${CUDA_ARCHITECTURES}" python3 -m pip install --no-cache-dir -v . 'cuda-python==12.6.*' \
 && axial-deploy plugin-path \
 && python3 -c "from axial_deploy.native import KERNEL, PLUGIN, locate; \
assert locate(KERNEL).path and locate(PLUGIN).path, 'native parts were not built'"

WORKDIR /work
CMD ["axial-deploy", "doctor"]
