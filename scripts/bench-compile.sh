#!/usr/bin/env bash
# Compile time with the part cache (issue 8, incremental shipping): for each
# 100k policy, `cilc compile` without a cache, with an empty one (filling
# it), with it full (the same policy) and with one rule changed (a port
# number of one rule). Prints one markdown table; "identical" says whether
# the object compiled with the cache after the change is byte-identical to
# one compiled from scratch. The ClassBench rows need
# ../shared/bench/classbench.
# Usage: scripts/bench-compile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p cilc
cilc="${CARGO_TARGET_DIR:-target}/release/cilc"
cb=../shared/bench/classbench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

timed() { # label args... → "secs MB" of one compile, its stderr in $out/err
  /usr/bin/time -f '%e %M' -o "$out/time" "$cilc" compile "$@" 2>"$out/err" >/dev/null
  read -r secs kb < "$out/time"
  printf '%.1f s / %d MB' "$secs" $((kb / 1024))
}

row() { # name policy.cpl
  local name=$1 cpl=$2 changed="$out/changed.cpl"
  # One rule changed: the first rule with a single tcp port gets the next.
  python3 - "$cpl" "$changed" <<'EOF'
import re, sys
src, dst = sys.argv[1:]
lines = open(src).read().split("\n")
for i, l in enumerate(lines):
    m = re.search(r"\btcp (\d+)( |$)", l)
    if m and int(m.group(1)) < 65535 and re.match(r"\s*(allow|deny|accept|drop)\b", l):
        lines[i] = l[:m.start(1)] + str(int(m.group(1)) + 1) + l[m.end(1):]
        break
else:
    sys.exit("no rule with one tcp port")
open(dst, "w").write("\n".join(lines))
EOF
  rm -rf "$out/cache"
  local plain cold warm one parts same
  plain=$(timed "$cpl" -o "$out/plain.o")
  cold=$(timed "$cpl" -o "$out/cold.o" --cache "$out/cache")
  warm=$(timed "$cpl" -o "$out/warm.o" --cache "$out/cache")
  one=$(timed "$changed" -o "$out/one.o" --cache "$out/cache")
  parts=$(sed -n 's/^cache: \(.*\) diagram parts reused.*/\1/p' "$out/err")
  "$cilc" compile "$changed" -o "$out/scratch.o" 2>/dev/null
  same=no
  cmp -s "$out/one.o" "$out/scratch.o" && cmp -s "$out/plain.o" "$out/warm.o" && same=yes
  echo "| $name | $plain | $cold | $warm | $one | $parts | $same |"
}

echo "| policy | no cache | empty cache | full cache, same policy | one rule changed | parts reused | identical |"
echo "|---|---:|---:|---:|---:|---:|---|"
"$cilc" gen --rules 100000 --seed 7 > "$out/gen100k.cpl"
row "generated 100k" "$out/gen100k.cpl"
for set in acl1 fw1; do
  if [ -f "$cb/fighternan_100k/${set}_100k" ]; then
    "$cilc" import classbench "$cb/fighternan_100k/${set}_100k" > "$out/$set.cpl"
    row "fighternan ${set}_100k" "$out/$set.cpl"
  else
    echo "| fighternan ${set}_100k | not run: $cb is absent | | | | | |"
  fi
done
