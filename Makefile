# Two commands on a fresh machine:
#   make demo   set up .venv and run the main job on the built-in default model
#   make test   set up .venv and run the linters and the tests (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean plugins cpu-libs

setup: $(STAMP)

# torch is pinned in pyproject.toml: its CPU build installs from local disk here, an
# unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,rtx]'
	touch $(STAMP)

# Main job: the whole pipeline on the built-in trained model (axial_deeplab_tiny): export ->
# rewrite -> verify -> FP32/FP16/INT8 -> PQ per precision with the accuracy gate and panels ->
# engines (TensorRT where installed, else TensorRT-RTX) -> latency -> out/deploy/report.html.
demo: $(STAMP)
	$(BIN)/axial-deploy deploy --out out/deploy

# The fused AxialAttention CUDA kernel and its C ABI (build/lib/libaxial_attention_capi.so) and,
# when TensorRT is found, its plugin. Needs CMake >= 3.25 and nvcc; builds nothing without nvcc.
plugins:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j

# The CPU libraries: the native AxialAttention op that ONNX Runtime runs (axial_deploy/ort_ops.py)
# and the calibration histograms (calibration/ranges.py), build/lib/libaxial_attention_cpu.so and
# build/lib/libaxial_calibration.so. CMake >= 3.25 and a C++17 compiler, no CUDA. `make test`
# builds them first; without CMake it says so and the tests that need them skip with that reason
# (everything else falls back to the Python/numpy paths).
cpu-libs:
	@if command -v cmake >/dev/null 2>&1; then \
	  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	  cmake --build build -j2 --target axial_attention_cpu axial_calibration; \
	else \
	  echo "make cpu-libs: cmake not found, the CPU libraries are not built (install CMake >= 3.25)"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint cpu-libs
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out build .pytest_cache .ruff_cache
