#!/usr/bin/env bash
# attnrag bench and llama.cpp's llama-bench on the same GGUF, same threads, alternating pass by
# pass (the machine's load drifts; alternating spreads it over both), then the median of the
# passes for each engine.
#
# Usage: bench/side_by_side_llamacpp.sh LLAMA_BENCH MODEL.gguf [passes=3] [threads=2]
#   LLAMA_BENCH: a llama-bench binary you built (llama.cpp is not part of this repository).
# Prints one JSON line per pass and engine, then a summary table (tokens/s, pp512 and tg128).
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_BENCH=${1:?usage: $0 LLAMA_BENCH MODEL.gguf [passes] [threads]}
MODEL=${2:?usage: $0 LLAMA_BENCH MODEL.gguf [passes] [threads]}
PASSES=${3:-3}
THREADS=${4:-2}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for pass in $(seq "$PASSES"); do
    build/bin/attnrag bench --model "$MODEL" --pp 512 --tg 128 --reps 3 --threads "$THREADS" --json |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"engine":"attnrag","pp":d["prefill_tok_s"],"tg":d["decode_tok_s"]}))' |
        tee -a "$OUT"
    "$LLAMA_BENCH" -m "$MODEL" -p 512 -n 128 -r 3 -t "$THREADS" -o json 2>/dev/null |
        python3 -c 'import json,sys; d=json.load(sys.stdin); pp=[r["avg_ts"] for r in d if r["n_prompt"]>0]; tg=[r["avg_ts"] for r in d if r["n_gen"]>0]; print(json.dumps({"engine":"llama.cpp","pp":pp[0],"tg":tg[0]}))' |
        tee -a "$OUT"
done
python3 - "$OUT" "$MODEL" "$THREADS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {e: {k: statistics.median(r[k] for r in rows if r["engine"] == e) for k in ("pp", "tg")}
       for e in ("attnrag", "llama.cpp")}
print(f"\n{sys.argv[2]}, {sys.argv[3]} threads, median of {len(rows) // 2} passes (tokens/s)")
print(f"{'':10} {'pp512':>8} {'tg128':>8}")
for e, m in med.items():
    print(f"{e:10} {m['pp']:8.1f} {m['tg']:8.1f}")
print(f"{'ratio':10} {med['attnrag']['pp'] / med['llama.cpp']['pp']:7.2f}x "
      f"{med['attnrag']['tg'] / med['llama.cpp']['tg']:7.2f}x")
PY
