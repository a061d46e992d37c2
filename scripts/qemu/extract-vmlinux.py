#!/usr/bin/env python3
"""Extract the uncompressed ELF kernel (vmlinux) from an xz-compressed bzImage.

QEMU can boot an uncompressed ELF kernel directly through its PVH entry point,
which skips the firmware and the in-kernel decompressor (seconds under TCG).
The bzImage carries the kernel as an xz stream after the setup code; this finds
the stream by its magic bytes and decompresses it.

Usage: extract-vmlinux.py VMLINUZ OUT
"""

import lzma
import os
import sys

XZ_MAGIC = b"\xfd7zXZ\x00"
ELF_MAGIC = b"\x7fELF"


def extract(image: bytes) -> bytes:
    pos = image.find(XZ_MAGIC)
    while pos >= 0:
        decomp = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            data = decomp.decompress(image[pos:])
        except lzma.LZMAError:
            data = b""
        if data.startswith(ELF_MAGIC):
            return data
        pos = image.find(XZ_MAGIC, pos + 1)
    raise ValueError(
        "no xz stream holding an ELF kernel found; the kernel may be compressed "
        "differently (only xz-compressed bzImages are supported)"
    )


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    src, out = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        image = f.read()
    try:
        elf = extract(image)
    except ValueError as err:
        print(f"extract-vmlinux: {src}: {err}", file=sys.stderr)
        return 1
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(elf)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
