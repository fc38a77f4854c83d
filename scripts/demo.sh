#!/usr/bin/env bash
# README's main command: on a fresh machine, install what is needed, build
# cinecut, generate a short sample film's frames with ffmpeg, enqueue them,
# and show the queue.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked --quiet
bin="$PWD/target/release/cinecut"

work="${CINECUT_DEMO_DIR:-$PWD/demo}"
mkdir -p "$work/sample-film"
export CINECUT_DB="$work/cinecut.db"

# Three 4-second shots of different test patterns, one frame per second.
if [ ! -f "$work/sample-film/frame_12.jpg" ]; then
  ffmpeg -loglevel error -y \
    -f lavfi -i "testsrc2=size=640x360:rate=25:duration=4" \
    -f lavfi -i "mandelbrot=size=640x360:rate=25:end_pts=4" \
    -f lavfi -i "smptebars=size=640x360:rate=25:duration=4" \
    -filter_complex "[1]trim=duration=4,setpts=PTS-STARTPTS[m];[0][m][2]concat=n=3:v=1:a=0,fps=1" \
    "$work/sample-film/frame_%d.jpg"
fi

"$bin" enqueue "$work/sample-film"
"$bin" status
echo
echo "database: $CINECUT_DB"
sqlite3 -header -column "$CINECUT_DB" \
  "SELECT f.title AS film, fr.frame_index, j.state, fr.path FROM frames fr JOIN films f ON f.id = fr.film_id JOIN jobs j ON j.frame_id = fr.id ORDER BY fr.frame_index LIMIT 5"
