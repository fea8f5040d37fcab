# Two commands on a fresh machine:
#   make demo   set up .venv and run the main job on the built-in default model
#   make test   set up .venv and run the linters and the tests (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean plugins

setup: $(STAMP)

# torch is pinned in pyproject.toml: its CPU build installs from local disk here, an
# unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,rtx]'
	touch $(STAMP)

# Main job (until the full deploy pipeline lands): export the default panoptic model to
# ONNX (checked against PyTorch), rewrite its attention layers into AxialAttention nodes,
# and verify the rewritten graph against the exported one in ONNX Runtime.
demo: $(STAMP)
	$(BIN)/axial-deploy export --model axial_deeplab_s --input-shape 1x3x129x257 \
		--live-random-weights -o out/axial_deeplab_s.onnx
	$(BIN)/axial-deploy rewrite out/axial_deeplab_s.onnx -o out/axial_deeplab_s.axial.onnx \
		--report out/axial_deeplab_s.rewrite.json
	$(BIN)/axial-deploy verify out/axial_deeplab_s.onnx out/axial_deeplab_s.axial.onnx

# The fused AxialAttention CUDA kernel and its C ABI (build/lib/libaxial_attention_capi.so) and,
# when TensorRT is found, its plugin. Needs CMake >= 3.25 and nvcc; builds nothing without nvcc.
plugins:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out build .pytest_cache .ruff_cache
