# bertrt: one target per stage. `make setup test` installs and tests; `make demo` runs the main job.
# MODEL picks configs/$(MODEL).yaml; artifacts go to out/$(MODEL)/ (ignored by git).
MODEL  ?= minilm-l6-h384-squad11
CONFIG ?= configs/$(MODEL).yaml
OUT    ?= out/$(MODEL)
VENV   ?= .venv
PYTHON ?= python3
LIMIT  ?=
PY     := $(VENV)/bin/python
BERTRT := $(VENV)/bin/bertrt --config $(CONFIG)
CKPT   := models/$(MODEL)

PASSAGE  ?= TensorRT is a high performance deep learning inference platform that delivers low latency and high throughput for apps such as recommenders, speech and image/video on NVIDIA GPUs. It includes parsers to import models, and plugins to support novel ops and layers before applying optimizations for inference. Today NVIDIA is open-sourcing parsers and plugins in TensorRT so that the deep learning community can customize and extend these components to take advantage of powerful TensorRT optimizations for your apps.
QUESTION ?= What is TensorRT?
# surgery target (plugins | native | ort) and TensorRT plugin API for `plugins` (v2 | v3)
TARGET ?= ort
PLUGIN_API ?= v3
FUSED  := $(OUT)/model.$(TARGET).onnx
# precision stage: fp16 | int8 | fp8, INT8/FP8 calibration method, GEMM groups kept in float (default for int8:
# attention_bmm,ffn_down; `none` quantizes every GEMM), precision of the float parts (int8 default fp16, fp8 fp32)
PRECISION    ?= int8
CALIB_METHOD ?= max
CALIB_NUM    ?= 256
INT8_EXCLUDE ?=
FLOAT_PRECISION ?=
QUANT  := $(OUT)/model.$(TARGET).$(PRECISION).onnx
# Parameter stamps: $(call params,ARTIFACT,key=value ...) is a prerequisite rewritten only when the parameters change
# or when ARTIFACT's sidecar records other values (made by the notebook or by hand), so make rebuilds exactly then.
params = $(shell $(PYTHON) scripts/make_params.py $(dir $(1)).params-$(notdir $(1)) $(1) $(2))
# TensorRT engines (`make build`): TARGET and PRECISION as given on the command line, else native fp32;
# RUNTIME auto | tensorrt | tensorrt-rtx; BUILD_FLAGS e.g. --profile batch=1:8:8,seq=384 --precision int8 (TRT 10).
RUNTIME      ?= auto
BUILD_FLAGS  ?=
BUILD_TARGET    := $(if $(filter command line environment,$(origin TARGET)),$(TARGET),native)
BUILD_PRECISION := $(if $(filter command line environment,$(origin PRECISION)),$(PRECISION),fp32)
BUILD_SRC := $(OUT)/model.$(BUILD_TARGET)$(if $(filter fp32,$(BUILD_PRECISION)),,.$(BUILD_PRECISION)).onnx
ENGINE    := $(BUILD_SRC:.onnx=.engine)
# the model `make squad` scores (default: the fp32 export), e.g. EVAL=$(QUANT)
EVAL   ?= $(OUT)/model.onnx
# the model `make serve` / `make serve-bench` / `make triton-repo` serve, and where
SERVE_MODEL ?= $(OUT)/model.onnx
HTTP_PORT   ?= 8000
GRPC_PORT   ?= 8001

.PHONY: setup test test-slow check-wheel export demo infer squad surgery compare inspect perf quantize build calibrate \
	notebook notebook-figures triton-repo serve serve-bench gpu-model squad-gpu varseqlen perf-gpu docs clean
.DELETE_ON_ERROR:

