# Debian package helpers (bash, sourced by scripts/provision.sh and
# scripts/fio-headers.sh). The sourcing script defines log and die.
#
# Every step is idempotent: a package that is installed is left alone, and
# apt-get update runs at most once per script run. Installing needs root;
# without it the error names the command to run.
# shellcheck shell=bash

APT_UPDATED=0

# Wait for another apt/dpkg run to let go of the lock (at most two minutes).
wait_for_dpkg() {
	local i
	command -v fuser >/dev/null || return 0
	for ((i = 0; i < 60; i++)); do
		if ! fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1; then
			return 0
		fi
		((i == 0)) && log "waiting for another apt/dpkg run to finish"
		sleep 2
	done
	die "apt/dpkg has been locked for two minutes; retry when the other package run is done"
}

# installed PKG: whether the Debian package is installed.
installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# need_root WHAT: fail unless root, naming what needs it.
need_root() {
	[[ $(id -u) == 0 ]] || die "$1 needs root: run 'sudo $0' (or install it yourself)"
}

apt_update_once() {
	[[ $APT_UPDATED == 1 ]] && return 0
	need_root "apt-get update"
	wait_for_dpkg
	log "apt-get update"
	apt-get update -qq || die "apt-get update failed: check the network and /etc/apt/sources.list*"
	APT_UPDATED=1
}

# missing_packages PKG...: print the packages that are not installed.
missing_packages() {
	local p
	for p in "$@"; do installed "$p" || echo "$p"; done
}

# ensure_packages PKG...: install the Debian packages that are missing.
ensure_packages() {
	local missing=()
	mapfile -t missing < <(missing_packages "$@")
	[[ ${#missing[@]} == 0 ]] && return 0
	[[ $(id -u) == 0 ]] || die "missing packages: ${missing[*]}; install them with: sudo apt-get install --no-install-recommends ${missing[*]}"
	apt_update_once
	wait_for_dpkg
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
}
