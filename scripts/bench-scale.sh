#!/usr/bin/env bash
# The benchmark suite (issue 8): ClassBench sets from 1k to 100k rules and
# a generated 100,000-rule policy (two kinds of traffic), compiled with the default strategy (auto)
# and timed in the kernel against the parse-only floor and, up to 10k
# rules, the linear first-match build (beyond, linear is not run: its code
# is past the verifier's 1M-instruction budget). Prints one markdown table;
# "wrong" counts verdicts that differ from the reference evaluator, over
# every build of the row; "nodes/packet" is the table's walk, counted in
# user space (codegen/walk.rs). Needs root and ../shared/bench/classbench (the 100k sets
# have no trace: the 10k traces of the same family give their packets).
# Usage: scripts/bench-scale.sh [--sample N] [--repeat N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p cilc
cilc="${CARGO_TARGET_DIR:-target}/release/cilc"
cb=../shared/bench/classbench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sample=200 repeat=20000
while [ $# -gt 0 ]; do
  case "$1" in
    --sample) sample=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done

row() { # name policy.cpl packets-flag packets-file [linear]
  local name=$1 cpl=$2 with=parse-only
  [ "${5:-}" = linear ] && with=parse-only,linear
  /usr/bin/time -f '%e %M' -o "$out/time" "$cilc" compile "$cpl" -o "$out/p.o" 2>/dev/null
  read -r secs kb < "$out/time"
  local chosen nodes
  chosen=$("$cilc" inspect "$out/p.o" | awk '/^strategy:/ {print $2}')
  nodes=$("$cilc" inspect "$out/p.o" | awk '/^table:/ {print $2}')
  "$cilc" bench "$cpl" "$3" "$4" --strategy "$with,$chosen" \
    --sample "$sample" --repeat "$repeat" --format json > "$out/b.json" 2>/dev/null || true
  python3 - "$name" "$secs" "$kb" "$chosen" "${nodes:--}" "$out/b.json" <<'EOF'
import json, sys
name, secs, kb, chosen, nodes, path = sys.argv[1:]
r = json.load(open(path))
rows = {x["strategy"]: x for x in r["rows"]}
floor, lin, s = rows.get("parse-only"), rows.get("linear"), rows.get(chosen)
ok = lambda x: x and not x.get("failed")
def f(x, k, fmt):
    return fmt.format(x[k]) if ok(x) else "-"
ratio = speedup = "-"
if ok(floor) and ok(s) and floor["ns_per_packet"]:
    ratio = "{:.2f}".format(s["ns_per_packet"] / floor["ns_per_packet"])
if ok(lin) and ok(s) and s["ns_per_packet"]:
    speedup = "{:.0f}×".format(lin["ns_per_packet"] / s["ns_per_packet"])
lin_ns = f(lin, 'ns_per_packet', '{:.0f}') if lin else "not run"
if lin and lin.get("failed"):
    lin_ns = "does not load"
wrong = sum(x["wrong"] for x in rows.values() if ok(x))
print(f"| {name} | {r['rules']:,} | {chosen} | {float(secs):.1f} s | {int(kb)//1024} MB | {nodes} | "
      f"{f(s, 'load_s', '{:.2f} s')} | {f(s, 'instructions', '{:,}')} | {f(floor, 'ns_per_packet', '{:.0f}')} | "
      f"{lin_ns} | {f(s, 'ns_per_packet', '{:.0f}')} | {ratio} | {speedup} | {wrong} | "
      f"{'{:.2f}'.format(s['nodes_per_packet']) if ok(s) and s.get('nodes_per_packet') else '-'} |")
EOF
}

echo "| set | rules | strategy (auto) | compile | peak RSS | table nodes | load | instructions | parse-only ns | linear ns | ns/packet | ÷ parse-only | linear ÷ | wrong | nodes/packet |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for set in acl1_1k fw1_1k ipc1_1k fw1_10k ipc1_10k; do
  "$cilc" import classbench "$cb/lyxocs_ruleSet/$set" > "$out/$set.cpl"
  row "lyxocs $set" "$out/$set.cpl" --trace "$cb/lyxocs_ruleSet/${set}_trace" linear
done
"$cilc" import classbench "$cb/lyxocs_ruleSet/acl1_10k" > "$out/acl1_10k.cpl"
row "lyxocs acl1_10k" "$out/acl1_10k.cpl" --trace "$cb/lyxocs_ruleSet/acl1_1k_trace" linear
for set in acl1 fw1; do
  "$cilc" import classbench "$cb/fighternan_100k/${set}_100k" > "$out/${set}_100k.cpl"
  trace=$cb/lyxocs_ruleSet/${set}_10k_trace
  [ -f "$trace" ] || trace=$cb/lyxocs_ruleSet/${set}_1k_trace
  row "fighternan ${set}_100k" "$out/${set}_100k.cpl" --trace "$trace"
done
"$cilc" gen --rules 100000 --seed 7 > "$out/gen100k.cpl"
# Two kinds of traffic: the three-tier example's pods, which none of the
# generated policies selects, and the generator's own packets (the host
# and pods its policies select).
row "generated 100k, unselected pods" "$out/gen100k.cpl" --packets examples/three-tier.packets
"$cilc" gen --packets 200 --rules 100000 --seed 7 > "$out/gen100k.packets"
row "generated 100k, selected pods + host" "$out/gen100k.cpl" --packets "$out/gen100k.packets"
