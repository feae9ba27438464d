#!/usr/bin/env bash
# Micro-benchmark of framing (line and CRI) in CPU ns per line.
# usage: scripts/bench_framing.sh [LINES]   (default 2000000)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${TMPDIR:-/tmp}/lugger-bench-framing
cc -std=gnu11 -D_GNU_SOURCE -O2 -g -Isrc tests/bench/bench_framing.c \
  src/framing/lg_framing.c src/pipeline/lg_batch.c \
  src/pipeline/lg_batch_fields.c src/pipeline/lg_meta.c src/core/lg_time.c src/core/lg_buf.c src/core/lg_json.c \
  $(pkg-config --cflags --libs libcjson) -o "$out"
"$out" "$@"
