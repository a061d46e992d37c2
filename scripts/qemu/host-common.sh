# Common functions of the QEMU guest harness (bash, sourced by scripts/qemu-test.sh
# and scripts/qemu-bench.sh).
# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables here are used by the other host-*.sh files

# Paths. QEMU_DIR is this directory; REPO the repository root.
QEMU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$QEMU_DIR/../.." && pwd)
CACHE=${NVME_ENGINE_QEMU_CACHE:-$REPO/scripts/.cache}
# The entry point, for log lines: qemu-test or qemu-bench.
HARNESS=$(basename "$0" .sh)

log() {
	printf '[%s] %s\n' "$HARNESS" "$*" >&2
}

die() {
	printf '[%s] ERROR: %s\n' "$HARNESS" "$*" >&2
	exit 1
}

# Seconds since the epoch with milliseconds, for timing steps.
now() {
	date +%s.%N
}

# Elapsed seconds since a now() value, one decimal.
since() {
	awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'
}
