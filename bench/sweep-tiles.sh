#!/usr/bin/env bash
# Tile-shape sweep on the GPU machine (one device call): `lacuna bench` for the
# mma.sync path and several wgmma tile shapes (BLOCK_QxBLOCK_KxWARPSxSTAGES),
# dense and sparse patterns, so the planner's defaults (compiler/codegen/src/plan.rs,
# `default_shape`) can be re-derived on a new card. Output: plain tables on stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/lib64
B="${LACUNA_BIN:-./.gpu/lacuna}"
nvidia-smi --query-gpu=name --format=csv,noheader
P="--ns ${NS:-8192,16384} --patterns ${PATTERNS:-causal,window1024,hash8,qkdrop80} --reps 5"
echo "== D64 sync"; $B bench $P --head-dims 64 --mma sync | tail -n +3
for t in default 128x64x8x3 64x64x4x3 64x128x4x3 64x64x4x4; do
  echo "== D64 wgmma $t"; a=""; [ $t = default ] || a="--tile $t"; $B bench $P --head-dims 64 --mma wgmma $a 2>&1 | tail -n +3
done
for t in default 128x128x8x2 128x64x8x2 64x64x4x2 64x128x4x2 128x64x8x3; do
  echo "== D128 wgmma $t"; a=""; [ $t = default ] || a="--tile $t"; $B bench $P --head-dims 128 --mma wgmma $a 2>&1 | tail -n +3
done
