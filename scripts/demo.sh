#!/usr/bin/env bash
# cilc's main job on a bundled example: install, build, check, compile to a
# BPF object, and judge a few packets with the loaded object in the kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p cilc
cilc="${CARGO_TARGET_DIR:-target}/release/cilc"
out="${TMPDIR:-/tmp}/cilc-demo"
mkdir -p "$out"
echo "== cilc check examples/*.cpl"
"$cilc" check --deny-warnings examples/*.cpl
echo "== cilc fmt --check examples/*.cpl"
"$cilc" fmt --check examples/*.cpl
echo "== cilc compile examples/three-tier.cpl"
"$cilc" compile examples/three-tier.cpl -o "$out/three-tier.bpf.o"
echo "== cilc inspect (the start of it)"
"$cilc" inspect "$out/three-tier.bpf.o" > "$out/inspect.txt"
head -20 "$out/inspect.txt"
echo "== cilc run: packets judged by the loaded object (BPF_PROG_TEST_RUN)"
if [[ $(id -u) -ne 0 ]]; then
  echo "(loading BPF programs needs root: run as root to see the kernel's verdicts)"
  exit 0
fi
"$cilc" run "$out/three-tier.bpf.o" \
  --packet "ingress local app=web,tier=frontend@shop peer world 198.51.100.7 -> 10.0.0.5 tcp 40000 443" \
  --packet "ingress local app=postgres,role=primary@shop peer app=web,tier=frontend@shop 10.0.0.1 -> 10.0.0.3 tcp 40000 5432" \
  --packet "ingress local app=postgres,role=primary@shop peer app=api,tier=backend@shop 10.0.0.2 -> 10.0.0.3 tcp 40000 5432" \
  --packet "ingress local app=postgres,role=primary@shop peer world 203.0.113.9 -> 10.0.0.3 tcp 40000 5432"
