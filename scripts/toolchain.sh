#!/usr/bin/env bash
# Builds the real components the tests and `ollamads demo` run against, once, into a cache
# outside the repository:
#
#   $OLLAMADS_TOOLCHAIN_DIR (default ${XDG_CACHE_HOME:-~/.cache}/ollamads/toolchain)
#     llama.cpp-<sdist version>/bin/  llama-gguf-split llama-server llama-quantize llama-cli
#                                     ggml-rpc-server (llama.cpp built with its RPC backend)
#     ollama-<version>/bin/ollama     plus lib/ollama/ (CPU backend or llama-server helpers)
#     open-webui-<version>/           a venv with Open WebUI (browser tests, `ollamads webui`)
#     playwright-core-<version>/      node_modules driving Debian's chromium (no browser download)
#
# Every component is built in a scratch directory and moved into place when complete, so a
# finished directory means a finished build: a second run only checks and prints the paths.
#
#   scripts/toolchain.sh          build what is missing, then print the env file's path
#   scripts/toolchain.sh --env    print `export ...` lines for the built tools
#   scripts/toolchain.sh --no-webui   skip Open WebUI, chromium and playwright-core
set -euo pipefail

# The version pins live in one file that the package and the tests read too.
# shellcheck source=../ollamads/pins.toml
source "$(dirname "$0")/../ollamads/pins.toml"
OLLAMA_MODULE=github.com/ollama/ollama

CACHE=${OLLAMADS_TOOLCHAIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ollamads/toolchain}
JOBS=${OLLAMADS_BUILD_JOBS:-$(nproc)}
# The "-rpc" suffix marks builds with llama.cpp's RPC backend: caches made before it are rebuilt.
LLAMA_DIR=$CACHE/llama.cpp-$LLAMA_CPP_PYTHON_VERSION-rpc
OLD_DIR=$CACHE/ollama-$OLLAMA_OLD_LINE
NEW_DIR=$CACHE/ollama-$OLLAMA_NEW_LINE-rpc
NEWEST_DIR=$CACHE/ollama-$OLLAMA_NEWEST_LINE-rpc
# Not named ollama-v*: the demo's fallback picks the newest real release, never this build.
UNTESTED_DIR=$CACHE/untested-ollama-$OLLAMA_UNTESTED_VERSION-from-$OLLAMA_NEWEST_LINE
WEBUI_DIR=$CACHE/open-webui-$OPEN_WEBUI_VERSION
PLAYWRIGHT_DIR=$CACHE/playwright-core-$PLAYWRIGHT_CORE_VERSION
ENV_FILE=$CACHE/env.sh

