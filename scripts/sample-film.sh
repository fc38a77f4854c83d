#!/usr/bin/env bash
# Writes the demo's 15-second sample film to $1: five 3-second shots
# (testsrc2, a Mandelbrot zoom, SMPTE bars, the game of life's coloured
# cells on black, dark blue), so five shots. The tests read the same film.
set -euo pipefail
ffmpeg -loglevel error -y \
  -f lavfi -i "testsrc2=size=640x360:rate=25:duration=3" \
  -f lavfi -i "mandelbrot=size=640x360:rate=25" \
  -f lavfi -i "smptebars=size=640x360:rate=25:duration=3" \
  -f lavfi -i "life=size=640x360:rate=25:mold=10:ratio=0.2" \
  -f lavfi -i "color=c=darkblue:size=640x360:rate=25:duration=3" \
  -filter_complex "[1]trim=duration=3,setpts=PTS-STARTPTS[m];[3]trim=duration=3,setpts=PTS-STARTPTS[l];[0][m][2][l][4]concat=n=5:v=1:a=0" \
  -c:v libx264 -pix_fmt yuv420p "$1"
