#!/usr/bin/env bash
# Builds llama.cpp once, for every x86-64 CPU with AVX2, and installs it into a virtualenv:
#   - the llama-cpp-python wheel (the library: quantization, parity, tests)
#   - llama.cpp's own `llama-server` (the serving engine), from the llama.cpp tree vendored in the
#     same sdist, so library and server are the same llama.cpp.
# pip's default build uses GGML_NATIVE=ON, which compiles for whatever the build CPU claims (AMX on
# a Sapphire Rapids VM that does not enable AMX tile state: "Illegal instruction"). Here the CPU
# features are a fixed x86-64-v3 baseline (AVX, AVX2, FMA, F16C, BMI2) and nothing newer.
# The result is cached outside the tree, keyed by the llama-cpp-python version, the flags, the
# compiler and this script's revision; reinstalling with nothing changed builds nothing.
#
# usage: scripts/build-llama-cpp.sh [VENV]   (default .venv)
#   FORGEFLOW_BUILD_CACHE  where builds are kept (default ${XDG_CACHE_HOME:-~/.cache}/forgeflow/llama.cpp)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${1:-$ROOT/.venv}" && pwd)"
PY="$VENV/bin/python"
REVISION=1 # bump when the build steps below change

# one pin, in pyproject.toml: pip must never replace this build with a native one
VERSION="$(sed -nE 's/.*"llama-cpp-python(\[[a-z,]*\])?==([0-9.]+)".*/\2/p' "$ROOT/pyproject.toml" | head -n1)"
if [[ -z "$VERSION" ]]; then
    echo "error: pyproject.toml does not pin llama-cpp-python==X.Y.Z" >&2
    exit 2
fi

case "$(uname -m)" in
x86_64)
    CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF
        -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
        -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF
        -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    ;;
*)
    # other architectures: the compiler's generic baseline, never the build machine's extensions
    CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF"
    ;;
esac
CPU_FLAGS="$(echo $CPU_FLAGS)" # one line, single spaces
COMMON_FLAGS="-DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF"
COMPILER="$(${CXX:-c++} --version | head -n1)"
KEY="$(printf '%s\n' "$VERSION" "$CPU_FLAGS" "$COMMON_FLAGS" "$COMPILER" "$(uname -m)" "$REVISION" |
    sha256sum | cut -c1-16)"
CACHE_ROOT="${FORGEFLOW_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/forgeflow/llama.cpp}"
BUILD="$CACHE_ROOT/$VERSION-$KEY"
MARKER="$VENV/.llama-cpp-build"
JOBS="$(nproc)"

say() { echo "llama.cpp: $*"; }

build() {
    mkdir -p "$CACHE_ROOT"
    WORK="$(mktemp -d "$CACHE_ROOT/.build-XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    local work="$WORK"
    local started=$SECONDS
    say "building llama-cpp-python $VERSION and llama-server for every $(uname -m) CPU with AVX2 (first install only, ~10 min on 2 cores)"
    "$PY" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$work/sdist"
    local sdist
    sdist="$(ls "$work"/sdist/llama_cpp_python-*.tar.gz)"

    say "[1/2] the llama-cpp-python wheel"
    # LLAVA_BUILD=OFF: forgeflow does not use the multimodal helper (llama_cpp.mtmd_cpp is only
    # imported by the llava chat handlers); it would double the build time
    CMAKE_ARGS="$COMMON_FLAGS $CPU_FLAGS -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
        "$PY" -m pip wheel -q --no-deps --no-cache-dir "$sdist" -w "$work/wheel"

    say "[2/2] llama-server"
    tar -xzf "$sdist" -C "$work"
    local src
    src="$(ls -d "$work"/llama_cpp_python-*/vendor/llama.cpp)"
    local generator=()
    command -v ninja >/dev/null && generator=(-G Ninja)
    # shellcheck disable=SC2086  # the flag lists are meant to split
    cmake -S "$src" -B "$work/server" "${generator[@]}" $COMMON_FLAGS $CPU_FLAGS \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DBUILD_SHARED_LIBS=OFF >"$work/cmake.log"
    cmake --build "$work/server" -t llama-server -j "$JOBS" >>"$work/cmake.log"
    mkdir -p "$work/out/bin"
    mv "$work"/wheel/*.whl "$work/out/"
    cp "$work/server/bin/llama-server" "$work/out/bin/llama-server"
    cat >"$work/out/build.json" <<EOF
{"llama_cpp_python": "$VERSION", "key": "$KEY", "cpu_flags": "$CPU_FLAGS", "compiler": "$COMPILER", "arch": "$(uname -m)", "seconds": $((SECONDS - started)), "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"}
EOF
    rm -rf "$BUILD"
    mv "$work/out" "$BUILD" # whole or not at all
    say "built in $((SECONDS - started)) s, cached in $BUILD"
}

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$KEY" && -x "$VENV/bin/llama-server" ]] &&
    "$PY" -c "import llama_cpp" 2>/dev/null; then
    say "llama-cpp-python $VERSION and llama-server are installed and up to date ($KEY)"
    exit 0
fi
[[ -f "$BUILD/build.json" && -x "$BUILD/bin/llama-server" ]] || build
"$PY" -m pip install -q --no-deps --force-reinstall "$BUILD"/llama_cpp_python-*.whl
cp "$BUILD/bin/llama-server" "$VENV/bin/.llama-server.tmp"
mv "$VENV/bin/.llama-server.tmp" "$VENV/bin/llama-server"
echo "$KEY" >"$MARKER"
say "installed llama-cpp-python $VERSION and llama-server from the cache ($KEY)"