log() { printf '[toolchain %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

env_lines() {
  cat <<EOF
export OLLAMADS_LLAMA_CPP_BIN=$LLAMA_DIR/bin
export OLLAMADS_GGUF_SPLIT=$LLAMA_DIR/bin/llama-gguf-split
export OLLAMADS_OLLAMA_OLD=$OLD_DIR/bin/ollama
export OLLAMADS_OLLAMA_NEW=$NEW_DIR/bin/ollama
export OLLAMADS_OLLAMA_NEWEST=$NEWEST_DIR/bin/ollama
export OLLAMADS_OLLAMA_UNTESTED=$UNTESTED_DIR/bin/ollama
export OLLAMADS_RPC_SERVER=$LLAMA_DIR/bin/ggml-rpc-server
export OLLAMADS_OPEN_WEBUI=$WEBUI_DIR/bin/open-webui
export OLLAMADS_PLAYWRIGHT_CORE=$PLAYWRIGHT_DIR/node_modules/playwright-core
export OLLAMADS_CHROMIUM=/usr/bin/chromium
EOF
}

write_env() {
  env_lines >"$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

if [[ ${1:-} == --env ]]; then
  env_lines
  exit 0
fi

mkdir -p "$CACHE/scratch"

# Go's module cache is read-only; builds work on a writable copy.
go_module_copy() { # version dest
  local src
  src=$(go mod download -json "$OLLAMA_MODULE@$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $src ]] || { log "go mod download $OLLAMA_MODULE@$1 failed"; exit 1; }
  rm -rf "$2"
  cp -r "$src" "$2"
  chmod -R u+w "$2"
}

llama_cpp_source() {
  local src=$CACHE/scratch/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION
  if [[ ! -d $src/vendor/llama.cpp ]]; then
    log "fetching the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist (it vendors llama.cpp)"
    local dl=$CACHE/scratch/sdist
    mkdir -p "$dl"
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$dl" \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
    tar -xzf "$dl/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$CACHE/scratch"
  fi
  echo "$src/vendor/llama.cpp"
}

build_llama_cpp() {
  [[ -x $LLAMA_DIR/bin/llama-gguf-split ]] && return
  local src build=$CACHE/scratch/llama.cpp-build
  src=$(llama_cpp_source)
  log "building llama.cpp tools (CPU, static) from $src"
  # GGML_RPC: llama-server gains --rpc (multi-host), and ggml-rpc-server is the worker.
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_CUDA=OFF \
    -DGGML_RPC=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >&2
  cmake --build "$build" -j "$JOBS" \
    --target llama-gguf-split llama-server llama-quantize llama-cli ggml-rpc-server >&2
  rm -rf "$LLAMA_DIR.tmp" && mkdir -p "$LLAMA_DIR.tmp/bin"
  cp "$build"/bin/{llama-gguf-split,llama-server,llama-quantize,llama-cli,ggml-rpc-server} \
    "$LLAMA_DIR.tmp/bin/"
  rm -rf "$LLAMA_DIR" && mv "$LLAMA_DIR.tmp" "$LLAMA_DIR"
  log "llama.cpp tools ready in $LLAMA_DIR/bin"
}

go_build_ollama() { # src version out
  (cd "$1" && go build -trimpath -o "$3" \
    -ldflags "-s -w -X $OLLAMA_MODULE/version.Version=${2#v}" .) >&2
}

build_ollama_old_line() {
  [[ -x $OLD_DIR/bin/ollama ]] && return
  local src=$CACHE/scratch/ollama-$OLLAMA_OLD_LINE llama_src
  log "building Ollama $OLLAMA_OLD_LINE (cgo llama.cpp + ggml CPU backend)"
  go_module_copy "$OLLAMA_OLD_LINE" "$src"
  # The module zip drops every vendor/ folder; the same header-only libraries ship in
  # llama.cpp's tree.
  llama_src=$(llama_cpp_source)
  mkdir -p "$src/llama/llama.cpp/vendor"
  cp -r "$llama_src"/vendor/{nlohmann,stb,miniaudio} "$src/llama/llama.cpp/vendor/"
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release >&2
  # Only the portable x64 CPU variant: the loader picks the best variant present, and the
  # others only add build time.
  cmake --build "$src/build" -j "$JOBS" --target ggml-base ggml-cpu-x64 ggml-cpu-haswell >&2
  rm -rf "$OLD_DIR.tmp" && mkdir -p "$OLD_DIR.tmp/bin" "$OLD_DIR.tmp/lib/ollama"
  cp -P "$src"/build/lib/ollama/libggml-* "$OLD_DIR.tmp/lib/ollama/"
  go_build_ollama "$src" "$OLLAMA_OLD_LINE" "$OLD_DIR.tmp/bin/ollama"
  rm -rf "$OLD_DIR" && mv "$OLD_DIR.tmp" "$OLD_DIR"
  log "Ollama $OLLAMA_OLD_LINE ready: $OLD_DIR/bin/ollama"
}

# The >= v0.30 lines: the Go API server, running llama-server/llama-quantize from the llama.cpp
# build above (Ollama's own CMake fetches llama.cpp from GitHub, out of reach here).
build_ollama_server_line() { # version dest [version the binary reports]
  [[ -x $2/bin/ollama ]] && return
  local src=$CACHE/scratch/ollama-$1 reported=${3:-$1}
  log "building Ollama $1 as $reported (API server; llama-server from the llama.cpp build)"
  [[ -d $src ]] || go_module_copy "$1" "$src"
  rm -rf "$2.tmp" && mkdir -p "$2.tmp/bin" "$2.tmp/lib/ollama"
  go_build_ollama "$src" "$reported" "$2.tmp/bin/ollama"
  cp "$LLAMA_DIR"/bin/llama-{server,quantize} "$2.tmp/lib/ollama/"
  rm -rf "$2" && mv "$2.tmp" "$2"
  log "Ollama $reported ready: $2/bin/ollama"
}

# Debian's chromium and chromedriver: the browser tests never download a browser.
install_chromium() {
  [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] && return
  log "installing Debian's chromium and chromium-driver"
  local sudo=
  [[ $(id -u) == 0 ]] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >&2
}

build_open_webui() {
  [[ -x $WEBUI_DIR/bin/open-webui ]] && return
  log "installing Open WebUI $OPEN_WEBUI_VERSION into its own venv"
  rm -rf "$WEBUI_DIR.tmp"
  python3 -m venv "$WEBUI_DIR.tmp"
  "$WEBUI_DIR.tmp/bin/python" -m pip install --quiet --upgrade pip >&2
  "$WEBUI_DIR.tmp/bin/python" -m pip install --quiet "open-webui==$OPEN_WEBUI_VERSION" >&2
  # A venv's scripts name their interpreter by absolute path: rewrite them for the final folder.
  grep -rlI "$WEBUI_DIR.tmp" "$WEBUI_DIR.tmp/bin" | xargs sed -i "s|$WEBUI_DIR.tmp|$WEBUI_DIR|g"
  rm -rf "$WEBUI_DIR" && mv "$WEBUI_DIR.tmp" "$WEBUI_DIR"
  log "Open WebUI ready: $WEBUI_DIR/bin/open-webui"
}

build_playwright_core() {
  [[ -d $PLAYWRIGHT_DIR/node_modules/playwright-core ]] && return
  log "installing playwright-core $PLAYWRIGHT_CORE_VERSION (no browser download)"
  rm -rf "$PLAYWRIGHT_DIR.tmp" && mkdir -p "$PLAYWRIGHT_DIR.tmp"
  (cd "$PLAYWRIGHT_DIR.tmp" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
    npm install --silent --no-audit --no-fund "playwright-core@$PLAYWRIGHT_CORE_VERSION") >&2
  rm -rf "$PLAYWRIGHT_DIR" && mv "$PLAYWRIGHT_DIR.tmp" "$PLAYWRIGHT_DIR"
}

build_llama_cpp
build_ollama_old_line
build_ollama_server_line "$OLLAMA_NEW_LINE" "$NEW_DIR"
build_ollama_server_line "$OLLAMA_NEWEST_LINE" "$NEWEST_DIR"
build_ollama_server_line "$OLLAMA_NEWEST_LINE" "$UNTESTED_DIR" "$OLLAMA_UNTESTED_VERSION"
if [[ ${1:-} != --no-webui ]]; then
  install_chromium
  build_open_webui
  build_playwright_core
fi
write_env
rm -rf "$CACHE/scratch"
log "toolchain ready; source $ENV_FILE"
echo "$ENV_FILE"
