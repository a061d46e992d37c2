#!/usr/bin/env bash
# fio with the nvme-fio ioengine on the built-in emulated controller, run as
# an unprivileged user (nobody, via setpriv, when started as root): CRC32C
# verify of random writes and of read/write mixes at iodepth 1 and 32 with
# several threads sharing one controller, time_based/norandommap reads, trim
# and fsync, the example job file, and the errors a user meets (thread=1
# missing, bs not a multiple of the LBA size, failing reads, verify that
# must fail on a controller that stores nothing, fault keys shared with
# nvme-perf's -r).
#
# Usage: scripts/tests/fio_engine_test.sh [path/to/libnvme_fio.so]
# Without an argument it builds the engine (cargo build -p nvme-fio).
# Needs fio and its headers: scripts/provision.sh --fio.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$1"; }
bad() {
	FAIL=$((FAIL + 1))
	printf 'FAIL %s: %s\n' "$1" "$2"
	[[ -f $WORK/out ]] && sed 's/^/    | /' "$WORK/out" | tail -n 25
}

command -v fio >/dev/null || { echo "fio is not installed: run scripts/provision.sh --fio (as root)" >&2; exit 1; }
SO=${1:-}
if [[ -z $SO ]]; then
	cargo build -q -p nvme-fio
	SO=${CARGO_TARGET_DIR:-$REPO/target}/debug/libnvme_fio.so
fi
[[ -f $SO ]] || { echo "no engine at $SO" >&2; exit 1; }

# A directory the unprivileged user owns, with its own copy of the engine.
WORK=$(mktemp -d /tmp/nvme-fio-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cp "$SO" "$WORK/libnvme_fio.so"
cp examples/fio/*.fio "$WORK/"
chmod 755 "$WORK" && chmod 644 "$WORK"/*
AS=()
if [[ $(id -u) == 0 ]]; then
	chown -R nobody "$WORK"
	AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups --reset-env --)
	echo "running fio as nobody"
fi
ENGINE=external:$WORK/libnvme_fio.so

# run NAME fio-args...: fio in $WORK as the test user; output in $WORK/out.
run() {
	local rc=0
	(cd "$WORK" && timeout 300 "${AS[@]}" fio --ioengine="$ENGINE" "$@") >"$WORK/out" 2>&1 || rc=$?
	return $rc
}

# expect_pass NAME ARGS...: exit 0, no job error, no verify complaint.
expect_pass() {
	local name=$1
	shift
	if ! run "$@"; then
		bad "$name" "fio failed"
	elif grep -qE 'err= *[1-9]|verify:|io_u error' "$WORK/out"; then
		bad "$name" "fio reported an error"
	elif ! grep -qE 'IOPS=' "$WORK/out"; then
		bad "$name" "no I/O was done"
	else
		ok "$name"
	fi
}

# expect_fail NAME NEEDLE ARGS...: fio fails and says NEEDLE.
expect_fail() {
	local name=$1 needle=$2
	shift 2
	if run "$@"; then
		bad "$name" "fio succeeded"
	elif ! grep -qF -- "$needle" "$WORK/out"; then
		bad "$name" "output lacks '$needle'"
	else
		ok "$name"
	fi
}

COMMON=(--thread --bs=4k --group_reporting=0)
EMU="trtype=emu size=64M idle=backoff"

for qd in 1 32; do
	expect_pass "randwrite+verify crc32c, 4 threads, iodepth $qd" "${COMMON[@]}" \
		--name=w --filename="$EMU" --rw=randwrite --size=4M --offset_increment=4M \
		--numjobs=4 --iodepth=$qd --verify=crc32c --verify_fatal=1
	expect_pass "randrw 70/30 + verify crc32c, 2 threads, inline controller, iodepth $qd" \
		"${COMMON[@]}" --name=m --filename="trtype=emu size=32M mode=inline" --rw=randrw \
		--rwmixread=70 --size=8M --offset_increment=8M --numjobs=2 --iodepth=$qd \
		--verify=crc32c --verify_fatal=1
done
expect_pass "randwrite+verify with bsrange 4k-64k on 4 KiB blocks" "${COMMON[@]}" \
	--name=r --filename="trtype=emu size=32M lba=4096 mode=inline" --rw=randwrite \
	--bsrange=4k-64k --size=8M --iodepth=8 --verify=crc32c --verify_fatal=1
expect_pass "time_based norandommap randread, 2 jobs" "${COMMON[@]}" \
	--filename="trtype=emu size=64M null=1 idle=backoff" --rw=randread --norandommap \
	--time_based --runtime=1 --iodepth=32 --name=a --name=b
expect_pass "randwrite with fsync every 8 writes, then randtrim" "${COMMON[@]}" \
	--filename="trtype=emu size=16M mode=inline" --size=2M --iodepth=4 \
	--name=s --rw=randwrite --fsync=8 --name=t --stonewall --rw=randtrim
expect_pass "one job on two namespaces of one controller, file-backed, + verify" "${COMMON[@]}" \
	--name=n2 --filename="trtype=emu size=16M namespaces=2 ns=1 file=$WORK/ns.img mode=inline:trtype=emu size=16M namespaces=2 ns=2 file=$WORK/ns.img mode=inline" \
	--rw=randwrite --size=8M --iodepth=8 --verify=crc32c --verify_fatal=1
expect_pass "examples/fio/emu-verify.fio" emu-verify.fio

expect_fail "missing thread=1 is refused with the fix" "add thread=1" \
	--name=p --filename="$EMU" --rw=randread --size=1M
expect_fail "bs not a multiple of the LBA size is refused" "not a multiple of the 4096-byte LBA size" \
	--thread --name=l --filename="trtype=emu size=16M lba=4096 mode=inline" --rw=randread \
	--bs=512 --size=1M
expect_fail "a filename that names no controller is refused" "valid filenames:" \
	--thread --name=f --filename="/dev/nvme0n1" --rw=randread --size=1M
expect_fail "failed reads reach fio with the NVMe status" "Unrecovered Read Error" \
	--thread --name=e --filename="trtype=emu size=16M fail=1 mode=inline" --rw=randread \
	--size=1M
expect_fail "an injected fault key of nvme-perf's -r (status) reaches fio with the NVMe status" \
	"Internal Error" --thread --name=s --filename="trtype=emu size=16M status=1 mode=inline" \
	--rw=randwrite --size=1M
expect_fail "a bad fault rate in a filename is refused with the key and the range" \
	"bad value '2' for key 'lose'" --thread --name=b --filename="trtype=emu size=16M lose=2" \
	--rw=randread --size=1M
expect_fail "verify catches a controller that stores nothing" "verify" \
	--thread --name=n --filename="trtype=emu size=16M null=1 mode=inline" --rw=randwrite \
	--size=1M --verify=crc32c --verify_fatal=1

echo "fio engine tests: $PASS passed, $FAIL failed"
[[ $FAIL == 0 ]]
