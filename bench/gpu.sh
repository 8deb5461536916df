#!/usr/bin/env bash
# Everything Lacuna checks and times on a GPU, in one go (one device call):
#   bench/gpu.sh [selftest] [sanitize] [run] [bench] [peers] [decode] [methods] [methods-run] [methods-peers] [profile]
#   (default: all but profile)
#   decode:        `lacuna bench --q-len 1` (causal-decode, moa-decode; split-KV) and bench/peers_decode.py
#   methods:       `lacuna bench-methods` (the seed methods end to end; METHODS_ARGS, e.g. "--ns 8192,16384")
#   methods-run:   `lacuna run hash-bucket / qk-drop` pipelines from raw Q/K/V against a float64 reference
#   methods-peers: bench/peers_methods.py (SDPA flash/cuDNN, FlexAttention hash and QK-drop; METHODS_PEERS_ARGS)
#   profile:       ncu source counters of one forward launch (PROFILE_PATTERN, default hash32; PROFILE_D, 64;
#                  PROFILE_N, 16384) into $OUT/profile-source.csv and profile-details.txt; then, here:
#                  python3 bench/ncu_regions.py profile-source.csv
#   then: python3 bench/report_methods.py $OUT/methods.json $OUT/peers_methods.json plot.png > tables.md
# Expects the release binary at .gpu/lacuna (built on the CPU machine:
# `cargo build --release -p lacuna-cli && strip -o .gpu/lacuna target/release/lacuna`),
# or compressed at .gpu/lacuna.xz (`xz -3 -c .gpu/lacuna > .gpu/lacuna.xz`: ~13 of
# ~47 MB, for when a second binary must travel too and the 64 MiB carry limit
# bites), and writes logs and JSON under $OUT (or ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"; mkdir -p "$out"
bin="${LACUNA_BIN:-./.gpu/lacuna}"
if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
  xz -d -c "$bin.xz" > "$bin" && chmod +x "$bin"
fi
steps="${*:-selftest sanitize run bench peers decode methods methods-run methods-peers}"
export LACUNA_CACHE="$out/cache"
# NVRTC (the seed methods' helper ops are compiled at first use).
export LD_LIBRARY_PATH="/usr/local/cuda-13.0/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
for step in $steps; do
  case "$step" in
    selftest)
      $bin selftest --json "$out/selftest.json" 2>&1 | tee "$out/selftest.log" | tail -n 8 || status=1 ;;
    sanitize)
      for tool in memcheck racecheck; do
        timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 $bin selftest --quick > "$out/sanitize-$tool.log" 2>&1
        rc=$?; echo "compute-sanitizer $tool: exit $rc ($(grep -c 'ok  ' "$out/sanitize-$tool.log") cases ok)"; tail -n 3 "$out/sanitize-$tool.log"
        [ $rc = 0 ] || status=1
      done ;;
    bench)
      $bin bench ${BENCH_ARGS:-} --json "$out/bench.json" 2>&1 | tee "$out/bench.log" ;;
    decode)
      $bin bench --q-len 1 ${DECODE_ARGS:-} --json "$out/decode.json" 2>&1 | tee "$out/decode.log"
      PYTHONUNBUFFERED=1 python3 bench/peers_decode.py --out "$out/peers_decode.json" 2>&1 | grep -v Warning | tee "$out/peers_decode.log" ;;
    run)
      python3 bench/check_run.py $bin "$out/run-check" 2>&1 | tee "$out/run-check.log" || status=1 ;;
    peers)
      PYTHONUNBUFFERED=1 python3 bench/peers.py ${PEERS_ARGS:-} --out "$out/peers.json" 2>&1 | grep -v Warning | tee "$out/peers.log" ;;
    methods)
      $bin bench-methods ${METHODS_ARGS:-} --json "$out/methods.json" 2>&1 | tee "$out/methods.log"
      [ "${PIPESTATUS[0]}" = 0 ] || status=1 ;;
    methods-run)
      PYTHONUNBUFFERED=1 python3 bench/peers_methods.py --check-run $bin "$out/methods-run" 2>&1 | grep -v Warning | tee "$out/methods-run.log"
      [ "${PIPESTATUS[0]}" = 0 ] || status=1 ;;
    methods-peers)
      PYTHONUNBUFFERED=1 python3 bench/peers_methods.py ${METHODS_PEERS_ARGS:-} --out "$out/peers_methods.json" 2>&1 | grep -v Warning | tee "$out/peers_methods.log" ;;
    profile)
      # ncu locks the SM clock at base: its durations are not the bench's.
      rep=/tmp/lacuna-profile
      timeout 300 ncu --section SourceCounters --section WarpStateStats --section Occupancy --section SpeedOfLight \
        -k regex:fwd_ --launch-skip 2 --launch-count 1 -f -o $rep \
        $bin bench --ns "${PROFILE_N:-16384}" --head-dims "${PROFILE_D:-64}" --patterns "${PROFILE_PATTERN:-hash32}" --reps 2 > "$out/profile.log" 2>&1 || status=1
      ncu -i $rep.ncu-rep --page source --csv --print-source sass > "$out/profile-source.csv" 2>/dev/null || status=1
      ncu -i $rep.ncu-rep --page details > "$out/profile-details.txt" 2>/dev/null
      echo "profile: $(wc -l < "$out/profile-source.csv") SASS rows; python3 bench/ncu_regions.py $out/profile-source.csv" ;;
    *)
      echo "unknown step '$step' (selftest sanitize run bench peers methods methods-run methods-peers profile)"; status=1 ;;
  esac
done
exit $status
