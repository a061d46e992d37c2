# Guest initramfs assembly (bash, sourced by scripts/qemu-test.sh and
# scripts/qemu-bench.sh).
#
# The guest's initrd is three concatenated archives:
#   1. base.cpio.gz  busybox-static, /init, bash, the kernel modules; gzip'd and
#                    padded to 512 bytes (without the padding the kernel
#                    silently ignores what follows);
#   2. payload.cpio  /payload (guest scripts, setup.sh, tests, tools) and the
#                    shared libraries of dynamic tools such as fio; uncompressed
#                    so large payloads unpack quickly under TCG;
#   3. boot.cpio     /payload/boot.env, the settings of one boot (mode, ...).
# shellcheck shell=bash

# Modules loaded by /init, dependencies resolved from .modinfo. The generic CRC
# algorithms are soft dependencies of crc-t10dif/crc64-rocksoft, so they are
# named explicitly.
# ext4 (and crc32c, which it loads at mount) mounts a filesystem on a
# namespace for setup.sh's in-use check.
GUEST_MODULES=(crct10dif_generic crc64_rocksoft_generic nvme vfio_pci vfio_iommu_type1
	uio_pci_generic crc32c_generic ext4)

# stage_elf ROOT BINARY GUEST_PATH: copy a dynamic (or static) executable to
# ROOT/GUEST_PATH and its shared libraries and loader to the guest's standard
# library directories.
stage_elf() {
	local root=$1 bin=$2 guest=$3 out lib
	install -D -m 0755 "$(readlink -f "$bin")" "$root$guest"
	if ! out=$(ldd "$bin" 2>&1); then
		# Static executables make ldd fail with "not a dynamic executable".
		grep -q 'not a dynamic executable' <<<"$out" && return 0
		die "ldd $bin failed: $out"
	fi
	grep -q 'statically linked' <<<"$out" && return 0
	if grep -q 'not found' <<<"$out"; then
		die "$bin: shared libraries missing on the host: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
	fi
	mkdir -p "$root/lib/x86_64-linux-gnu" "$root/lib64"
	while read -r lib; do
		case "$lib" in
		*/ld-linux-x86-64.so.2) cp -L "$lib" "$root/lib64/ld-linux-x86-64.so.2" ;;
		*) cp -L "$lib" "$root/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
		esac
	done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out")
}

# build_base OUT: the compressed base archive.
build_base() {
	local out=$1 stage ko busybox=/bin/busybox
	stage=$(dirname "$out")/base
	rm -rf "$stage"
	mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,tmp,root,etc}
	[[ -x $busybox ]] || die "$busybox is missing (package busybox-static)"
	if ldd "$busybox" >/dev/null 2>&1; then
		die "$busybox is dynamically linked; install busybox-static (it replaces busybox)"
	fi
	cp "$busybox" "$stage/bin/busybox"
	ln -s busybox "$stage/bin/sh"
	install -m 0755 "$QEMU_DIR/init" "$stage/init"
	stage_elf "$stage" /bin/bash /bin/bash
	echo 'root:x:0:0:root:/root:/bin/sh' >"$stage/etc/passwd"
	echo 'root:x:0:' >"$stage/etc/group"

	# The modules, their load order for /init, and a modules.dep so that
	# modprobe (busybox) works for scripts such as setup.sh.
	local mods=$stage/lib/modules/$KERNEL_VERSION
	mkdir -p "$mods"
	python3 "$QEMU_DIR/resolve-modules.py" --dep "$mods/modules.dep" "$MODULES_DIR" \
		"${GUEST_MODULES[@]}" >"$mods/load-order" || die "resolving kernel module dependencies failed"
	while read -r ko; do
		install -D -m 0644 "$MODULES_DIR/$ko" "$mods/$ko"
	done <"$mods/load-order"
	python3 "$QEMU_DIR/mkcpio.py" --gzip "$out" "$stage" || die "building the base initramfs failed"
}

# build_payload OUT: the payload archive from the PAYLOAD_* settings:
#   GUEST_SCRIPT   file run as /payload/run.sh
#   PAYLOAD_TESTS  array of test executables for /payload/tests
#   PAYLOAD_BINS   array of executables for /payload/bin
#   PAYLOAD_FIO    1 to add fio and its libraries
#   PAYLOAD_EXTRA  directory whose contents are copied over /payload (or empty)
build_payload() {
	local out=$1 stage f name
	stage=$(dirname "$out")/payload
	rm -rf "$stage"
	mkdir -p "$stage/payload/tests" "$stage/payload/bin"
	install -m 0755 "$GUEST_SCRIPT" "$stage/payload/run.sh"
	install -m 0644 "$QEMU_DIR/guest-lib.sh" "$stage/payload/lib.sh"
	install -m 0755 "$QEMU_DIR/guest-selftest.sh" "$stage/payload/selftest.sh"
	if [[ -f $REPO/scripts/setup.sh ]]; then
		install -m 0755 "$REPO/scripts/setup.sh" "$stage/payload/setup.sh"
		# setup.sh sources its in-use checks and hugepage code from setup/.
		if [[ -d $REPO/scripts/setup ]]; then
			install -d "$stage/payload/setup"
			install -m 0644 "$REPO"/scripts/setup/*.sh "$stage/payload/setup/"
		fi
	fi
	for f in "${PAYLOAD_TESTS[@]}"; do
		# cargo names test executables <target>-<16 hex digit hash>; drop the hash.
		name=$(basename "$f" | sed -E 's/-[0-9a-f]{16}$//')
		install -m 0755 "$f" "$stage/payload/tests/$name"
	done
	for f in "${PAYLOAD_BINS[@]}"; do
		stage_elf "$stage" "$f" "/payload/bin/$(basename "$f")"
	done
	if [[ ${PAYLOAD_FIO:-0} == 1 ]]; then
		stage_elf "$stage" "$(command -v fio)" /usr/bin/fio
	fi
	if [[ -n ${PAYLOAD_EXTRA:-} ]]; then
		cp -a "$PAYLOAD_EXTRA/." "$stage/payload/" || die "copying $PAYLOAD_EXTRA into the payload failed"
	fi
	python3 "$QEMU_DIR/mkcpio.py" "$out" "$stage" || die "building the payload archive failed"
}

# build_boot_env OUT MODE: the per-boot archive with /payload/boot.env.
build_boot_env() {
	local out=$1 mode=$2 stage
	stage=$(dirname "$out")/boot-$mode
	rm -rf "$stage"
	mkdir -p "$stage/payload"
	{
		printf 'export QEMU_TEST_MODE=%q\n' "$mode"
		local kv
		for kv in "${GUEST_ENV[@]}"; do
			printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
		done
	} >"$stage/payload/boot.env"
	python3 "$QEMU_DIR/mkcpio.py" "$out" "$stage" || die "building the boot archive failed"
}
