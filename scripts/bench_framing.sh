#!/usr/bin/env bash
# Micro-benchmark of framing (line, CRI, auto and Docker) in CPU ns per line.
# usage: scripts/bench_framing.sh [LINES]   (default 2000000)
# tests/bench/bench_framing.c is a target of the release tree (build/),
# linked with the same core objects as lugger, so it builds as the tree does.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build release
exec build/bench_framing "$@"
