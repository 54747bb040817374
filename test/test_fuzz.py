"""The fuzz suite (test/fuzz_harness.py) in a subprocess: a segfault, a hang or a runaway allocation
in a C library fails this test with its cause instead of killing the test run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "fuzz_harness.py"
EXAMPLES = 50          # per property: a few seconds each; bench/fuzz.py runs the long campaign
TIMEOUT_S = 300        # generous for a loaded 2-core machine; a hang shows up as this timeout
MEMORY_CAP = 4 << 30   # address space; an unchecked 2**63 polygon coordinate once grew a process to 21 GB


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


@pytest.mark.parametrize("prop", ["annotation_structure", "annotation_bytes", "results_structure",
                                  "segmentation_values"])
def test_fuzz_property_in_subprocess(prop):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    try:
        done = subprocess.run([sys.executable, str(HARNESS), "--examples", str(EXAMPLES), prop],
                              capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                              preexec_fn=_limit_memory if sys.platform.startswith("linux") else None)
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"{prop}: hang, no result after {TIMEOUT_S} s\n{partial[-3000:]}")
    output = (done.stdout + done.stderr)[-6000:]
    if done.returncode < 0:
        pytest.fail(f"{prop}: crashed with {signal.Signals(-done.returncode).name}\n{output}")
    assert done.returncode == 0, f"{prop}: property failed\n{output}"
    assert f"{prop}: {EXAMPLES} examples passed" in done.stdout
