#!/usr/bin/env bash
# Set-up, then a short tour of what attnrag does so far.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
BIN=build/bin/attnrag
SHARED=../shared/data
run() { echo; echo "\$ attnrag $*"; "$BIN" "$@"; }

echo; echo "\$ attnrag info"; "$BIN" info | sed -n 1,5p
run generate --chat --prompt "What is the capital of France?" --max-tokens 48
run generate --chat --prompt "Write a haiku about reading long documents." --max-tokens 48 --temp 0.7 --seed 7
if [ -f "$SHARED/niah/paul_graham_essays/PaulGrahamEssays/worked.txt" ]; then
    run perplexity --file "$SHARED/niah/paul_graham_essays/PaulGrahamEssays/worked.txt" --ctx 1024 --chunks 1
fi
ESSAYS="$SHARED/niah/paul_graham_essays/PaulGrahamEssays"
if [ -d "$ESSAYS" ]; then
    DB=$(mktemp -d)/demo-corpus
    run ingest --db "$DB" "$ESSAYS/startuplessons.txt" "$ESSAYS/gba.txt" "$ESSAYS/vw.txt" "$ESSAYS/island.txt"
    run search --db "$DB" --k 3 "why do founders need to talk to users early"
    run search --db "$DB" --k 3 --mode bm25 "Lisp"
    run docs list --db "$DB"
fi
run bench --pp 256 --tg 64 --reps 1
