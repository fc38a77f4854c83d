#!/usr/bin/env bash
# README's test command: installs what is missing (scripts/setup.sh --tests), then
# runs everything CI runs: rustfmt, the structure rules, clippy, the sqlx
# offline-data checks (SQLite and PostgreSQL) and the whole test suite
# (cargo nextest), the PostgreSQL queue's tests on a throwaway cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --tests
# shellcheck disable=SC1091
source "${CINECUT_CACHE:-$HOME/.cache/cinecut}/env.sh"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== structure rules (scripts/check_structure.py)"
python3 scripts/check_structure.py

echo "== cargo clippy --workspace --all-targets -- -D warnings"
SQLX_OFFLINE=true cargo clippy --workspace --all-targets --locked -- -D warnings

# A throwaway PostgreSQL cluster for the PostgreSQL queue: its offline
# query data is checked against it, and its tests run on it (each test in
# a database of its own). Stopped and removed however this script ends.
pg_dir="$(mktemp -d -t cinecut-pg-XXXXXX)"
stop_pg() { bash scripts/pg-cluster.sh stop "$pg_dir" >/dev/null 2>&1 || true; rm -rf "$pg_dir"; }
trap stop_pg EXIT
echo "== throwaway PostgreSQL cluster in $pg_dir"
pg_admin="$(bash scripts/pg-cluster.sh start "$pg_dir")"
export CINECUT_TEST_PG="$pg_admin"

# Each crate names its own URL variable (sqlx.toml, postgres/sqlx.toml).
echo "== cargo sqlx prepare --check (SQLite: cinecut)"
check_db="$(mktemp -d)/sqlx-check.db"
export CINECUT_SQLITE_DATABASE_URL="sqlite:$check_db"
cargo sqlx database create
cargo sqlx migrate run >/dev/null
cargo sqlx prepare --check -- --all-targets --locked
unset CINECUT_SQLITE_DATABASE_URL
rm -f "$check_db"*

echo "== cargo sqlx prepare --check (PostgreSQL: cinecut-postgres)"
export CINECUT_PG_DATABASE_URL="${pg_admin%/*}/sqlx_check"
(cd postgres && cargo sqlx database create && cargo sqlx migrate run >/dev/null \
  && cargo sqlx prepare --check -- --all-targets --locked)
unset CINECUT_PG_DATABASE_URL

echo "== tests"
# The stand-in libnvidia-ml.so.1 the NVML tests load (tests/fake_nvml).
cargo build --locked --quiet -p fake-nvml
SQLX_OFFLINE=true cargo nextest run --workspace --locked --profile ci "$@"
