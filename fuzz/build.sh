#!/bin/sh
# Builds a libFuzzer target the way cargo-fuzz does (sancov + ASan), without cargo-fuzz.
# Usage: fuzz/build.sh [TARGET] [cargo args]   (TARGET: hostile_device (default), reactor, tcp_pdu)
bin=hostile_device
case "${1:-}" in "" | -*) ;; *) bin=$1; shift ;; esac
cd "$(dirname "$0")"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Zsanitizer=address" \
  nice -n 19 cargo +nightly build --release --target x86_64-unknown-linux-gnu --bin "$bin" "$@"
