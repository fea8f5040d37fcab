# Two commands on a fresh machine:
#   make demo   set up .venv and run the main job on the built-in default model
#   make test   set up .venv and run the linters and the tests (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean plugins cpu-libs gpu-check gpu-check-deps

setup: $(STAMP)

# Editable install of everything a developer runs: the deploy side, [torch] (export, train,
# zoo, deploy), [rtx] (TensorRT-RTX builds engines on CPU), [dev]. constraints.txt keeps torch at
# the CPU 2.13.0 build. AXIAL_DEPLOY_NATIVE=OFF: the editable install compiles no CUDA;
# `make plugins` builds the native libraries into build/lib/, where axial_deploy/native.py
# finds them in a checkout.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	AXIAL_DEPLOY_NATIVE=OFF $(BIN)/python -m pip install --quiet -c constraints.txt \
		-e '.[dev,rtx,serve,torch]'
	touch $(STAMP)

# Main job: the whole pipeline on the built-in trained model (axial_deeplab_tiny): export ->
# rewrite -> verify -> FP32/FP16/INT8 -> PQ per precision with the accuracy gate and panels ->
# engines (TensorRT where installed, else TensorRT-RTX) -> latency -> out/deploy/report.html.
# The CPU libraries first (cpu-libs): without them the rewritten graphs run the Python reference
# op in ONNX Runtime, several times slower than the plain graph; cpu-libs says so without CMake.
demo: $(STAMP) cpu-libs
	$(BIN)/axial-deploy deploy -o out/deploy

# The fused AxialAttention CUDA kernel and its C ABI (build/lib/libaxial_attention_capi.so) and,
# when TensorRT is found, its plugin. Needs CMake >= 3.25 and nvcc; builds nothing without nvcc.
plugins:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j

# One command for a lent GPU machine (python 3.10-3.12, numpy, torch, nvcc; no make, pip,
# TensorRT or CMake needed: this target only spells `python3 benchmarks/gpu_check.py OUT`):
# builds the kernel for the local GPU, runs tests/op/test_kernel_gpu.py and benchmarks/kernel.py
# within a time budget (--budget, 360 s), writes $(OUT)/gpu_check.jsonl/.json/.md as it goes.
# DRY_RUN=1 stops before the first CUDA call (runs anywhere).
# On a machine without pytest/PyYAML, first run `make gpu-check-deps` here and carry
# build/gpu-check/deps along (plugins/axial_attention/README.md, "GPU check").
OUT ?= out/gpu-check
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py $(OUT) $(if $(DRY_RUN),--dry-run) $(GPU_CHECK_ARGS)

gpu-check-deps:
	$(GPU_PYTHON) benchmarks/gpu_check.py --prepare-deps

# The CPU libraries: the native AxialAttention op that ONNX Runtime runs (axial_deploy/op/ort.py)
# and the calibration histograms (calibration/ranges.py), build/lib/libaxial_attention_cpu.so and
# build/lib/libaxial_calibration.so. CMake >= 3.25 and a C++17 compiler, no CUDA. `make test`
# builds them first; without CMake it says so and the tests that need them skip with that reason
# (everything else falls back to the Python/numpy paths). MAKEFLAGS: the sub-make CMake runs
# prints no "Entering directory" lines into demo and CI logs.
cpu-libs:
	@if command -v cmake >/dev/null 2>&1; then \
	  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	  MAKEFLAGS=--no-print-directory cmake --build build -j2 --target axial_attention_cpu axial_calibration; \
	else \
	  echo "make cpu-libs: cmake not found, the CPU libraries are not built (install CMake >= 3.25):" \
	    "rewritten graphs run the slower Python reference op in ONNX Runtime"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint cpu-libs
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out build .pytest_cache .ruff_cache
