# Host packages and the guest kernel (bash, sourced by scripts/qemu-test.sh).
#
# Everything the harness needs is installed from Debian packages: QEMU,
# busybox-static, python3 (archive and kernel tools), fio for perf runs, and the
# guest kernel, which is downloaded (not installed) and unpacked into the cache.
# shellcheck shell=bash
# shellcheck disable=SC2034 # prepare_kernel sets variables for the other host-*.sh files

APT_UPDATED=0

apt_update_once() {
	[[ $APT_UPDATED == 1 ]] && return 0
	log "apt-get update"
	apt-get update -qq || die "apt-get update failed: check the network and /etc/apt/sources.list*"
	APT_UPDATED=1
}

# ensure_packages PKG...: install the Debian packages that are missing.
ensure_packages() {
	local missing=() p
	for p in "$@"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("$p")
		fi
	done
	[[ ${#missing[@]} == 0 ]] && return 0
	if [[ $(id -u) != 0 ]]; then
		die "missing packages: ${missing[*]}; install them with: sudo apt-get install --no-install-recommends ${missing[*]}"
	fi
	apt_update_once
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
		|| die "apt-get install ${missing[*]} failed"
}

# Name of the current Debian 6.1 kernel image package (linux-image-6.1.0-N-amd64).
kernel_package_name() {
	local name
	name=$(apt-cache depends linux-image-amd64 2>/dev/null \
		| awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	if [[ -z $name ]]; then
		apt_update_once
		name=$(apt-cache depends linux-image-amd64 2>/dev/null \
			| awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	fi
	[[ -n $name ]] || die "cannot find the kernel package: 'apt-cache depends linux-image-amd64' names no linux-image-<version>-amd64"
	echo "$name"
}

# Prepare the guest kernel in the cache and set KERNEL_DIR (the unpacked
# package), KERNEL_VERSION, VMLINUX and MODULES_DIR. The package name can be
# forced with NVME_ENGINE_QEMU_KERNEL_PKG; otherwise the cached one is reused,
# and only a fresh cache asks apt for the current one.
prepare_kernel() {
	local kcache=$CACHE/kernel pkg deb vmlinuz
	mkdir -p "$kcache" "$CACHE/apt"
	pkg=${NVME_ENGINE_QEMU_KERNEL_PKG:-}
	if [[ -z $pkg && -f $kcache/current ]]; then
		pkg=$(<"$kcache/current")
	fi
	[[ -n $pkg ]] || pkg=$(kernel_package_name)
	KERNEL_DIR=$kcache/$pkg
	if [[ ! -f $KERNEL_DIR/vmlinux ]]; then
		deb=$(find "$CACHE/apt" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
		if [[ -z $deb ]]; then
			log "downloading $pkg"
			# As root, apt would hand the download to the _apt user, who may not
			# be able to write into the cache directory.
			local sandbox=()
			[[ $(id -u) != 0 ]] || sandbox=(-o APT::Sandbox::User=root)
			(cd "$CACHE/apt" && apt-get download -q "${sandbox[@]}" "$pkg") \
				|| die "apt-get download $pkg failed (try 'apt-get update', or set NVME_ENGINE_QEMU_KERNEL_PKG)"
			deb=$(find "$CACHE/apt" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
			[[ -n $deb ]] || die "apt-get download $pkg left no .deb in $CACHE/apt"
		fi
		log "unpacking $(basename "$deb")"
		rm -rf "$KERNEL_DIR.tmp"
		dpkg-deb -x "$deb" "$KERNEL_DIR.tmp" || die "dpkg-deb -x $deb failed (corrupt download? delete it and rerun)"
		vmlinuz=$(find "$KERNEL_DIR.tmp/boot" -name 'vmlinuz-*' | head -n 1)
		[[ -n $vmlinuz ]] || die "$deb holds no boot/vmlinuz-*"
		python3 "$QEMU_DIR/extract-vmlinux.py" "$vmlinuz" "$KERNEL_DIR.tmp/vmlinux" \
			|| die "could not extract vmlinux from $vmlinuz"
		rm -rf "$KERNEL_DIR"
		mv "$KERNEL_DIR.tmp" "$KERNEL_DIR"
	fi
	echo "$pkg" >"$kcache/current"
	VMLINUX=$KERNEL_DIR/vmlinux
	MODULES_DIR=$(find "$KERNEL_DIR/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n 1)
	[[ -d $MODULES_DIR ]] || die "$KERNEL_DIR has no lib/modules/<version>"
	KERNEL_VERSION=$(basename "$MODULES_DIR")
}