setup: $(VENV)/.installed
# The venv's Python: the first one on this machine that Triton's Python-backend stub can run (see
# serve/stub_python.py), else $(PYTHON) itself (`bertrt serve` then says which Python would work).
$(VENV)/.installed: requirements.lock requirements-triton.lock pyproject.toml
	py=$$($(PYTHON) serve/stub_python.py) || py=$(PYTHON); echo "venv Python: $$py"; $$py -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps --target $(VENV)/triton -r requirements-triton.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

test: setup
	$(PY) -m pytest -q

# The accuracy suites that take minutes (full SQuAD dev) and the wheel check; CI runs them too.
test-slow: setup
	$(PY) -m pytest -q -m slow

# The wheel from any directory: build it, install it into a new venv, run the commands from another folder.
check-wheel: setup
	scripts/check_wheel.sh

export: $(OUT)/model.onnx
$(OUT)/model.onnx: $(wildcard $(CKPT)/*) $(CONFIG) | setup
	$(BERTRT) export --output $@

demo infer: export
	$(BERTRT) infer --model $(OUT)/model.onnx --passage "$(PASSAGE)" --question "$(QUESTION)"

# Full SQuAD v1.1 dev by default; LIMIT=300 for the CI subset.
squad: $(EVAL)
	$(BERTRT) squad --model $(EVAL) --output $(EVAL:.onnx=).predictions.json $(if $(LIMIT),--limit $(LIMIT))

surgery: $(FUSED)
$(FUSED): $(OUT)/model.onnx $(call params,$(FUSED),target=$(TARGET) $(if $(filter plugins,$(TARGET)),plugin_api=$(PLUGIN_API)))
	$(BERTRT) surgery --input $< --output $@ --target $(TARGET) --plugin-api $(PLUGIN_API)

# Fused vs unfused on real SQuAD features, per layer (exit 1 above --atol 1e-4).
compare: $(FUSED)
	$(BERTRT) compare $(OUT)/model.onnx $(FUSED) --per-layer

# The ONNX graph (Polygraphy), then the TensorRT network the parser makes of it (TensorRT-RTX parses on the CPU).
# Default: the `native` target, the one every TensorRT parses; INSPECT=path for another model (an error, e.g. a
# target TensorRT cannot take, fails the target).
INSPECT ?= $(OUT)/model.native.onnx
inspect: export
	$(if $(filter command line environment,$(origin INSPECT)),,$(MAKE) --no-print-directory surgery TARGET=native)
	$(VENV)/bin/polygraphy inspect model $(INSPECT) --show layers
	$(BERTRT) build --model $(INSPECT) --inspect --runtime $(RUNTIME)

# CPU latency, unfused vs fused, batch 1 and 8 x seq 128 and 384 (median of 20 runs, same process).
perf: $(FUSED)
	$(BERTRT) perf --model $(OUT)/model.onnx --model $(FUSED) --output $(OUT)/perf-$(TARGET).json

# Precision in the graph (TensorRT 11): FP16 conversion or Q/DQ calibrated on SQuAD train features.
quantize: $(QUANT)
QUANT_PARAMS := precision=$(PRECISION) $(if $(filter fp16,$(PRECISION)),,calib_method=$(CALIB_METHOD) \
	calib_num=$(CALIB_NUM) excluded_groups=$(INT8_EXCLUDE) float_precision=$(FLOAT_PRECISION))
$(QUANT): $(FUSED) $(call params,$(QUANT),$(QUANT_PARAMS))
	$(BERTRT) quantize --input $< --output $@ --precision $(PRECISION) --calib-method $(CALIB_METHOD) \
		--calib-num $(CALIB_NUM) $(if $(INT8_EXCLUDE),--int8-exclude $(INT8_EXCLUDE)) \
		$(if $(FLOAT_PRECISION),--float-precision $(FLOAT_PRECISION))

# TensorRT engine + sidecar (Polygraphy); the fused / quantized ONNX it needs is made first.
build: export
	$(MAKE) --no-print-directory surgery TARGET=$(BUILD_TARGET)
	$(if $(filter fp32,$(BUILD_PRECISION)),,$(MAKE) --no-print-directory quantize TARGET=$(BUILD_TARGET) PRECISION=$(BUILD_PRECISION))
	$(BERTRT) build --model $(BUILD_SRC) --output $(ENGINE) --runtime $(RUNTIME) $(BUILD_FLAGS)

# TensorRT 10 implicit INT8 (= bertrt build --runtime tensorrt --precision int8): engine + calibration cache named
# after the model's hash (needs TensorRT 10 and a GPU). On the `native` target (the one TensorRT 10 parses).
calibrate: export
	$(MAKE) --no-print-directory surgery TARGET=native
	$(BERTRT) calibrate --model $(OUT)/model.native.onnx

# The walkthrough notebook: installs the pinned JupyterLab (requirements-notebook.lock) on first use, then opens it
# (--allow-root where make runs as root, e.g. in a container).
notebook: $(VENV)/.notebook-installed
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/bertrt.ipynb
$(VENV)/.notebook-installed: requirements-notebook.lock | setup
	$(VENV)/bin/pip install -q -r requirements-notebook.lock
	touch $@

# Execute the notebook top to bottom and save its figures in $(OUT)/notebook/ (its artifacts there too, apart from
# make's own; nothing tracked is rewritten).
notebook-figures: setup
	$(PY) scripts/run_notebook.py --out $(OUT)/notebook --figures $(OUT)/notebook

# Serving with Triton Inference Server (the tritonserver bundled in nvidia-pytriton), on 127.0.0.1.
triton-repo: $(SERVE_MODEL)
	rm -rf $(OUT)/triton-repo
	$(BERTRT) triton-repo --model $(SERVE_MODEL) --output $(OUT)/triton-repo

serve: $(SERVE_MODEL)
	$(BERTRT) serve --model $(SERVE_MODEL) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT)

# Throughput and p50/p99 latency at concurrency 1, 8 and 32 (own server on free local ports).
serve-bench: $(SERVE_MODEL)
	$(BERTRT) serve-bench --model $(SERVE_MODEL) --passage "$(PASSAGE)" --question "$(QUESTION)"

# GPU (onnxruntime-gpu, --provider cuda; see docs/gpu-runtime.md): the FP16 `ort` target is the GPU artifact.
GPU_MODEL := $(OUT)/model.ort.fp16.onnx
GPU_BATCH ?= 256
gpu-model:
	$(MAKE) quantize TARGET=ort PRECISION=fp16

# Full SQuAD dev on the GPU: IOBinding, sequence-length buckets, one CUDA graph per bucket.
squad-gpu: gpu-model
	$(BERTRT) squad --provider cuda --cuda-graph --batch-size $(GPU_BATCH) --model $(GPU_MODEL) \
		--output $(GPU_MODEL:.onnx=).predictions.json

# Variable sequence length: onnxruntime's packing mode (CUDA provider only).
varseqlen: gpu-model
	$(BERTRT) varseqlen --input $(GPU_MODEL)

# GPU latency grid with device-side timing: the GPU model and random-weight BERT-Base/Large (needs torch and
# transformers), against torch eager / torch + CUDA graph; writes perf-gpu.json, .csv and .png.
perf-gpu: gpu-model
	$(BERTRT) perf --provider cuda --model $(GPU_MODEL) --random-bert base --random-bert large --cuda-graph \
		--batch 1 8 32 128 --seq 128 384 --warmup 5 --runs 100 --output $(OUT)/perf-gpu.json

clean:
	rm -rf out

# The documentation site (mkdocs.yml; docs/*.md) into out/site; --strict: a broken link or anchor fails it.
docs: setup
	$(VENV)/bin/mkdocs build --strict --clean -f mkdocs.yml -d out/site

# The architecture picture (docs/architecture.md), drawn from the code's imports (bertrt/layers.py is the table).
.PHONY: architecture
architecture: setup
	$(PY) scripts/architecture_picture.py docs/architecture.png
