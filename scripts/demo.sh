#!/usr/bin/env bash
# README's main command: on a fresh machine, install what is needed
# (scripts/setup.sh: ffmpeg, sqlite3, llama-server), build cinecut, write the
# tiny test model, generate a short sample film with ffmpeg, and run
# `cinecut run` on it (enqueue one job per keyframe, describe each with a
# worker that runs llama-server itself), then print the descriptions from SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# shellcheck disable=SC1091
source "${CINECUT_CACHE:-$HOME/.cache/cinecut}/env.sh"
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/cinecut"

work="${CINECUT_DEMO_DIR:-$PWD/demo}"
mkdir -p "$work"
export CINECUT_DB="$work/cinecut.db"

# The tiny random-weight model the tests use (a real model: see README).
"$CINECUT_PYTHON" tests/gen_tiny_model.py "$work/model"

# A 15-second sample film of five 3-second shots (scripts/sample-film.sh).
film="$work/sample film.mp4"
if [ ! -f "$film" ]; then
  bash scripts/sample-film.sh "$film"
fi

# Enqueue the film's keyframes and describe them all, in one command.
"$bin" run "$film" --model "$work/model/tiny-text.gguf" --mmproj "$work/model/tiny-mmproj.gguf" --parallel 2
echo
echo "database: $CINECUT_DB"
sqlite3 -header -column "$CINECUT_DB" \
  "SELECT film, frame_index, pts_ms, visual_content, mood, action, setting FROM frame_descriptions ORDER BY film, frame_index"
