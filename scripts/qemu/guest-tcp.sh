#!/bin/sh
# Guest script of `scripts/qemu-test.sh --mode tcp`: the Linux kernel's NVMe
# over Fabrics target (nvmet-tcp, configured by nvmf-target.sh on loopback)
# and the engine's and the reactor's NVMe/TCP tests, nvme-perf and the
# examples against it. POSIX sh for busybox.
#
# Exits non-zero if the target cannot be set up, a test fails, or teardown
# leaves something behind.

# shellcheck source-path=SCRIPTDIR source=guest-lib.sh
. /payload/lib.sh

echo "guest-tcp: kernel $(uname -r), $(nproc) CPU(s)"
ip link set lo up || { echo "guest-tcp: cannot bring up the loopback interface" >&2; exit 1; }

step "nvmf-target.sh setup"
if ! bash /payload/bin/nvmf-target.sh setup; then
	dmesg | tail -n 30
	exit 1
fi
bash /payload/bin/nvmf-target.sh status

status=0
found=0
for t in /payload/tests/*; do
	[ -x "$t" ] || continue
	found=1
	step "$(basename "$t") against nvmet-tcp at 127.0.0.1:4420"
	if NVME_ENGINE_TEST_TCP=127.0.0.1:4420 \
		NVME_ENGINE_TEST_TCP_NQN=nqn.2026-12.io.nvme-engine:target \
		RUST_TEST_THREADS=1 "$t" --nocapture; then
		echo "--- PASS: $(basename "$t")"
	else
		rc=$?
		echo "--- FAIL: $(basename "$t") (exit status $rc)"
		dmesg | grep -i nvmet | tail -n 20
		status=1
	fi
done
if [ "$found" = 0 ]; then
	echo "guest-tcp: no test executables in /payload/tests" >&2
	exit 1
fi

PERF=/payload/bin/nvme-perf
NQN=nqn.2026-12.io.nvme-engine:target
TRID="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420"
if [ -x "$PERF" ]; then
	step "nvme-perf: the portal's discovery log"
	out=$("$PERF" -r "$TRID subnqn:nqn.2014-08.org.nvmexpress.discovery" 2>&1)
	rc=$?
	echo "$out"
	if [ "$rc" != 0 ] || ! echo "$out" | grep -q "subnqn:$NQN"; then
		echo "--- FAIL: nvme-perf discovery (exit status $rc, or $NQN not listed)"
		status=1
	else
		echo "--- PASS: nvme-perf discovery"
	fi
	# nsid 2 is file-backed (null_blk returns no data, so --verify needs it).
	for args in "-q 16 -o 4096 -w randrw -M 50" "-q 4 -o 131072 -w randwrite"; do
		step "nvme-perf --verify over NVMe/TCP: $args (ns 2)"
		# shellcheck disable=SC2086 # $args is a list of options
		if "$PERF" -r "$TRID subnqn:$NQN ns:2" $args --verify -t 3 -c 0x1; then
			echo "--- PASS: nvme-perf --verify $args"
		else
			echo "--- FAIL: nvme-perf --verify $args (exit status $?)"
			status=1
		fi
	done
	step "nvme-perf over NVMe/TCP with header and data digests (ns 1)"
	if "$PERF" -r "$TRID subnqn:$NQN ns:1 hdgst:1 ddgst:1" -q 8 -o 4096 -w randread -t 2 -c 0x1; then
		echo "--- PASS: nvme-perf with digests"
	else
		echo "--- FAIL: nvme-perf with digests (exit status $?)"
		status=1
	fi
	# Two transport IDs in one run: the same subsystem twice, one namespace
	# each (an association each), both workers driving both.
	step "nvme-perf over two NVMe/TCP transport IDs (ns 1 and ns 2)"
	out=$("$PERF" -r "$TRID subnqn:$NQN ns:1" -r "$TRID subnqn:$NQN ns:2" \
		-q 8 -o 4096 -w randrw -M 50 -t 2 -c 0x3 2>&1)
	rc=$?
	echo "$out"
	if [ "$rc" = 0 ] && [ "$(echo "$out" | grep -c "Attached to NVMe/TCP controller $NQN")" = 2 ] &&
		echo "$out" | grep -q "ns:1" && echo "$out" | grep -q "ns:2"; then
		echo "--- PASS: nvme-perf with two TCP IDs"
	else
		echo "--- FAIL: nvme-perf with two TCP IDs (exit status $rc, or not both attached and reported)"
		status=1
	fi
else
	echo "--- FAIL: $PERF is missing from the payload"
	status=1
fi

# The examples over NVMe/TCP (namespace 2, file-backed: written, then read
# back): hello_world and journal through a reactor with its own connection,
# identify with the association's parameters.
for ex in "hello_world" "identify" "journal --records 100 --depth 4"; do
	name=${ex%% *}
	step "$ex over NVMe/TCP"
	if [ ! -x "/payload/bin/$name" ]; then
		echo "--- FAIL: /payload/bin/$name is missing from the payload"
		status=1
		continue
	fi
	# shellcheck disable=SC2086 # $ex is the program and its options
	out=$(/payload/bin/$ex -r "$TRID subnqn:$NQN ns:2" 2>&1)
	rc=$?
	echo "$out"
	case $name in
	hello_world) want="compare: identical" ;;
	identify) want="MAXH2CDATA" ;;
	journal) want="read back 100 records: 100 intact, 0 damaged" ;;
	esac
	if [ "$rc" = 0 ] && echo "$out" | grep -q "$want"; then
		echo "--- PASS: $name over NVMe/TCP"
	else
		echo "--- FAIL: $name over NVMe/TCP (exit status $rc, or no '$want')"
		status=1
	fi
done

step "nvmf-target.sh teardown"
bash /payload/bin/nvmf-target.sh teardown || status=1
if [ -n "$(ls /sys/kernel/config/nvmet/subsystems 2>/dev/null)" ]; then
	echo "guest-tcp: teardown left subsystems behind:" /sys/kernel/config/nvmet/subsystems/* >&2
	status=1
fi
exit "$status"
