#!/usr/bin/env bash
# Back-end benchmark: every ClassBench set with a trace and the bundled
# example, each compiled as parse-only, linear and tree, loaded, and timed
# per packet in the kernel (`cilc bench`, BPF_PROG_TEST_RUN). Needs root.
# Usage: scripts/bench.sh [--repeat N] [--sample N]   (extra flags go to cilc bench)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p cilc
cilc="${CARGO_TARGET_DIR:-target}/release/cilc"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== examples/three-tier.cpl"
"$cilc" bench examples/three-tier.cpl --packets examples/three-tier.packets "$@" || true
cb=../shared/bench/classbench
if [[ ! -d $cb ]]; then
  echo "NOT RUN: ClassBench sets ($cb) are absent"
  exit 0
fi
run() { # name filters trace [bench flags...]
  local name=$1 filters=$2 trace=$3
  shift 3
  echo "== $name"
  "$cilc" import classbench "$filters" > "$out/$name.cpl"
  "$cilc" bench "$out/$name.cpl" --trace "$trace" "$@" || true
}
for s in acl1 fw1 ipc1; do
  run "lyxocs ${s}_1k" $cb/lyxocs_ruleSet/${s}_1k $cb/lyxocs_ruleSet/${s}_1k_trace "$@"
done
for s in acl1 fw1 ipc1; do
  run "wustl ${s}_1K" $cb/wustl_hs1/${s}_1K $cb/wustl_hs1/${s}_1K_trace "$@"
done
for s in fw1 ipc1; do
  run "lyxocs ${s}_10k" $cb/lyxocs_ruleSet/${s}_10k $cb/lyxocs_ruleSet/${s}_10k_trace "$@"
done
