#!/usr/bin/env bash
# cilc's main job on the bundled examples: install, build, check, format.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p cilc
cilc="${CARGO_TARGET_DIR:-target}/release/cilc"
echo "== cilc check examples/*.cpl"
"$cilc" check --deny-warnings examples/*.cpl
echo "== cilc fmt --check examples/*.cpl"
"$cilc" fmt --check examples/*.cpl
echo "== cilc fmt examples/three-tier.cpl"
"$cilc" fmt examples/three-tier.cpl
