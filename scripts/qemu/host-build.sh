# Guest executables built from the workspace (bash, sourced by
# scripts/qemu-test.sh and scripts/qemu-bench.sh).
#
# The guest has no C library, so everything is linked statically against the
# installed gnu target (+crt-static), in a target directory of its own so the
# different RUSTFLAGS do not invalidate the normal build.
# shellcheck shell=bash

GUEST_TARGET_DIR=${NVME_ENGINE_GUEST_TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/guest}

# Executables named in cargo's JSON messages on stdin (tests or binaries).
cargo_executables() {
	python3 -c '
import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    kinds = msg.get("target", {}).get("kind", [])
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and (
        "test" in kinds or "bin" in kinds
    ):
        print(msg["executable"])
'
}

# guest_cargo OUTFILE ARGS...: run cargo for the guest, JSON messages to OUTFILE.
# The target triple is named explicitly: then RUSTFLAGS (+crt-static) apply to
# the guest code only, not to proc-macros and build scripts, which the host
# loads dynamically (with it they fail: "cannot produce proc-macro").
guest_cargo() {
	local json=$1 triple
	shift
	command -v cargo >/dev/null || die "cargo is not installed; it is needed to build the guest test binaries"
	triple=$(rustc -vV | sed -n 's/^host: //p')
	[[ -n $triple ]] || die "cannot read the host target triple from 'rustc -vV'"
	log "cargo $* (static, --target $triple, target dir $GUEST_TARGET_DIR)"
	(cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=$GUEST_TARGET_DIR \
		cargo "$@" --target "$triple" --message-format=json >"$json") \
		|| { python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-message":
        sys.stderr.write(m["message"].get("rendered") or "")
' "$json"; die "cargo $* failed (see the messages above)"; }
}

# build_guest_tests: append the real-device test executables to PAYLOAD_TESTS.
# Test targets come from GUEST_TEST_TARGETS (engine/tests/<name>.rs, or
# <crate dir>/<name> for another crate's, e.g. reactor/reactor_tcp_target;
# names must differ: the payload drops the directory); a target
# that does not exist yet is skipped with a note.
build_guest_tests() {
	local name json exe found=0 dir pkg
	for name in "${GUEST_TEST_TARGETS[@]}"; do
		dir=engine pkg=nvme-engine found=0
		if [[ $name == */* ]]; then
			dir=${name%%/*} name=${name#*/}
			pkg=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$REPO/$dir/Cargo.toml" | head -n 1)
		fi
		if [[ ! -f $REPO/$dir/tests/$name.rs && ! -f $REPO/$dir/tests/$name/main.rs ]]; then
			log "note: $dir/tests/$name.rs does not exist yet; no $name tests in the guest"
			continue
		fi
		json=$RUN_DIR/cargo-test-$dir-$name.json
		guest_cargo "$json" test --release --no-run -p "$pkg" --test "$name"
		while read -r exe; do
			PAYLOAD_TESTS+=("$exe")
			found=1
			log "guest test executable: $exe"
		done < <(cargo_executables <"$json")
		[[ $found == 1 ]] || die "cargo built $name but named no test executable"
	done
}

# build_guest_perf: append the static nvme-perf to PAYLOAD_BINS.
build_guest_perf() {
	local json=$RUN_DIR/cargo-perf.json exe
	guest_cargo "$json" build --release -p nvme-perf --bin nvme-perf
	exe=$(cargo_executables <"$json" | grep '/nvme-perf$' | tail -n 1)
	[[ -n $exe ]] || die "cargo built nvme-perf but named no executable"
	PAYLOAD_BINS+=("$exe")
}

# build_guest_examples NAME...: append static builds of the example programs
# NAME (examples/src/bin) to PAYLOAD_BINS.
build_guest_examples() {
	local json=$RUN_DIR/cargo-examples.json exe name args=()
	for name in "$@"; do
		args+=(--bin "$name")
	done
	guest_cargo "$json" build --release -p nvme-engine-examples "${args[@]}"
	for name in "$@"; do
		exe=$(cargo_executables <"$json" | grep "/$name\$" | tail -n 1)
		[[ -n $exe ]] || die "cargo built the examples but named no $name executable"
		PAYLOAD_BINS+=("$exe")
	done
}

# build_guest_fio_engine [--release]: the nvme-fio ioengine for the guest's
# fio. It is a shared library that fio loads, so it is built for the host
# (dynamic, like fio) and goes into /payload/bin with its libraries; fio comes
# along (PAYLOAD_FIO). Needs fio's headers: scripts/provision.sh --fio provides them.
build_guest_fio_engine() {
	local so dir=debug
	[[ ${1:-} == --release ]] && dir=release
	"$REPO/scripts/fio-headers.sh" --print >/dev/null 2>&1 ||
		die "fio's headers are not provisioned, so the fio ioengine cannot be built: run scripts/provision.sh --fio (as root) first"
	log "cargo build ${1:-} -p nvme-fio (fio ioengine for the guest)"
	(cd "$REPO" && cargo build -q ${1:+"$1"} -p nvme-fio) || die "cargo build -p nvme-fio failed"
	so=${CARGO_TARGET_DIR:-$REPO/target}/$dir/libnvme_fio.so
	[[ -f $so ]] || die "cargo built nvme-fio but $so is missing"
	PAYLOAD_BINS+=("$so")
	# shellcheck disable=SC2034 # read by host-initramfs.sh
	PAYLOAD_FIO=1
}
