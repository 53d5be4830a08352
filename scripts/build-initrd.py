#!/usr/bin/env python3
"""Pack the guest initrd: an uncompressed newc cpio with the static hyperstart as /init.

Usage: build-initrd.py HYPERSTART OUT.img
Uncompressed on purpose: under TCG the kernel would spend longer inflating it than reading it.
"""
import os, sys

def entry(out, name, mode, data=b"", rdev=(0, 0), ino=[1]):
    ino[0] += 1
    namez = name.encode() + b"\0"
    hdr = "070701" + "".join(f"{v:08x}" for v in [
        ino[0], mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0])
    out.write(hdr.encode() + namez)
    out.write(b"\0" * ((4 - (110 + len(namez)) % 4) % 4))
    out.write(data)
    out.write(b"\0" * ((4 - len(data) % 4) % 4))

def main():
    agent, out_path = sys.argv[1], sys.argv[2]
    data = open(agent, "rb").read()
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as out:
        for d in ["dev", "proc", "sys", "run", "tmp", "newroot"]:
            entry(out, d, 0o040755)
        entry(out, "dev/console", 0o020600, rdev=(5, 1))
        entry(out, "init", 0o100755, data)
        entry(out, "TRAILER!!!", 0)
    os.replace(tmp, out_path)

if __name__ == "__main__":
    main()
