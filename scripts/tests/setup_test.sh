#!/bin/sh
# Tests for scripts/setup.sh against a fake sysfs/proc/dev tree: nothing on
# the real system is touched (setup.sh skips modprobe and mount when
# SYSFS_ROOT is not /sys). A small fake kernel (SETUP_FAKE_KERNEL) answers
# sysfs writes the way Linux does: drivers_probe binds by driver_override or
# the class driver, unbind unbinds, rescan brings removed devices back; it
# can also fail probes or remove a device to exercise the retries.
#
# Runs setup.sh under every available POSIX shell (sh, dash, bash --posix,
# busybox sh), then shellcheck on the scripts (scripts/provision.sh --test
# installs it; without it the check is skipped, except in CI).
#
# Usage: scripts/tests/setup_test.sh
set -eu

HERE=$(cd "$(dirname "$0")/.." && pwd)
SETUP=$HERE/setup.sh
PASS=0
FAIL=0

ok() { PASS=$((PASS + 1)); }
bad() {
	FAIL=$((FAIL + 1))
	printf 'FAIL [%s]: %s\n' "$SHELL_NAME" "$*"
}
expect_contains() { # text needle what
	case "$1" in
	*"$2"*) ok ;;
	*) bad "$3: output lacks '$2'" && printf '%s\n' "$1" | sed 's/^/    | /' ;;
	esac
}
expect_lacks() {
	case "$1" in
	*"$2"*) bad "$3: output has '$2'" && printf '%s\n' "$1" | sed 's/^/    | /' ;;
	*) ok ;;
	esac
}
expect_file() { # path content what
	got=$(cat "$1" 2>/dev/null || printf '<missing>')
	if [ "$got" = "$2" ]; then ok; else bad "$3: $1 is '$got', expected '$2'"; fi
}
expect_missing() {
	if [ -e "$1" ]; then bad "$2: $1 exists"; else ok; fi
}
expect_rc() { # expected what
	if [ "$rc" = "$1" ]; then ok; else bad "$2: exit status $rc, expected $1" && printf '%s\n' "$out" | sed 's/^/    | /'; fi
}
expect_driver() { # BDF driver what ("" = none)
	got=$(basename "$(readlink "$R/sys/bus/pci/devices/$1/driver" 2>/dev/null)" 2>/dev/null || true)
	if [ "$got" = "$2" ]; then ok; else bad "$3: $1 is bound to '${got:-none}', expected '${2:-none}'"; fi
}

# fake_pci BDF CLASS DRIVER GROUP
fake_pci() {
	d=$R/sys/bus/pci/devices/$1
	mkdir -p "$d"
	printf '%s\n' "$2" >"$d/class"
	printf '0x1b36\n' >"$d/vendor"
	printf '0x0010\n' >"$d/device"
	printf '0\n' >"$d/numa_node"
	if [ -n "$3" ]; then
		mkdir -p "$R/sys/bus/pci/drivers/$3"
		ln -s "$R/sys/bus/pci/drivers/$3" "$d/driver"
	fi
	if [ -n "$4" ]; then
		mkdir -p "$R/sys/kernel/iommu_groups/$4/devices"
		ln -s "$R/sys/kernel/iommu_groups/$4" "$d/iommu_group"
		ln -s "$d" "$R/sys/kernel/iommu_groups/$4/devices/$1"
		: >"$R/dev/vfio/$4"
	fi
}

# fake_ns BDF CTRL NSNAME MAJ:MIN: a namespace block device of a controller
# the kernel driver owns (NSNAME may be a multipath path device, nvme4c4n1:
# its head nvme4n1 is the block device). Backed by a 1 MiB file of zeros.
fake_ns() {
	head=$(printf '%s\n' "$3" | sed 's/c[0-9][0-9]*n/n/')
	mkdir -p "$R/sys/bus/pci/devices/$1/nvme/$2/$3" "$R/sys/class/nvme/$2" \
		"$R/sys/block/$head/holders" "$R/sys/block/$head/queue" "$R/sys/class/block"
	printf '%s\n' "$1" >"$R/sys/class/nvme/$2/address"
	printf '%s\n' "$4" >"$R/sys/block/$head/dev"
	printf '2048\n' >"$R/sys/block/$head/size"
	printf '512\n' >"$R/sys/block/$head/queue/logical_block_size"
	ln -s "$R/sys/block/$head" "$R/sys/class/block/$head"
	dd if=/dev/zero of="$R/dev/$head" bs=1024 count=0 seek=1024 2>/dev/null
}

# fake_part NS PART MAJ:MIN
fake_part() {
	mkdir -p "$R/sys/block/$1/$2/holders"
	printf '%s\n' "$3" >"$R/sys/block/$1/$2/dev"
	ln -s "$R/sys/block/$1/$2" "$R/sys/class/block/$2"
	: >"$R/dev/$2"
}

