#!/usr/bin/env bash
# The wheel works from any directory (issue 19): build bertrt's wheel, install it into a NEW virtualenv that does
# not see this checkout, and run the commands from an empty folder elsewhere, with only the package's own defaults
# (config, vocab, SQuAD dev, calibration subset). `make check-wheel`; tests/test_wheel.py (slow) runs it in CI.
#
# Third-party packages: DEPS_SITE (a site-packages holding bertrt's dependencies, e.g. the checkout's .venv) is
# made visible to the new venv through a .pth file, as a pip install of the wheel's dependencies would make them;
# without it, pip installs the wheel with its dependencies and the 'export' extra.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/bertrt-wheel.XXXXXX)}
PYTHON=${PYTHON:-python3}
mkdir -p "$WORK/dist" "$WORK/run"

echo "== build the wheel"
"$ROOT/.venv/bin/pip" wheel -q --no-deps -w "$WORK/dist" "$ROOT"
wheel=$(ls "$WORK"/dist/bertrt-*.whl)

echo "== install it into a new venv ($WORK/venv)"
"$PYTHON" -m venv "$WORK/venv"
site=$("$WORK/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ -n "${DEPS_SITE:-}" ]; then
    echo "$DEPS_SITE" > "$site/zz_deps.pth"
    "$WORK/venv/bin/pip" install -q --no-deps "$wheel"
else
    "$WORK/venv/bin/pip" install -q "$wheel[export]"
fi

cd "$WORK/run"  # nothing of the checkout here
export PATH="$WORK/venv/bin:$PATH"
where=$(python -c "import bertrt; print(bertrt.__file__)")
case "$where" in "$site"/*) ;; *) echo "bertrt imported from $where, not from the wheel" >&2; exit 1 ;; esac

run() { echo "\$ $*"; "$@"; }
run bertrt --version
run python -m bertrt --version
run bertrt --help > /dev/null
run bertrt data
# The checkpoint is not in the wheel (44 MB): without --checkpoint, one line says so (exit 2); take it from the
# checkout; everything else is the package's.
set +e; bertrt export --output none.onnx 2> export.err; code=$?; set -e
[ "$code" = 2 ] && grep -q "give --checkpoint" export.err || { cat export.err >&2; exit 1; }
run bertrt export --checkpoint "$ROOT/models/minilm-l6-h384-squad11" --output model.onnx --no-progress
run bertrt infer --model model.onnx --passage "TensorRT is a high performance deep learning inference platform." \
    --question "What is TensorRT?"
run bertrt surgery --input model.onnx --target native
run bertrt quantize --input model.native.onnx --precision fp16 --no-progress
run bertrt quantize --input model.native.onnx --precision int8 --calib-num 16 --no-progress
run bertrt squad --model model.native.fp16.onnx --limit 20 --no-progress
run bertrt compare model.onnx model.native.onnx --num-features 4
run bertrt compare model.onnx model.native.onnx --synthetic --num-features 2 --seq-len 64 --batch-size 2
run bertrt perf --model model.native.onnx --batch 1 --seq 64 --runs 3 --warmup 1 --no-progress
run python -m bertrt.calibration.diagnose --fp32 model.native.onnx --qdq model.native.int8.onnx --questions 2 \
    > /dev/null
test ! -e out/default || { echo "out/default appeared: a default fell back to the working directory" >&2; exit 1; }
for f in model.native.onnx model.native.fp16.onnx model.native.int8.onnx model.native.fp16.predictions.json \
         model.native.perf.json; do
    test -f "$f" || { echo "missing $f (defaults beside the input)" >&2; exit 1; }
done
echo "== the wheel works from $WORK/run"
