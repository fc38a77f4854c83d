#!/usr/bin/env bash
# README's test command: installs what is missing (scripts/setup.sh), then
# runs everything CI runs: rustfmt, the structure rules, clippy, the sqlx
# offline-data check and the whole test suite (cargo nextest).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# shellcheck disable=SC1091
source "${CINECUT_CACHE:-$HOME/.cache/cinecut}/env.sh"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== structure rules (scripts/check_structure.py)"
python3 scripts/check_structure.py

echo "== cargo clippy --workspace --all-targets -- -D warnings"
SQLX_OFFLINE=true cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo sqlx prepare --check"
check_db="$(mktemp -d)/sqlx-check.db"
export DATABASE_URL="sqlite:$check_db"
cargo sqlx database create
cargo sqlx migrate run >/dev/null
cargo sqlx prepare --check -- --all-targets --locked
unset DATABASE_URL
rm -f "$check_db"*

echo "== tests"
# The stand-in libnvidia-ml.so.1 the NVML tests load (tests/fake_nvml).
cargo build --locked --quiet -p fake-nvml
SQLX_OFFLINE=true cargo nextest run --locked --profile ci "$@"