# poke DEV OFFSET HEX: write bytes (hex pairs) into a fake device.
poke() {
	pk=
	for pk_b in $(printf '%s' "$3" | sed 's/../& /g'); do pk="$pk$(printf '\\%03o' "0x$pk_b")"; done
	# shellcheck disable=SC2059 # octal escapes built above
	printf "$pk" | dd of="$R/dev/$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
# mountinfo FILE MAJ:MIN MOUNTPOINT FSTYPE SOURCE
mountinfo() {
	printf '%s 1 %s / %s rw,relatime shared:1 - %s %s rw\n' "$(wc -l <"$1" | tr -d ' ')" "$2" "$3" "$4" "$5" >>"$1"
}

new_tree() {
	R=$(mktemp -d "${TMPDIR:-/tmp}/setup-test.XXXXXX")
	for sz in 2048kB 1048576kB; do
		for d in kernel/mm/hugepages devices/system/node/node0/hugepages devices/system/node/node1/hugepages; do
			mkdir -p "$R/sys/$d/hugepages-$sz"
			echo 0 >"$R/sys/$d/hugepages-$sz/nr_hugepages"
			echo 0 >"$R/sys/$d/hugepages-$sz/free_hugepages"
		done
	done
	mkdir -p "$R/sys/bus/pci/drivers/vfio-pci" "$R/sys/bus/pci/drivers/uio_pci_generic" \
		"$R/sys/bus/pci/drivers/nvme" "$R/proc/self" "$R/dev/vfio" "$R/dev/hugepages" "$R/dev/disk/by-uuid"
	printf 'MemTotal:       16384000 kB\nHugepagesize:       2048 kB\n' >"$R/proc/meminfo"
	: >"$R/proc/self/mountinfo"
	mountinfo "$R/proc/self/mountinfo" 0:22 /proc proc proc
	mountinfo "$R/proc/self/mountinfo" 0:40 "$R/dev/hugepages" hugetlbfs hugetlbfs
	printf 'Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n' >"$R/proc/swaps"
}

run() { # env... -- args: run setup.sh in the fake tree under $SH
	out=$(env SYSFS_ROOT="$R/sys" PROC_ROOT="$R/proc" DEV_ROOT="$R/dev" FAKE_R="$R" PROBE_DELAY=0 "$@" 2>&1 </dev/null) && rc=0 || rc=$?
}
runk() { run SETUP_FAKE_KERNEL="$KERNEL" "$@"; }

# The big tree: one controller per in-use case, plus free ones.
in_use_tree() {
	new_tree
	fake_pci 0000:01:00.0 0x010802 nvme 1 # free
	fake_ns 0000:01:00.0 nvme0 nvme0n1 259:0
	fake_pci 0000:02:00.0 0x010802 nvme 2 # mounted through /dev/disk/by-uuid
	fake_ns 0000:02:00.0 nvme1 nvme1n1 259:1
	ln -s ../../nvme1n1 "$R/dev/disk/by-uuid/6a1f-0001"
	mountinfo "$R/proc/self/mountinfo" 259:1 /data ext4 "$R/dev/disk/by-uuid/6a1f-0001"
	fake_pci 0000:03:00.0 0x010802 nvme 3 # mounted only in another mount namespace
	fake_ns 0000:03:00.0 nvme2 nvme2n1 259:2
	mkdir -p "$R/proc/4321/ns" "$R/proc/4322/ns"
	mkdir -p "$R/proc/self/ns"
	ln -s 'mnt:[4026531841]' "$R/proc/self/ns/mnt"
	ln -s 'mnt:[4026532999]' "$R/proc/4321/ns/mnt"
	ln -s 'mnt:[4026532999]' "$R/proc/4322/ns/mnt"
	: >"$R/proc/4321/mountinfo"
	mountinfo "$R/proc/4321/mountinfo" 259:2 /srv xfs /dev/nvme2n1
	cp "$R/proc/4321/mountinfo" "$R/proc/4322/mountinfo"
	fake_pci 0000:04:00.0 0x010802 nvme 4 # swap, by device number
	fake_ns 0000:04:00.0 nvme3 nvme3n1 259:3
	printf '%s  partition\t8388604\t\t0\t\t-2\n' "$R/dev/nvme3n1" >>"$R/proc/swaps"
	fake_pci 0000:05:00.0 0x010802 nvme 5 # an md array member (partition 1)
	fake_ns 0000:05:00.0 nvme4 nvme4n1 259:4
	fake_part nvme4n1 nvme4n1p1 259:40
	: >"$R/sys/block/nvme4n1/nvme4n1p1/holders/md127"
	fake_pci 0000:06:00.0 0x010802 nvme 6 # LVM through device-mapper; multipath path name
	fake_ns 0000:06:00.0 nvme5 nvme5c5n1 259:5
	: >"$R/sys/block/nvme5n1/holders/dm-0"
	mkdir -p "$R/sys/block/dm-0/dm"
	echo vg0-data >"$R/sys/block/dm-0/dm/name"
	echo LVM-Xq3v >"$R/sys/block/dm-0/dm/uuid"
	fake_pci 0000:07:00.0 0x010802 nvme 7 # second device of a mounted btrfs
	fake_ns 0000:07:00.0 nvme6 nvme6n1 259:6
	mkdir -p "$R/sys/fs/btrfs/4be1c0de/devices"
	ln -s "$R/sys/block/nvme6n1" "$R/sys/fs/btrfs/4be1c0de/devices/nvme6n1"
	fake_pci 0000:08:00.0 0x010802 nvme 8 # btrfs mounted: anonymous device number
	fake_ns 0000:08:00.0 nvme7 nvme7n1 259:7
	mountinfo "$R/proc/self/mountinfo" 0:45 /vol btrfs "$R/dev/nvme7n1"
	fake_pci 0000:09:00.0 0x010802 nvme 9 # ZFS member: uberblock in slot 2 of label 0
	fake_ns 0000:09:00.0 nvme8 nvme8n1 259:8
	poke nvme8n1 $((131072 + 2048)) 0cb1ba0000000000
	fake_pci 0000:0a:00.0 0x010802 nvme 10 # GPT, nothing mounted
	fake_ns 0000:0a:00.0 nvme9 nvme9n1 259:9
	poke nvme9n1 512 4546492050415254
	poke nvme9n1 510 55aa
	fake_pci 0000:0b:00.0 0x010802 nvme 11 # ext4 signature
	fake_ns 0000:0b:00.0 nvme10 nvme10n1 259:10
	poke nvme10n1 1080 53ef
	fake_pci 0000:0c:00.0 0x010802 nvme 12 # second namespace in use (partitions)
	fake_ns 0000:0c:00.0 nvme11 nvme11n1 259:11
	fake_ns 0000:0c:00.0 nvme11 nvme11n2 259:12
	fake_part nvme11n2 nvme11n2p1 259:13
	fake_pci 0000:0d:00.0 0x010802 nvme 13 # ext4, opted in
	fake_ns 0000:0d:00.0 nvme12 nvme12n1 259:14
	poke nvme12n1 1080 53ef
	fake_pci 0000:0e:00.0 0x010802 nvme 14 # blocked (comma list)
	fake_ns 0000:0e:00.0 nvme13 nvme13n1 259:15
	fake_pci 0000:12:00.0 0x010802 nvme 19 # open by a process (raw-device benchmark)
	fake_ns 0000:12:00.0 nvme15 nvme15n1 259:17
	mkdir -p "$R/proc/777/fd"
	echo fio >"$R/proc/777/comm"
	: >"$R/proc/777/maps"
	ln -s "$R/dev/nvme15n1" "$R/proc/777/fd/9"
	fake_pci 0000:0f:00.0 0x010802 nvme 15 # blocked (comma list, short form)
	fake_ns 0000:0f:00.0 nvme14 nvme14n1 259:16
	fake_pci 0000:10:00.0 0x010802 pci-stub 16 # another driver before config
	fake_pci 0000:11:00.0 0x010802 "" 17        # no driver before config
	fake_pci 0000:00:1f.2 0x010601 ahci 18      # SATA, never touched
	# Built-in signature reader: one controller per format.
	n=20
	for sig in "0:58465342:XFS" "65600:5f42485266535f4d:btrfs" "4086:53574150535041434532:swap area" \
		"512:4c4142454c4f4e45:LVM2" "4096:fc4e2ba9:md RAID member (superblock 1.1/1.2)" \
		"0:4c554b53babe:LUKS" "1024:1020f5f2:F2FS" "4120:c68573f64e1a45ca:bcache" \
		"1048064:00000000:-" "$((1048576 - 131072 + 4096)):0000000000bab10c:ZFS" \
		"$((1048576 - 65536)):fc4e2ba9:md RAID member (superblock 0.90/1.0"; do
		off=${sig%%:*} rest=${sig#*:}
		fake_pci "0000:$n:00.0" 0x010802 nvme "$n"
		fake_ns "0000:$n:00.0" "nvme$n" "nvme${n}n1" "259:$n"
		poke "nvme${n}n1" "$off" "${rest%%:*}"
		if [ "$off" = 512 ]; then poke "nvme${n}n1" 536 4c564d3220303031; fi
		n=$((n + 1))
	done
}

test_in_use() {
	in_use_tree
	runk SETUP_PROBE=builtin HUGEMEM=4 PCI_BLOCKED="0000:0e:00.0, 0f:00.0" PCI_IN_USE_OK=0d:00.0 "$SH" "$SETUP" config
	expect_rc 0 "config on the in-use tree"
	expect_driver 0000:01:00.0 vfio-pci "a free controller is bound"
	expect_contains "$out" "0000:01:00.0: nvme -> vfio-pci" "bind reported"
	for b in 02 03 04 05 06 07 08 09 0a 0b 0c 12 20 21 22 23 24 25 26 27 29 30; do
		expect_driver "0000:$b:00.0" nvme "controller $b in use stays with nvme"
		expect_missing "$R/sys/bus/pci/devices/0000:$b:00.0/driver_override" "controller $b untouched"
		expect_contains "$out" "0000:$b:00.0: skipped, in use:" "controller $b skip reported"
	done
	expect_contains "$out" "nvme1n1 (259:1) is mounted at /data (ext4 from $R/dev/disk/by-uuid/6a1f-0001" "mounted by by-uuid path"
	expect_contains "$out" "nvme2n1 (259:2) is mounted at /srv (xfs from /dev/nvme2n1, in the mount namespace of pid 4321)" "mounted in another namespace"
	expect_lacks "$out" "pid 4322" "one mount namespace is read once"
	expect_contains "$out" "nvme3n1 (259:3) is used as swap ($R/dev/nvme3n1)" "swap by device number"
	expect_contains "$out" "nvme4n1p1 is held by md127 (md software RAID)" "md holder of a partition"
	expect_contains "$out" "nvme5n1 is held by dm-0 (LVM logical volume vg0-data)" "dm holder (LVM) of a multipath head"
	expect_contains "$out" "nvme6n1 is a device of the mounted btrfs filesystem 4be1c0de" "btrfs second device"
	expect_contains "$out" "nvme7n1 (259:7) is mounted at /vol (btrfs" "btrfs with an anonymous device number"
	expect_contains "$out" "nvme8n1 holds a ZFS pool member (uberblock at byte 131072)" "ZFS member"
	expect_contains "$out" "nvme9n1 holds a GPT partition table" "partition table, not mounted"
	expect_contains "$out" "nvme10n1 holds an ext2/3/4 filesystem" "filesystem signature"
	expect_contains "$out" "nvme11n2 has partitions: nvme11n2p1" "second namespace in use"
	expect_contains "$out" "nvme15n1 is open by pid 777 (fio)" "a raw device held open"
	expect_contains "$out" "PCI_IN_USE_OK=0000:02:00.0" "the skip names the override"
	for sig in "20:an XFS filesystem" "21:a btrfs filesystem" "22:a swap area" "23:an LVM2 physical volume" \
		"24:an md RAID member (superblock 1.1/1.2)" "25:a LUKS" "26:an F2FS" "27:a bcache" \
		"29:a ZFS pool member" "30:an md RAID member (superblock 0.90/1.0"; do
		expect_contains "$out" "nvme${sig%%:*}n1 holds ${sig#*:}" "built-in signature ${sig#*:}"
	done
	expect_driver 0000:28:00.0 vfio-pci "zeros at the end of a device are no signature"
	# The opt-in binds despite the ext4 signature, and says so.
	expect_driver 0000:0d:00.0 vfio-pci "PCI_IN_USE_OK binds an in-use controller"
	expect_contains "$out" "0000:0d:00.0: in use, bound anyway because PCI_IN_USE_OK names it" "opt-in warned"
	# Comma-separated PCI_BLOCKED blocks both.
	expect_driver 0000:0e:00.0 nvme "PCI_BLOCKED with commas (full form)"
	expect_driver 0000:0f:00.0 nvme "PCI_BLOCKED with commas (short form)"
	expect_lacks "$out" "0000:0e:00.0" "blocked controller not mentioned"
	expect_driver 0000:00:1f.2 ahci "SATA untouched"
	expect_driver 0000:10:00.0 vfio-pci "pci-stub controller bound"
	expect_driver 0000:11:00.0 vfio-pci "driverless controller bound"
	expect_contains "$out" "0000:11:00.0: bound to no driver, not nvme, so it has no namespaces to check" "unchecked said"
	expect_contains "$out" "signatures by: built-in reader" "prober named"
	if [ -f "$R/sys/bus/pci/rescan" ]; then ok; else bad "PCI bus rescanned after binding"; fi

	# A second config changes nothing and keeps the recorded drivers.
	runk SETUP_PROBE=builtin HUGEMEM=4 PCI_ALLOWED="0000:10:00.0,0000:01:00.0" "$SH" "$SETUP" config
	expect_rc 0 "second config"
	expect_contains "$out" "0000:10:00.0: already bound to vfio-pci" "rerun-safe"
	expect_lacks "$out" "0000:02:00.0" "PCI_ALLOWED with commas"
	expect_file "$R/run/nvme-engine/setup-drivers" "0000:01:00.0 nvme
0000:0d:00.0 nvme
0000:10:00.0 pci-stub
0000:11:00.0 -
0000:28:00.0 nvme" "previous drivers recorded once"

	run "$SH" "$SETUP" status
	expect_rc 0 "status"
	expect_contains "$out" "vfio-pci (was pci-stub)" "status shows the recorded driver"
	expect_contains "$out" "nvme1n1 (259:1) is mounted at /data" "status shows why a controller is in use"
	expect_contains "$out" "$R/dev/vfio/1" "status shows the VFIO group node"
	expect_lacks "$out" "0000:00:1f.2" "status lists only NVMe controllers"

	# reset: each controller back to the driver it had.
	runk "$SH" "$SETUP" reset
	expect_rc 0 "reset"
	expect_driver 0000:01:00.0 nvme "reset returns to nvme"
	expect_driver 0000:10:00.0 pci-stub "reset returns to the previous driver (pci-stub)"
	expect_driver 0000:11:00.0 "" "reset leaves a controller that had no driver unbound"
	expect_contains "$out" "0000:10:00.0: returning to pci-stub (recorded at config)" "reset says why"
	expect_file "$R/sys/bus/pci/devices/0000:10:00.0/driver_override" "" "reset clears the override"
	expect_file "$R/run/nvme-engine/setup-drivers" "" "reset forgets what it restored"
	expect_driver 0000:02:00.0 nvme "in-use controller never moved"

	# The same tree through blkid -p / wipefs when util-linux has them.
	if command -v mke2fs >/dev/null 2>&1; then
		mke2fs -q -F "$R/dev/nvme0n1" >/dev/null 2>&1 || busybox mke2fs -F "$R/dev/nvme0n1" >/dev/null 2>&1
		runk HUGEMEM=4 PCI_ALLOWED=01:00.0 "$SH" "$SETUP" config
		expect_driver 0000:01:00.0 nvme "a real ext2/4 image is in use"
		expect_contains "$out" "0000:01:00.0: skipped, in use:" "a real ext2/4 image is reported"
		if blkid -V 2>&1 | grep -q util-linux; then
			expect_contains "$out" "nvme0n1 holds an ext2 filesystem (blkid -p)" "blkid -p names the filesystem"
			expect_contains "$out" "signatures by: blkid -p (util-linux)" "blkid named as prober"
		else
			expect_contains "$out" "ext2/3/4 filesystem" "the built-in reader finds a real ext image"
		fi
	fi
	rm -rf "$R"
}

test_bad_inputs() {
	new_tree
	fake_pci 0000:01:00.0 0x010802 nvme 1
	fake_ns 0000:01:00.0 nvme0 nvme0n1 259:0
	while IFS='|' read -r setting expect; do
		[ -n "$setting" ] || continue
		run "$setting" "$SH" "$SETUP" config
		expect_rc 2 "bad setting $setting"
		expect_contains "$out" "$expect" "bad setting $setting named"
		expect_contains "$out" "nothing was changed" "bad setting $setting changes nothing"
		expect_missing "$R/sys/bus/pci/devices/0000:01:00.0/driver_override" "bad setting $setting binds nothing"
		expect_file "$R/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages" 0 "bad setting $setting reserves nothing"
	done <<'EOF'
HUGEMEM=abc|HUGEMEM='abc' is not a whole number of MiB: e.g. HUGEMEM=2048
HUGEMEM=-1|HUGEMEM='-1' is not a whole number of MiB
HUGEMEM=99999999|asks for 100000000 MiB of hugepages, but the machine has 16000 MiB
NRHUGE=-1|NRHUGE='-1' is not a whole number of hugepages
NRHUGE=1.5|NRHUGE='1.5' is not a whole number of hugepages
HUGEPGSZ=1G|HUGEPGSZ='1G' must be a page size in KiB, one of: 1048576 2048
HUGEPGSZ=4096|HUGEPGSZ=4096: this kernel has no 4096 KiB hugepages; it offers: 1048576 2048
HUGENODE=x|HUGENODE entry 'x' is not a node number or nodes_hp[NODE]=PAGES
HUGENODE=nodes_hp[0]=lots|HUGENODE entry 'nodes_hp[0]=lots' is not a node number
HUGENODE=7|HUGENODE names node 7, but this machine's NUMA nodes are: 0 1
PCI_ALLOWED=01:00|PCI_ALLOWED entry '01:00' is not a PCI address: use DDDD:BB:DD.F or BB:DD.F
PCI_BLOCKED=0000:01:00.0,zz:00.0|PCI_BLOCKED entry 'zz:00.0' is not a PCI address
PCI_IN_USE_OK=all|PCI_IN_USE_OK entry 'all' is not a PCI address
DRIVER_OVERRIDE=igb_uio|DRIVER_OVERRIDE='igb_uio' must be vfio-pci, uio_pci_generic or none
TARGET_USER=no-such-user-x|TARGET_USER='no-such-user-x' is not a user on this machine
SUDO_USER=no-such-user-y|SUDO_USER='no-such-user-y' is not a user on this machine
CLEAR_HUGE=maybe|CLEAR_HUGE='maybe' must be yes or no
SKIP_HUGE=2|SKIP_HUGE='2' must be yes or no
SHRINK_HUGE=sure|SHRINK_HUGE='sure' must be yes or no
HUGE_EVEN_ALLOC=on|HUGE_EVEN_ALLOC='on' must be yes or no
SKIP_PCI=please|SKIP_PCI='please' must be yes or no
PROBE_RETRIES=0|PROBE_RETRIES='0' must be a number of attempts from 1 to 1000
PROBE_DELAY=soon|PROBE_DELAY='soon' must be seconds between probe attempts
EOF
	# Every bad setting is named, not just the first.
	run HUGEMEM=abc NRHUGE=x "$SH" "$SETUP" config
	expect_contains "$out" "HUGEMEM='abc'" "first of two bad settings"
	expect_contains "$out" "NRHUGE='x'" "second of two bad settings"

	run "$SH" "$SETUP" stauts
	expect_rc 2 "unknown command"
	expect_contains "$out" "unknown command 'stauts' (did you mean 'status'?); the commands are config (the default), reset, status, cleanup and help" "unknown command named"
	run "$SH" "$SETUP" clean
	expect_contains "$out" "unknown command 'clean' (did you mean 'cleanup'?)" "prefix suggestion"
	run "$SH" "$SETUP" frobnicate
	expect_contains "$out" "unknown command 'frobnicate'; the commands are" "no suggestion for nonsense"
	run "$SH" "$SETUP" config HUGEMEM=64
	expect_rc 2 "two arguments"
	expect_contains "$out" "one command expected, got 'config HUGEMEM=64'" "extra argument named"
	run "$SH" "$SETUP" help
	expect_rc 0 "help"
	expect_contains "$out" "PCI_IN_USE_OK" "help documents the opt-in"
	rm -rf "$R"
}

node_pages() { cat "$R/sys/devices/system/node/node$1/hugepages/hugepages-$2/nr_hugepages"; }

test_hugepages() {
	new_tree
	n0=$R/sys/devices/system/node/node0/hugepages
	n1=$R/sys/devices/system/node/node1/hugepages
	all=$R/sys/kernel/mm/hugepages
	run SKIP_PCI=yes HUGEMEM=0064 "$SH" "$SETUP" config
	expect_file "$n0/hugepages-2048kB/nr_hugepages" 32 "HUGEMEM=0064 (decimal, not octal) reserves 32 pages on node 0"
	expect_file "$n1/hugepages-2048kB/nr_hugepages" 0 "node 1 untouched by default (as SPDK)"
	expect_contains "$out" "controllers: left alone (PCI_ALLOWED=none / SKIP_PCI=yes)" "SKIP_PCI"
	run SKIP_PCI=yes HUGEMEM=64 NRHUGE=10 SHRINK_HUGE=yes "$SH" "$SETUP" config
	expect_file "$n0/hugepages-2048kB/nr_hugepages" 10 "NRHUGE overrides HUGEMEM (and SHRINK_HUGE lowers)"
	run SKIP_PCI=yes NRHUGE=4 "$SH" "$SETUP" config
	expect_file "$n0/hugepages-2048kB/nr_hugepages" 10 "a larger reservation is kept without SHRINK_HUGE"
	expect_contains "$out" "10 x 2048 KiB reserved on node 0 (asked for 4; kept, SHRINK_HUGE=yes lowers it)" "kept reservation said"
	run SKIP_PCI=yes HUGENODE="nodes_hp[0]=12,nodes_hp[01]=06" "$SH" "$SETUP" config
	expect_file "$n0/hugepages-2048kB/nr_hugepages" 12 "HUGENODE nodes_hp[0]"
	expect_file "$n1/hugepages-2048kB/nr_hugepages" 6 "HUGENODE nodes_hp[1]"
	run SKIP_PCI=yes NRHUGE=20 HUGENODE="0 1" "$SH" "$SETUP" config
	expect_file "$n0/hugepages-2048kB/nr_hugepages" 20 "HUGENODE list: NRHUGE on node 0"
	expect_file "$n1/hugepages-2048kB/nr_hugepages" 20 "HUGENODE list: NRHUGE on node 1"
	run SKIP_PCI=yes NRHUGE=3 HUGEPGSZ=1048576 HUGENODE=1 "$SH" "$SETUP" config
	expect_file "$n1/hugepages-1048576kB/nr_hugepages" 3 "HUGEPGSZ picks the 1 GiB pool"
	expect_file "$n0/hugepages-1048576kB/nr_hugepages" 0 "HUGENODE=1 leaves node 0 alone"
	expect_contains "$out" "hugetlbfs: none of 1048576 KiB pages mounted (would mount at $R/dev/hugepages-1048576kB)" "a mount of the right page size is wanted"
	# The kernel's default size comes from /proc/meminfo.
	sed -i 's/^Hugepagesize:.*/Hugepagesize:    1048576 kB/' "$R/proc/meminfo"
	run SKIP_PCI=yes HUGEMEM=2048 "$SH" "$SETUP" config
	expect_file "$n0/hugepages-1048576kB/nr_hugepages" 2 "default page size from meminfo (2 x 1 GiB)"
	sed -i 's/^Hugepagesize:.*/Hugepagesize:       2048 kB/' "$R/proc/meminfo"
	echo 50 >"$all/hugepages-2048kB/nr_hugepages"
	run SKIP_PCI=yes SKIP_HUGE=yes HUGEMEM=100 "$SH" "$SETUP" config
	expect_file "$n0/hugepages-2048kB/nr_hugepages" 20 "SKIP_HUGE reserves nothing"
	expect_file "$all/hugepages-2048kB/nr_hugepages" 50 "SKIP_HUGE releases nothing"
	expect_contains "$out" "hugepages: left alone (SKIP_HUGE=yes)" "SKIP_HUGE said"
	run SKIP_PCI=yes HUGEMEM=4 "$SH" "$SETUP" config
	expect_file "$all/hugepages-2048kB/nr_hugepages" 50 "without CLEAR_HUGE nothing is released"
	run SKIP_PCI=yes CLEAR_HUGE=yes NRHUGE=4 "$SH" "$SETUP" config
	expect_file "$all/hugepages-2048kB/nr_hugepages" 0 "CLEAR_HUGE releases the pool first"
	expect_contains "$out" "released the free 2048 KiB pages first" "CLEAR_HUGE said"
	run SKIP_PCI=yes HUGE_EVEN_ALLOC=yes NRHUGE=8 HUGENODE=1 "$SH" "$SETUP" config
	expect_file "$all/hugepages-2048kB/nr_hugepages" 8 "HUGE_EVEN_ALLOC reserves through the global pool"
	run CLEAR_HUGE=yes "$SH" "$SETUP" reset
	expect_contains "$out" "CLEAR_HUGE applies to config, as in SPDK" "CLEAR_HUGE on reset explained"
	expect_file "$all/hugepages-2048kB/nr_hugepages" 8 "reset keeps hugepages"
	rm -rf "$R"
}

# ulimit -l: dash, bash and busybox sh all have it.
# shellcheck disable=SC3045
test_users() {
	new_tree
	fake_pci 0000:03:00.0 0x010802 vfio-pci 3
	# TARGET_USER defaults to the user who ran sudo.
	run SUDO_USER=nobody SETUP_PROBE=builtin NRHUGE=0 "$SH" "$SETUP" config
	expect_contains "$out" "target user: nobody (from SUDO_USER)" "TARGET_USER from SUDO_USER"
	if [ "$(id -u)" = 0 ]; then
		expect_file_owner "$R/dev/vfio/3" 65534 "VFIO group node owned by the sudo user"
		expect_file_owner "$R/dev/hugepages" 65534 "hugetlbfs mount owned by the sudo user"
	fi
	run SUDO_USER=root NRHUGE=0 "$SH" "$SETUP" config
	expect_lacks "$out" "target user" "sudo by root sets no target user"
	# memlock: su inherits this shell's limit when PAM sets none.
	if [ "$(id -u)" = 0 ] && (ulimit -l 1024) 2>/dev/null; then
		lim=$(ulimit -l 1024 && su -s /bin/sh nobody -c 'ulimit -l' </dev/null 2>/dev/null) || lim=unknown
		if [ "$lim" = 1024 ]; then
			echo 32 >"$R/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
			out=$(ulimit -l 1024 && env SYSFS_ROOT="$R/sys" PROC_ROOT="$R/proc" DEV_ROOT="$R/dev" \
				TARGET_USER=nobody SKIP_PCI=yes SKIP_HUGE=yes "$SH" "$SETUP" config 2>&1) || true
			expect_contains "$out" "nobody's memlock limit (1024 KiB) is below the reserved hugepage memory (65536 KiB)" "memlock warning"
			echo 0 >"$R/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
			out=$(ulimit -l 1024 && env SYSFS_ROOT="$R/sys" PROC_ROOT="$R/proc" DEV_ROOT="$R/dev" \
				TARGET_USER=nobody SKIP_PCI=yes SKIP_HUGE=yes "$SH" "$SETUP" config 2>&1) || true
			expect_lacks "$out" "memlock limit" "no memlock warning when the limit covers the reservation"
		fi
	fi
	rm -rf "$R"
}

expect_file_owner() {
	owner=$(stat -c %u "$1")
	if [ "$owner" = "$2" ]; then ok; else bad "$3: $1 is owned by $owner, expected $2"; fi
}

test_cleanup() {
	new_tree
	h=$R/dev/hugepages
	: >"$h/rtemap_0"           # mapped by pid 100
	: >"$h/rtemap_1"           # stale
	: >"$h/spdk_pid4242map_0"  # its process is gone
	: >"$h/spdk_pid100map_3"   # its process lives
	: >"$h/spdk_pid4243map_1"  # open by pid 200
	: >"$h/orderbook.shm"      # someone's persistent segment: never touched
	mkdir -p "$R/proc/100/fd" "$R/proc/200/fd"
	printf '7f0000000000-7f0000200000 rw-s 00000000 00:28 11 %s\n' "$h/rtemap_0" >"$R/proc/100/maps"
	: >"$R/proc/200/maps"
	ln -s "$h/spdk_pid4243map_1" "$R/proc/200/fd/5"
	run "$SH" "$SETUP" cleanup
	expect_rc 0 "cleanup"
	expect_missing "$h/rtemap_1" "a stale DPDK file is removed"
	expect_missing "$h/spdk_pid4242map_0" "a dead process's SPDK file is removed"
	for f in rtemap_0 spdk_pid100map_3 spdk_pid4243map_1 orderbook.shm; do
		if [ -e "$h/$f" ]; then ok; else bad "cleanup removed $f, which is in use or not a hugepage file"; fi
	done
	expect_contains "$out" "in use:  $h/rtemap_0 (pid 100)" "mapped file reported"
	expect_contains "$out" "in use:  $h/spdk_pid4243map_1 (pid 200)" "open file reported"
	expect_contains "$out" "cleanup: 2 stale hugepage file(s) removed" "cleanup summary"
	rm -rf "$R"
}

test_probe() {
	new_tree
	fake_pci 0000:01:00.0 0x010802 nvme 1
	fake_ns 0000:01:00.0 nvme0 nvme0n1 259:0
	# Two probes fail (the driver is still settling), the third binds.
	echo 2 >"$R/probe-failures"
	runk NRHUGE=0 "$SH" "$SETUP" config
	expect_rc 0 "config with racing probes"
	expect_driver 0000:01:00.0 vfio-pci "bound after retries"
	expect_contains "$out" "retrying (3 of 10)" "retries reported"
	# A device that leaves the bus on unbind comes back through a rescan.
	runk "$SH" "$SETUP" reset
	expect_driver 0000:01:00.0 nvme "reset"
	: >"$R/vanish-on-unbind"
	runk NRHUGE=0 "$SH" "$SETUP" config
	expect_contains "$out" "0000:01:00.0: gone from the bus after unbind; rescanning" "rescan when the device is gone"
	expect_driver 0000:01:00.0 vfio-pci "bound after the rescan"
	runk "$SH" "$SETUP" reset
	# Retries are bounded.
	echo 100 >"$R/probe-failures"
	runk NRHUGE=0 PROBE_RETRIES=3 "$SH" "$SETUP" config
	expect_rc 1 "config with a probe that never succeeds"
	expect_contains "$out" "0000:01:00.0: not bound to vfio-pci after 3 probe attempts" "bounded retries"
	# Without a fake kernel nothing binds: the failure is reported.
	rm -f "$R/probe-failures"
	run NRHUGE=0 PROBE_RETRIES=2 "$SH" "$SETUP" config
	expect_rc 1 "config with a kernel that never binds"
	rm -rf "$R"

	# No IOMMU groups: uio_pci_generic is chosen (with a warning).
	new_tree
	rm -rf "$R/sys/bus/pci/drivers/vfio-pci"
	fake_pci 0000:01:00.0 0x010802 "" ""
	runk NRHUGE=0 "$SH" "$SETUP" config
	expect_driver 0000:01:00.0 uio_pci_generic "no IOMMU picks uio_pci_generic"
	expect_contains "$out" "no IOMMU groups" "no-IOMMU warning"
	run NRHUGE=0 DRIVER_OVERRIDE=vfio-pci "$SH" "$SETUP" config
	expect_contains "$out" "vfio-pci needs an IOMMU" "vfio-pci without IOMMU refused"
	rm -rf "$R"
}

write_fake_kernel() {
	cat >"$KERNEL" <<'EOF'
#!/bin/sh
# Fake kernel: answers setup.sh's sysfs writes (FILE VALUE) in the fake tree.
R=$FAKE_R
case $1 in
*/drivers_probe)
	if [ -f "$R/probe-failures" ]; then
		n=$(cat "$R/probe-failures")
		if [ "$n" -gt 0 ]; then
			echo $((n - 1)) >"$R/probe-failures"
			exit 1
		fi
	fi
	d=$R/sys/bus/pci/devices/$2
	[ -e "$d" ] || exit 1
	[ ! -e "$d/driver" ] || exit 0
	drv=$(cat "$d/driver_override" 2>/dev/null || true)
	[ -n "$drv" ] || drv=nvme
	[ -d "$R/sys/bus/pci/drivers/$drv" ] || exit 0
	ln -s "$R/sys/bus/pci/drivers/$drv" "$d/driver"
	;;
*/unbind)
	d=$R/sys/bus/pci/devices/$2
	rm -f "$d/driver"
	if [ -f "$R/vanish-on-unbind" ]; then
		rm "$R/vanish-on-unbind"
		mkdir -p "$R/removed"
		mv "$d" "$R/removed/"
	fi
	;;
*/bus/pci/rescan)
	for x in "$R"/removed/*; do
		if [ -e "$x" ]; then mv "$x" "$R/sys/bus/pci/devices/"; fi
	done
	;;
esac
exit 0
EOF
	chmod +x "$KERNEL"
}

test_shell() {
	SHELL_NAME=$1
	# One word per shell, so it can be quoted: a wrapper runs the real one.
	SH=$WRAPPERS/$(printf '%s' "$1" | tr -c "[:alnum:]" _)
	printf '#!/bin/sh\nexec %s "$@"\n' "$1" >"$SH"
	chmod +x "$SH"
	test_in_use
	test_bad_inputs
	test_hugepages
	test_users
	test_cleanup
	test_probe
}

# The scripts stay shellcheck-clean (scripts/provision.sh --test installs it).
test_shellcheck() {
	SHELL_NAME=shellcheck
	if ! command -v shellcheck >/dev/null 2>&1; then
		if [ "${CI:-}" = true ]; then bad "shellcheck is not installed (run scripts/provision.sh --test)"; fi
		printf 'setup_test: shellcheck not installed; skipped\n'
		return
	fi
	if sc=$(shellcheck -s sh -x "$SETUP" "$0" 2>&1); then ok; else bad "shellcheck" && printf '%s\n' "$sc"; fi
}

WRAPPERS=$(mktemp -d "${TMPDIR:-/tmp}/setup-test-shells.XXXXXX")
KERNEL=$WRAPPERS/fake-kernel
trap 'rm -rf "$WRAPPERS"' EXIT
write_fake_kernel
# sh is dash on Debian: each shell binary runs once.
seen=
for candidate in dash sh "bash --posix" "busybox sh"; do
	bin=${candidate%% *}
	command -v "$bin" >/dev/null 2>&1 || continue
	real=$(readlink -f "$(command -v "$bin")")
	case " $seen " in *" $real "*) continue ;; esac
	seen="$seen $real"
	test_shell "$candidate"
done
test_shellcheck

printf 'setup_test: %d passed, %d failed\n' "$PASS" "$FAIL"
[ "$FAIL" = 0 ]
