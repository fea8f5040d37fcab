"""`native.load`, the one loader of the toolkit's native libraries: a missing, foreign or stale
library is refused in one line naming the file, the problem and the fix. Real libraries: the
CPU libraries `make cpu-libs` builds (skipped with that reason where they are not built)."""

from __future__ import annotations

import dataclasses

import pytest

from axial_deploy.native import CALIBRATION, CPU_OP, NativeLibraryError, load, locate

CALIBRATION_FILE = locate(CALIBRATION).path
needs_cpu_libs = pytest.mark.skipif(
    CALIBRATION_FILE is None,
    reason="needs build/lib/libaxial_calibration.so: `make cpu-libs` (CMake, a C++ compiler)",
)


def test_a_missing_library_names_the_build_command(tmp_path):
    with pytest.raises(NativeLibraryError, match=r"not found at .*missing\.so: .*make cpu-libs"):
        load(CPU_OP, tmp_path / "missing.so")


def test_a_file_that_is_no_library_does_not_load(tmp_path):
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(
        NativeLibraryError, match=r"cannot load the .*libbogus\.so: .*make cpu-libs"
    ):
        load(CPU_OP, bogus)


@needs_cpu_libs
def test_the_built_library_loads_with_its_abi_checked():
    lib = load(CALIBRATION)
    assert lib.axial_calibration_abi_version() == CALIBRATION.abi_version
    assert load(CALIBRATION, CALIBRATION_FILE) is lib  # opened and checked once


@needs_cpu_libs
def test_another_library_is_refused_by_its_missing_abi_symbol():
    with pytest.raises(
        NativeLibraryError, match=r"is not the .*no axial_attention_cpu_abi_version"
    ):
        load(CPU_OP, CALIBRATION_FILE)


@needs_cpu_libs
def test_a_stale_library_is_refused_with_both_versions():
    newer = dataclasses.replace(CALIBRATION, abi_version=CALIBRATION.abi_version + 1)
    expected = (
        rf"has ABI version {CALIBRATION.abi_version}, this package expects {newer.abi_version}"
    )
    with pytest.raises(NativeLibraryError, match=expected):
        load(newer, CALIBRATION_FILE)


def test_a_caller_gets_its_own_error_type(tmp_path):
    from axial_deploy.op.ort import CpuOpError

    with pytest.raises(CpuOpError, match="make cpu-libs") as info:
        load(CPU_OP, tmp_path / "missing.so", CpuOpError)
    assert isinstance(info.value.__cause__, NativeLibraryError)
