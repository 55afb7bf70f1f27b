"""retain_freed_memory: repeated sampler-sized allocations stop faulting pages in (glibc only)."""

import json
import os
import subprocess
import sys

import pytest

from scorerecon import allocator
from scorerecon.allocator import glibc_mallopt

# A U-Net-like step (conv activations of 2 MiB, kept and released) and an FFT, as in a sampler.
CHILD = """
import json, mmap, resource, torch
from scorerecon.allocator import retain_freed_memory
def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
# control: touching 8 MiB of fresh anonymous memory must fault pages in, where the kernel counts them
fresh, before = mmap.mmap(-1, 8 << 20), minor_faults()
for offset in range(0, len(fresh), mmap.PAGESIZE):
    fresh[offset] = 1
counted = minor_faults() - before
applied = retain_freed_memory()
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
x = torch.randn(2, 16, 128, 128)
def step():
    h = x
    for _ in range(6):
        h = torch.nn.functional.silu(conv(h)) + h
    return torch.fft.fft2(h.to(torch.complex64))
with torch.no_grad():
    for _ in range(5):
        step()
    before = minor_faults()
    for _ in range(20):
        step()
print(json.dumps({"applied": applied, "faults": minor_faults() - before, "counted": counted}))
"""

glibc = pytest.mark.skipif(glibc_mallopt() is None, reason="the settings apply to glibc's malloc only")


def _child(**env) -> dict:
    # glibc's own defaults: no tunables from the environment (GLIBC_TUNABLES, MALLOC_*_)
    environ = {k: v for k, v in os.environ.items()
               if k not in ("SCORERECON_MALLOC", "GLIBC_TUNABLES") and not k.startswith("MALLOC_")}
    environ.update(env, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD], env=environ, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_retained_memory_serves_repeated_steps_without_page_faults():
    retained, default = _child(), _child(SCORERECON_MALLOC="default")
    assert retained["applied"] and not default["applied"]
    if not default["counted"]:  # seen on a CI machine: getrusage reported no minor faults at all
        pytest.skip("this kernel does not count minor page faults (getrusage's ru_minflt stays 0)")
    # With the settings, 20 steps fault at most a one-off block in (1,024 pages, 4 MiB, seen once).
    # Under glibc's defaults they usually fault ~40,000 pages in, but not always: the dynamic mmap
    # threshold and heap trimming depend on the order of frees, and one run in five on the
    # development machine (2026-12-04) saw 1,024 for both.  So the test holds the settings to
    # their bound and to never worse than the defaults; benchmarks/allocator.py measures the
    # usual gap side by side.
    assert retained["faults"] < 4096, retained
    assert retained["faults"] <= default["faults"] + 1024, (retained, default)


def test_settings_apply_once_and_report_it(monkeypatch):
    """mallopt runs once per process: the first accepted threshold, then the two settings; a
    refused call, SCORERECON_MALLOC=default or a C library without mallopt report False."""
    calls = []

    def fake_mallopt(param, value):
        calls.append((param, value))
        return 0 if (param, value) == (allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLDS[0]) else 1
    monkeypatch.setattr(allocator, "glibc_mallopt", lambda: fake_mallopt)
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.delenv("SCORERECON_MALLOC", raising=False)
    assert allocator.retain_freed_memory() is True and allocator.retain_freed_memory() is True
    assert calls == [*((allocator.M_MMAP_THRESHOLD, v) for v in allocator.MMAP_THRESHOLDS), *allocator.SETTINGS]
    def refusing_mallopt(param, value):
        return 0
    for env, mallopt in (("default", fake_mallopt), (None, None), (None, refusing_mallopt)):
        monkeypatch.setattr(allocator, "_applied", None)
        monkeypatch.setattr(allocator, "glibc_mallopt", lambda: mallopt)
        if env:
            monkeypatch.setenv("SCORERECON_MALLOC", env)
        else:
            monkeypatch.delenv("SCORERECON_MALLOC", raising=False)
        assert allocator.retain_freed_memory() is False, (env, mallopt)
