#!/usr/bin/env bash
# Provide the headers of the installed fio, which the nvme-fio ioengine is
# built against (Debian ships fio without headers).
#
#   scripts/fio-headers.sh            install fio if missing, fetch and configure its source
#   scripts/fio-headers.sh --print    print the configured source directory and exit
#                                     (installs nothing; fails when not provisioned)
#
# What it does, each step only when needed (it is idempotent):
#   1. installs the Debian package fio (and dpkg-dev, which unpacks sources);
#   2. adds a deb-src entry mirroring the configured Debian archive
#      (/etc/apt/sources.list.d/nvme-engine-deb-src.sources) and runs apt-get update;
#   3. runs `apt-get source fio=<installed version>` into scripts/.cache/fio-src/
#      (git-ignored; fio's code never enters the repository);
#   4. runs fio's ./configure there, which writes the config-host.h the headers need.
# The nvme-fio build (fio/build.rs) reads that directory; NVME_FIO_SRC=<dir>
# points it at another configured fio source tree instead.
# Steps 1 and 2 need root; without it the script prints the command to run.
# scripts/provision.sh runs it with the other host packages.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
CACHE=${NVME_FIO_SRC_CACHE:-$REPO/scripts/.cache/fio-src}
SRC_LIST=/etc/apt/sources.list.d/nvme-engine-deb-src.sources

log() { printf '[fio-headers] %s\n' "$*" >&2; }
die() {
	printf '[fio-headers] ERROR: %s\n' "$*" >&2
	exit 1
}

PRINT=0
case "${1:-}" in
--print) PRINT=1 ;;
"") ;;
-h | --help)
	sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*) die "unknown argument '$1' (try --help)" ;;
esac

as_root() {
	if [[ $(id -u) == 0 ]]; then
		"$@"
	else
		die "this step needs root: run 'sudo $REPO/scripts/fio-headers.sh' (or: sudo $*)"
	fi
}

# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
. "$REPO/scripts/lib/apt.sh"

# apt-get update, again if it ran before (a deb-src entry was just added).
apt_update() {
	APT_UPDATED=0
	apt_update_once
}

if [[ $PRINT == 1 ]] && ! installed fio; then
	die "fio is not installed; run scripts/provision.sh (or scripts/fio-headers.sh as root)"
fi
ensure_packages fio
PKG_VERSION=$(dpkg-query -W -f='${Version}' fio)          # 3.33-3
UPSTREAM=$(fio --version | sed -n 's/^fio-\([0-9][0-9.]*\).*/\1/p') # 3.33
[[ -n $UPSTREAM ]] || die "cannot read fio's version from 'fio --version' ($(fio --version 2>&1 | head -n 1))"
DIR=$CACHE/fio-$UPSTREAM
STAMP=$DIR/.nvme-fio-configured

if [[ -f $STAMP && $(<"$STAMP") == "$PKG_VERSION" ]]; then
	[[ $PRINT == 1 ]] && echo "$DIR"
	log "fio $PKG_VERSION headers ready in $DIR"
	exit 0
fi
[[ $PRINT == 1 ]] && die "fio $PKG_VERSION headers are not provisioned; run scripts/fio-headers.sh"

ensure_packages dpkg-dev make gcc

# The source package must be visible to apt: add a deb-src entry for each
# Debian archive that has a deb entry, unless one is configured already.
has_source() {
	apt-cache showsrc fio 2>/dev/null | grep -qx "Version: $PKG_VERSION"
}
if ! has_source; then
	if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		log "adding deb-src entries ($SRC_LIST)"
		entries=$(
			{
				# deb822 files: copy each stanza that has Types: deb, as deb-src.
				for f in /etc/apt/sources.list.d/*.sources; do
					[[ -f $f && $f != "$SRC_LIST" ]] || continue
					awk 'BEGIN { RS = ""; ORS = "\n\n" }
						/(^|\n)Types:[^\n]*deb([ \n]|$)/ && /deb.debian.org|debian/ {
							gsub(/(^|\n)Types:[^\n]*/, "\nTypes: deb-src"); sub(/^\n/, ""); print
						}' "$f"
				done
				# One-line sources.list entries.
				if [[ -f /etc/apt/sources.list ]]; then
					awk '$1 == "deb" { $1 = ""; printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents:", $2, $3;
						for (i = 4; i <= NF; i++) printf " %s", $i; printf "\n\n" }' /etc/apt/sources.list |
						sed 's/^URIs: \[.*\] /URIs: /'
				fi
			}
		)
		[[ -n $entries ]] || die "no Debian 'deb' entry found in /etc/apt/sources.list*; add a deb-src line for your mirror and rerun"
		printf '# Added by nvme-engine scripts/fio-headers.sh: fio source for its ioengine headers.\n%s\n' "$entries" |
			as_root tee "$SRC_LIST" >/dev/null
	fi
	apt_update
	has_source || die "apt knows no source package fio $PKG_VERSION (the archive may have moved on: 'apt-get install fio' to upgrade, then rerun)"
fi

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "apt-get source fio=$PKG_VERSION"
sandbox=()
[[ $(id -u) != 0 ]] || sandbox=(-o APT::Sandbox::User=root)
(cd "$work" && apt-get source -qq "${sandbox[@]}" "fio=$PKG_VERSION" >"$work/source.log" 2>&1) ||
	die "apt-get source fio=$PKG_VERSION failed: $(tail -n 3 "$work/source.log")"
unpacked=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'fio-*' | head -n 1)
[[ -n $unpacked && -f $unpacked/ioengines.h ]] || die "apt-get source left no fio-*/ioengines.h in $work"

# Debian configures with '--disable-native --prefix=/usr' (plus GUI and
# libnbd options that add engines, not fields of the structures the
# ioengine uses).
log "configuring fio $UPSTREAM (writes config-host.h)"
(cd "$unpacked" && ./configure --disable-native --prefix=/usr >"$work/configure.log" 2>&1) ||
	die "fio's ./configure failed: $(tail -n 5 "$work/configure.log")"
[[ -f $unpacked/config-host.h ]] || die "fio's ./configure wrote no config-host.h"
echo "$PKG_VERSION" >"$unpacked/.nvme-fio-configured"
rm -rf "$DIR"
mv "$unpacked" "$DIR"
log "fio $PKG_VERSION headers ready in $DIR"
[[ $PRINT == 1 ]] && echo "$DIR"
exit 0
