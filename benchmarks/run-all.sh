#!/usr/bin/env bash
# Runs the four BENCHMARKS.md scenarios as ladders against mediarelay and
# rtpengine, one after the other (never in parallel: they share the cores).
# Usage: benchmarks/run-all.sh [OUTDIR] [MEDIARELAY_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-results}"
bin="${2:-}"
mkdir -p "$out"
if [ -z "$bin" ]; then
	bin="$out/mediarelay"
	go build -o "$bin" ./cmd/mediarelay
fi
run() {
	local name="$1"; shift
	echo "== $name" >&2
	"$bin" bench --spawn --relay-bin "$bin" --against rtpengine --hold 20s --rate 40 \
		--json "$out/$name.json" --plot "$out/$name.svg" "$@" | tee "$out/$name.txt"
}
run pcmu --scenario pcmu --ladder 50,100,200,400,600,800
run opus --scenario opus --ladder 50,100,200,400,600,800
run transcode --scenario transcode --ladder 25,50,100,150,200,300,400
run srtp --scenario srtp --ladder 50,100,200,400,600,800
