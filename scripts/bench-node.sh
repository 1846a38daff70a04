#!/usr/bin/env bash
# Node benchmark (needs root): TCP throughput over a veth pair between two
# network namespaces with no program attached vs a 10k-rule policy attached
# at TC ingress + egress (conntrack on), then at XDP + TC egress, and the
# per-packet cost of conntrack's fast path vs a full policy lookup
# (`cilc bench --conntrack`).
# The 10k-rule policy is ClassBench lyxocs fw1_10k put on the receiving
# endpoint; without ../shared it is a generated 10,000-rule policy.
# Usage: scripts/bench-node.sh [SECONDS per run, default 5] [RUNS, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
runs=${2:-3}
cargo build --release --locked -p cilc -p runtime-loader --example tcp_pump
bin=${CARGO_TARGET_DIR:-target}/release
cilc=$bin/cilc
pump=$bin/examples/tcp_pump
tag=bn$$
a=cilc-$tag-a b=cilc-$tag-b va=${tag}a vb=${tag}b
out=$(mktemp -d)
cleanup() {
  "$cilc" unload --name "$tag" --run-dir "$out/run" >/dev/null 2>&1 || true
  ip netns del "$a" 2>/dev/null || true
  ip netns del "$b" 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
ip netns add "$a"; ip netns add "$b"
ip link add "$va" type veth peer name "$vb"
ip link set "$va" netns "$a"; ip link set "$vb" netns "$b"
ip -n "$a" addr add 10.77.0.1/24 dev "$va"; ip -n "$b" addr add 10.77.0.2/24 dev "$vb"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set "$va" up; ip -n "$b" link set "$vb" up

fw=../shared/bench/classbench/lyxocs_ruleSet/fw1_10k
{
  echo "select server = app=server"
  if [[ -f $fw ]]; then
    "$cilc" import classbench "$fw" | sed 's/^chain classbench on host ingress/chain classbench on server ingress/'
  else
    echo "# ../shared absent: generated rules" >&2
    "$cilc" gen --rules 10000
    echo "policy srv on server { ingress { allow from 10.77.0.0/24 tcp 5201 } }"
  fi
} > "$out/p.cpl"
"$cilc" compile "$out/p.cpl" -o "$out/p.o"
rules=$(grep -c ' as r[0-9]*$\|^    allow\|^    deny' "$out/p.cpl" || true)

ip netns exec "$b" "$pump" serve 10.77.0.2:5201 & server=$!
trap 'kill $server 2>/dev/null; cleanup' EXIT
sleep 0.5
measure() {
  local best=0 r
  for _ in $(seq "$runs"); do
    r=$(ip netns exec "$a" "$pump" send 10.77.0.2:5201 "$secs")
    best=$(echo "$r $best" | awk '{print ($1 > $2) ? $1 : $2}')
    echo "  run: $r Gbit/s" >&2
  done
  echo "$best"
}
echo "== TCP throughput, no program"
base=$(measure)
"$cilc" load "$out/p.o" --name "$tag" --run-dir "$out/run" --identity 10.77.0.2=app=server >/dev/null
node() { "$cilc" "$@" --name "$tag" --run-dir "$out/run"; }
node attach "$vb" --hook tc-ingress --netns "$b"
node attach "$vb" --hook tc-egress --netns "$b"
echo "== TCP throughput, policy attached at TC ingress + egress (conntrack on)"
tc=$(measure)
node stats | sed -n 1,8p
node detach "$vb" --hook tc-ingress --netns "$b"
node attach "$vb" --hook xdp --netns "$b"
echo "== TCP throughput, policy attached at XDP + TC egress (conntrack on)"
xdp=$(measure)
# XDP on veth costs by itself (no GRO/TSO: every segment is a packet): the
# same hooks with a parse-only artifact (swapped in by replace) are its floor.
"$cilc" compile --strategy parse-only "$out/p.cpl" -o "$out/floor.o" >/dev/null
node replace "$out/floor.o"
echo "== TCP throughput, parse-only artifact at XDP + TC egress (the XDP floor)"
floor=$(measure)
echo
ratio() { echo "$1 $2" | awk '{printf "%.3f", $1/$2}'; }
echo "throughput (best of $runs × ${secs}s): no program $base Gbit/s;" \
  "TC $tc Gbit/s (ratio $(ratio "$tc" "$base"));" \
  "XDP $xdp Gbit/s (ratio $(ratio "$xdp" "$base"), $(ratio "$xdp" "$floor") of the parse-only XDP floor $floor Gbit/s)"
echo
echo "== conntrack fast path vs policy lookup (BPF_PROG_TEST_RUN)"
cat > "$out/ct.packets" <<'PK'
ingress local app=server peer world 10.77.0.1 -> 10.77.0.2 tcp 40000 5201 flags syn
ingress local app=server peer world 10.77.0.1 -> 10.77.0.2 udp 40000 53
PK
"$cilc" bench "$out/p.cpl" --packets "$out/ct.packets" --strategy tree --conntrack --repeat 100000
