"""The stub python/edgefwd/_core.pyi must describe the built module (mypy.stubtest)."""

import subprocess
import sys


def test_stub_matches_the_built_module():
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "edgefwd._core"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
