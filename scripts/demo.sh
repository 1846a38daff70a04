#!/usr/bin/env bash
# cilc's main job on a bundled example: install, build, check, compile to a
# BPF object, judge a few packets with the loaded object in the kernel, then
# install it on a veth pair between two network namespaces (made here and
# removed at exit) and send real traffic through it.
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

echo "== on a node: load, attach, real traffic, stats (two network namespaces)"
cargo build --release --locked -p runtime-loader --bin cilc-node --example tcp_pump
node="${CARGO_TARGET_DIR:-target}/release/cilc-node"
pump="${CARGO_TARGET_DIR:-target}/release/examples/tcp_pump"
tag=demo$$
server=""
cleanup() {
  "$node" unload --name "$tag" --run-dir "$out/run" >/dev/null 2>&1 || true
  ip netns del "$tag-world" 2>/dev/null || true
  ip netns del "$tag-web" 2>/dev/null || true
  [[ -n ${server:-} ]] && kill $server 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$tag-world"; ip netns add "$tag-web"
ip link add "${tag}w" type veth peer name "${tag}p"
ip link set "${tag}w" netns "$tag-world"; ip link set "${tag}p" netns "$tag-web"
ip -n "$tag-world" addr add 198.51.100.7/16 dev "${tag}w"
ip -n "$tag-web" addr add 198.51.0.5/16 dev "${tag}p"
for ns in "$tag-world" "$tag-web"; do ip -n "$ns" link set lo up; done
ip -n "$tag-world" link set "${tag}w" up; ip -n "$tag-web" link set "${tag}p" up
# The web pod of examples/three-tier.cpl takes 80 and 443 from the world.
"$node" load "$out/three-tier.bpf.o" --name "$tag" --run-dir "$out/run" \
  --identity 198.51.0.5=app=web,tier=frontend@shop
"$node" attach "${tag}p" --hook tc-ingress --netns "$tag-web" --name "$tag" --run-dir "$out/run"
"$node" attach "${tag}p" --hook tc-egress --netns "$tag-web" --name "$tag" --run-dir "$out/run"
for port in 443 8080; do
  ip netns exec "$tag-web" "$pump" serve "198.51.0.5:$port" & server="$server $!"
done
sleep 0.3
for port in 443 8080; do
  if ip netns exec "$tag-world" timeout 2 bash -c "echo hi > /dev/tcp/198.51.0.5/$port" 2>/dev/null; then
    echo "world -> web:$port connected"
  else
    echo "world -> web:$port dropped (no rule allows it)"
  fi
done
"$node" status --name "$tag" --run-dir "$out/run"
"$node" stats --name "$tag" --run-dir "$out/run" | sed -n '1,12p'
