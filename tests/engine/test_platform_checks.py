"""doctor's mismatch checks (numpy/torch, cuda-python/driver, JetPack) as pure functions of a
probe, fed with tables; and the probe of this machine, which has none of the mismatches."""

from __future__ import annotations

import pytest

from axial_deploy.doctor import run_checks
from axial_deploy.engine.platform_checks import (
    Probe,
    cuda_python_check,
    jetpack_check,
    parse_l4t,
    platform_checks,
    probe,
)

# /etc/nv_tegra_release as Jetson Linux writes it (first line)
JP60 = "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, DATE: x"
JP61 = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: x"
JP621 = "# R36 (release), REVISION: 4.4, GCID: 41062509, BOARD: generic, EABI: aarch64, DATE: x"
JP70 = "# R38 (release), REVISION: 2.1, GCID: 42061081, BOARD: generic, EABI: aarch64, DATE: x"
JP5 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: x"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [(JP60, (36, 3, 0)), (JP621, (36, 4, 4)), (JP70, (38, 2, 1)), ("garbage", None)],
)
def test_parse_l4t(text, parsed):
    assert parse_l4t(text) == parsed


@pytest.mark.parametrize(
    ("text", "ok", "fragment"),
    [
        (None, None, None),  # not a Jetson: no line
        (JP5, False, "older than JetPack 6.1"),
        (JP60, False, "L4T R36.3.0 (JetPack 6.0) is older than JetPack 6.1"),
        (JP61, True, "L4T R36.4.0 (JetPack 6.1/6.2)"),
        (JP621, True, "L4T R36.4.4"),
        (JP70, True, "L4T R38.2.1 (JetPack 7.0)"),
        ("", False, "unreadable"),
    ],
)
def test_jetpack_release(text, ok, fragment):
    check = jetpack_check(text)
    if ok is None:
        assert check is None
        return
    assert check.ok == ok and fragment in check.detail
    if not ok:
        assert check.fix and "JetPack 6.1" in check.fix


NUMPY1_TORCH = "RuntimeError: Numpy is not available"


@pytest.mark.parametrize(
    ("probe_", "names", "fragments"),
    [
        (Probe(), [], []),
        # a working pair, whatever the versions
        (Probe(numpy="2.1.0", torch="2.9.0"), [], []),
        (Probe(numpy="1.26.4", torch="2.5.0a0+872d972"), [], []),
        # numpy 2 beside NVIDIA's numpy-1 JetPack torch: from_numpy fails
        (
            Probe(numpy="2.2.6", torch="2.5.0a0+872d972", torch_numpy_error=NUMPY1_TORCH),
            ["numpy / torch"],
            ["numpy 2.2.6", "built against numpy 1", "numpy<2", "constraints/jetpack6.txt"],
        ),
        # cuda-python 13 on a CUDA 12.8 driver; 12 on a 13 driver is fine (newer driver)
        (
            Probe(cuda_python="13.0.3", driver_cuda=12080),
            ["cuda-python / driver"],
            ["cuda-python 13.0.3", "CUDA 12.8", "cuda-python==12.*", "580.65.06"],
        ),
        (Probe(cuda_python="12.9.4", driver_cuda=13000), [], []),
        (Probe(cuda_python="13.1.1", driver_cuda=13020), [], []),
        (Probe(cuda_python="13.0.0", driver_cuda=None), [], []),  # no driver: GPU line says it
        # both at once on an old JetPack
        (
            Probe(
                numpy="2.0.0",
                torch="2.3.0",
                torch_numpy_error=NUMPY1_TORCH,
                cuda_python="13.0.0",
                driver_cuda=12020,
                tegra_release=JP60,
            ),
            ["JetPack", "numpy / torch", "cuda-python / driver"],
            ["JetPack 6.0", "numpy 2.0.0", "CUDA 12.2"],
        ),
    ],
)
def test_mismatches_named_with_their_fix(probe_, names, fragments):
    checks = platform_checks(probe_)
    assert [c.name for c in checks] == names
    assert all(not c.ok and c.required and c.fix for c in checks)
    text = " ".join(f"{c.detail} {c.fix}" for c in checks)
    assert all(f in text for f in fragments), text


def test_cuda_python_fix_names_the_driver_major():
    check = cuda_python_check(Probe(cuda_python="14.0.0", driver_cuda=13010))
    assert "cuda-python==13.*" in check.fix and "constraints/cuda13.txt" in check.fix


def test_probe_of_this_machine_feeds_doctor():
    # The real probe: typed values, torch (the dev install's) exchanging arrays with numpy, and
    # doctor showing exactly the lines platform_checks makes of it (none on a CPU-only host).
    seen = probe()
    assert seen.numpy and isinstance(seen.numpy, str)
    if seen.torch is not None:
        assert seen.torch_numpy_error is None
    assert seen.driver_cuda is None or seen.driver_cuda >= 1000
    expected = [c.name for c in platform_checks(seen)]
    names = [c.name for c in run_checks()]
    compat = {"JetPack", "numpy / torch", "cuda-python / driver"}
    assert [n for n in names if n in compat] == expected
