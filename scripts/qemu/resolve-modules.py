#!/usr/bin/env python3
"""Order kernel modules for loading with insmod, dependencies first.

The Debian kernel package ships no modules.dep (depmod builds it at install
time), so dependencies are read from each module's .modinfo section
("depends=" strings). Modules built into the kernel (listed in
modules.builtin) are skipped.

Usage: resolve-modules.py [--dep FILE] MODDIR NAME [NAME...]
Prints one path (relative to MODDIR) per line, in load order. With --dep, also
writes a modules.dep for the selected modules (what modprobe reads).
"""

import os
import sys


def norm(name):
    return name.replace("-", "_")


def module_name(filename):
    for ext in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if filename.endswith(ext):
            return norm(filename[: -len(ext)])
    return None


def index(moddir):
    mods = {}
    for cur, _dirs, files in os.walk(os.path.join(moddir, "kernel")):
        for f in files:
            name = module_name(f)
            if name:
                mods[name] = os.path.relpath(os.path.join(cur, f), moddir)
    return mods


def builtin(moddir):
    names = set()
    try:
        with open(os.path.join(moddir, "modules.builtin")) as f:
            for line in f:
                name = module_name(os.path.basename(line.strip()))
                if name:
                    names.add(name)
    except FileNotFoundError:
        pass
    return names


def depends(path):
    """The depends= list from the module's .modinfo strings."""
    if not path.endswith(".ko"):
        raise ValueError(f"{path}: compressed modules are not supported")
    with open(path, "rb") as f:
        data = f.read()
    deps = []
    for chunk in data.split(b"\0"):
        if chunk.startswith(b"depends="):
            deps += [norm(d) for d in chunk[len(b"depends="):].decode().split(",") if d]
    return deps


def main():
    args = sys.argv[1:]
    depfile = None
    if args[:1] == ["--dep"] and len(args) > 1:
        depfile, args = args[1], args[2:]
    if len(args) < 2:
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        return 2
    moddir, wanted = args[0], [norm(n) for n in args[1:]]
    mods, built = index(moddir), builtin(moddir)
    order, state, direct = [], {}, {}

    def visit(name, chain):
        if state.get(name) == "done" or name in built:
            return
        if state.get(name) == "busy":
            raise ValueError("dependency cycle: " + " -> ".join(chain + [name]))
        if name not in mods:
            raise ValueError(
                f"module {name} not found under {moddir} (needed by "
                f"{' -> '.join(chain) or 'the initramfs'})"
            )
        state[name] = "busy"
        direct[name] = [d for d in depends(os.path.join(moddir, mods[name])) if d not in built]
        for dep in direct[name]:
            visit(dep, chain + [name])
        state[name] = "done"
        order.append(mods[name])

    try:
        for name in wanted:
            visit(name, [])
    except (OSError, ValueError) as err:
        print(f"resolve-modules: {err}", file=sys.stderr)
        return 1
    if depfile:
        # modules.dep lists every module's dependencies, transitively, nearest first.
        def closure(name, seen):
            for dep in direct[name]:
                if dep not in seen:
                    seen.append(dep)
                    closure(dep, seen)
            return seen

        with open(depfile, "w") as f:
            for name, path in ((n, mods[n]) for n in direct):
                deps = " ".join(mods[d] for d in closure(name, []))
                f.write(f"{path}: {deps}".rstrip() + "\n")
    print("\n".join(order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
