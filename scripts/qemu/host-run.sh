# What the two entry points share (bash, sourced by scripts/qemu-test.sh and
# scripts/qemu-bench.sh): the guest machine's options, the run directory,
# and booting the prepared initramfs once per mode.
# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables here are read by the other host-*.sh files

MEM=2G
SMP=
NULL_BACKEND=0
NS_SIZE_MIB=
PAYLOAD_EXTRA=
GUEST_SCRIPT=
BUILD=1
GUEST_ENV=()
EXTRA_CMDLINE=
TIMEOUT=600
KVM=0
PAYLOAD_TESTS=()
PAYLOAD_BINS=()
PAYLOAD_FIO=0

# The shared options, for the entry points' --help.
machine_usage() {
	cat <<'USAGE'
  --smp N                    guest CPUs
  --mem SIZE                 guest memory (default 2G)
  --null                     null-co namespaces (free media)
  --ns-size MIB              namespace size in MiB (default 64; 1024 with --null)
  --payload DIR              copy DIR's contents over /payload in the guest
                             (e.g. DIR/tests/<binary>, DIR/bin/<tool>)
  --script FILE              guest script to run instead of the default
  --no-build                 do not build the workspace's guest binaries
  --env NAME=VALUE           export NAME=VALUE in the guest (repeatable)
  --cmdline ARGS             extra guest kernel command line (module.param=v
                             is passed to insmod by /init)
  --timeout SECONDS          hard limit of each boot (default 600)
  --kvm                      use KVM instead of TCG (real hosts)
USAGE
}

need_arg() {
	[[ $# -ge 2 ]] || die "$1 needs a value (see --help)"
}

# machine_option ARGS...: take one shared option from the front of ARGS and
# set TAKEN to the number of words it used; fails when ARGS[0] is not one.
machine_option() {
	TAKEN=1
	case "$1" in
	--smp) need_arg "$@"; SMP=$2; TAKEN=2 ;;
	--mem) need_arg "$@"; MEM=$2; TAKEN=2 ;;
	--null) NULL_BACKEND=1 ;;
	--ns-size) need_arg "$@"; NS_SIZE_MIB=$2; TAKEN=2 ;;
	--payload) need_arg "$@"; PAYLOAD_EXTRA=$2; TAKEN=2 ;;
	--script) need_arg "$@"; GUEST_SCRIPT=$2; TAKEN=2 ;;
	--no-build) BUILD=0 ;;
	--env) need_arg "$@"; GUEST_ENV+=("$2"); TAKEN=2 ;;
	--cmdline) need_arg "$@"; EXTRA_CMDLINE+=" $2"; TAKEN=2 ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; TAKEN=2 ;;
	--kvm) KVM=1 ;;
	*) return 1 ;;
	esac
}

# check_machine_options DEFAULT_SMP DEFAULT_SCRIPT: validate the shared
# options and fill in the defaults.
check_machine_options() {
	SMP=${SMP:-$1}
	GUEST_SCRIPT=${GUEST_SCRIPT:-$2}
	NS_SIZE_MIB=${NS_SIZE_MIB:-$([[ $NULL_BACKEND == 1 ]] && echo 1024 || echo 64)}
	[[ $SMP =~ ^[1-9][0-9]*$ ]] || die "--smp needs a positive number, not '$SMP'"
	[[ $NS_SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "--ns-size needs MiB as a positive number"
	[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout needs seconds as a positive number"
	[[ -z $PAYLOAD_EXTRA || -d $PAYLOAD_EXTRA ]] || die "--payload $PAYLOAD_EXTRA is not a directory"
	[[ -f $GUEST_SCRIPT ]] || die "--script $GUEST_SCRIPT does not exist"
	[[ -n $PAYLOAD_EXTRA ]] && PAYLOAD_EXTRA=$(cd "$PAYLOAD_EXTRA" && pwd)
	GUEST_SCRIPT=$(cd "$(dirname "$GUEST_SCRIPT")" && pwd)/$(basename "$GUEST_SCRIPT")
	if [[ $KVM == 1 && ! -w /dev/kvm ]]; then
		die "--kvm: /dev/kvm is missing or not writable; drop --kvm to use TCG"
	fi
}

# start_run TOOL...: check the host tools (scripts/provision.sh installs
# them), find the guest kernel, and make a fresh RUN_DIR.
start_run() {
	TOTAL_START=$(now)
	require_tools qemu-system-x86_64 python3 "$@"
	locate_kernel
	log "guest kernel $KERNEL_VERSION ($VMLINUX)"
	mkdir -p "$CACHE/run"
	RUN_DIR=$(mktemp -d "$CACHE/run/XXXXXX")
	# Keep the last run's directory (console logs) for inspection; drop older ones.
	find "$CACHE/run" -mindepth 1 -maxdepth 1 -type d ! -path "$RUN_DIR" -exec rm -rf {} +
}

# boot_modes MODE...: build the archives, boot once per mode; exits with the
# first failing boot's status (0 when all passed).
boot_modes() {
	local mode rc results=() final=0 r
	build_base "$RUN_DIR/base.cpio.gz"
	build_payload "$RUN_DIR/payload.cpio"
	log "initramfs: base $(du -h "$RUN_DIR/base.cpio.gz" | cut -f1), payload $(du -h "$RUN_DIR/payload.cpio" | cut -f1), prepared in $(since "$TOTAL_START") s"
	for mode in "$@"; do
		if boot "$mode"; then
			results+=("$mode: PASS")
		else
			rc=$?
			results+=("$mode: FAIL (status $rc)")
			[[ $final != 0 ]] || final=$rc
		fi
	done
	for r in "${results[@]}"; do
		log "result $r"
	done
	log "total $(since "$TOTAL_START") s"
	exit "$final"
}
