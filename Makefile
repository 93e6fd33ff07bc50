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
# precision stage: fp16 | int8 | fp8, INT8/FP8 calibration method, GEMM groups kept in float (e.g. attention_bmm,ffn_down)
PRECISION    ?= int8
CALIB_METHOD ?= max
INT8_EXCLUDE ?=
QUANT  := $(OUT)/model.$(TARGET).$(PRECISION).onnx
# the model `make squad` scores (default: the fp32 export), e.g. EVAL=$(QUANT)
EVAL   ?= $(OUT)/model.onnx

.PHONY: setup test test-slow export demo infer squad surgery compare inspect perf quantize calibrate clean \
	gpu-model squad-gpu varseqlen perf-gpu
.DELETE_ON_ERROR:

setup: $(VENV)/.installed
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

test: setup
	$(PY) -m pytest -q

# The accuracy suites that take minutes (full SQuAD dev); CI runs them too.
test-slow: setup
	$(PY) -m pytest -q -m slow

export: $(OUT)/model.onnx
$(OUT)/model.onnx: $(wildcard $(CKPT)/*) $(CONFIG) | setup
	$(BERTRT) export --output $@

demo infer: export
	$(BERTRT) infer --model $(OUT)/model.onnx --passage "$(PASSAGE)" --question "$(QUESTION)"

# Full SQuAD v1.1 dev by default; LIMIT=300 for the CI subset.
squad: $(EVAL)
	$(BERTRT) squad --model $(EVAL) --output $(EVAL:.onnx=).predictions.json $(if $(LIMIT),--limit $(LIMIT))

surgery: $(FUSED)
$(FUSED): $(OUT)/model.onnx
	$(BERTRT) surgery --input $< --output $@ --target $(TARGET) --plugin-api $(PLUGIN_API)

# Fused vs unfused on real SQuAD features, per layer (exit 1 above --atol 1e-4).
compare: $(FUSED)
	$(BERTRT) compare $(OUT)/model.onnx $(FUSED) --per-layer

INSPECT ?= $(FUSED)
inspect: $(INSPECT)
	$(VENV)/bin/polygraphy inspect model $(INSPECT) --show layers

# CPU latency, unfused vs fused, batch 1 and 8 x seq 128 and 384 (median of 20 runs, same process).
perf: $(FUSED)
	$(BERTRT) perf --model $(OUT)/model.onnx --model $(FUSED) --output $(OUT)/perf-$(TARGET).json

# Precision in the graph (TensorRT 11): FP16 conversion or Q/DQ calibrated on SQuAD train features.
quantize: $(QUANT)
$(QUANT): $(FUSED)
	$(BERTRT) quantize --input $< --output $@ --precision $(PRECISION) --calib-method $(CALIB_METHOD) \
		$(if $(INT8_EXCLUDE),--int8-exclude $(INT8_EXCLUDE))

# TensorRT 10 implicit INT8: Polygraphy calibration cache named after the model's hash (needs TensorRT).
calibrate: $(FUSED)
	$(BERTRT) calibrate --model $(FUSED)

# GPU (onnxruntime-gpu, --provider cuda; see README "GPU runtime"): the FP16 `ort` target is the GPU artifact.
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
