#!/usr/bin/env python3
"""Write a newc (SVR4, no CRC) cpio archive for a Linux initramfs.

The host may not have cpio(1), so the archive is written here. Every entry is
owned by root. Several staging directories can be given: their trees are
merged, a later directory overriding an earlier one at the same path.

The archive is padded with zeros to a multiple of 512 bytes. With --gzip the
archive is compressed and the compressed file is padded instead: the kernel
only finds a second archive appended after a compressed one when the
compressed part ends on such a boundary.

Usage: mkcpio.py [--gzip] OUT DIR [DIR...]
"""

import gzip
import os
import stat
import sys

PAD = 512


def collect(dirs):
    """Map archive path -> host path, parents listed before children."""
    entries = {}
    for root in dirs:
        root = os.path.abspath(root)
        for cur, subdirs, files in os.walk(root):
            subdirs.sort()
            rel = os.path.relpath(cur, root)
            if rel != ".":
                entries[rel] = cur
            for name in sorted(files) + [d for d in subdirs if os.path.islink(os.path.join(cur, d))]:
                path = os.path.join(cur, name)
                entries[os.path.normpath(os.path.join(rel, name))] = path
    return [(k, entries[k]) for k in sorted(entries, key=lambda p: (p.count("/"), p))]


def header(ino, mode, size, name, nlink=1):
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % v for v in fields)


def pad4(buf):
    buf.extend(b"\0" * (-len(buf) % 4))


def archive(dirs):
    buf = bytearray()
    ino = 1
    for name, path in collect(dirs):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            data = os.readlink(path).encode()
            mode = stat.S_IFLNK | 0o777
        elif stat.S_ISDIR(st.st_mode):
            data = b""
            mode = stat.S_IFDIR | stat.S_IMODE(st.st_mode)
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                data = f.read()
            mode = stat.S_IFREG | stat.S_IMODE(st.st_mode)
        else:
            raise ValueError(f"{path}: unsupported file type (only files, dirs and symlinks)")
        bname = name.encode()
        buf += header(ino, mode, len(data), bname, 2 if stat.S_ISDIR(mode) else 1)
        buf += bname + b"\0"
        pad4(buf)
        buf += data
        pad4(buf)
        ino += 1
    buf += header(0, 0, 0, b"TRAILER!!!") + b"TRAILER!!!\0"
    pad4(buf)
    return bytes(buf)


def main():
    args = sys.argv[1:]
    compress = False
    if args and args[0] == "--gzip":
        compress = True
        args = args[1:]
    if len(args) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    out, dirs = args[0], args[1:]
    for d in dirs:
        if not os.path.isdir(d):
            print(f"mkcpio: {d}: not a directory", file=sys.stderr)
            return 1
    try:
        data = archive(dirs)
    except (OSError, ValueError) as err:
        print(f"mkcpio: {err}", file=sys.stderr)
        return 1
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    data += b"\0" * (-len(data) % PAD)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
