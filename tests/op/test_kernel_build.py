"""The kernel's CMake build (all default architectures, warnings as errors) and its C ABI's
argument checking through ctypes: every status code from bad arguments, no GPU needed."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from kernel_helpers import DEFAULT_ARCHS, build_kernels, library_for_tests

from axial_deploy.op import kernel
from axial_deploy.op import torch_op as kernel_op
from axial_deploy.op.kernel import KernelArgumentError, KernelParams, Status, TablePointers
from axial_deploy.op.spec import AxialAttentionAttributes, OpSpecError

VALID = KernelParams(
    batch=2, height=9, width=17, axis=3, num_heads=8, key_depth=4, value_depth=8, span=65,
    table_length=65,
)  # fmt: skip
EXTERNAL_LIBRARY = os.environ.get(kernel.LIBRARY_ENV)  # before the fixtures below set it
FAKE = 0x1000  # a non-NULL address; never dereferenced by the checks
FAKE_TABLES = TablePointers(FAKE, FAKE, FAKE, FAKE, FAKE)


def has_gpu() -> bool:
    return torch.cuda.is_available() or Path("/dev/nvidia0").exists()


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return library_for_tests(tmp_path_factory.getbasetemp() / "kernel-build")


@pytest.fixture(autouse=True)
def use_library(library, monkeypatch):
    monkeypatch.setenv(kernel.LIBRARY_ENV, str(library))


def test_builds_every_default_architecture(tmp_path_factory):
    if EXTERNAL_LIBRARY:
        pytest.skip(f"{kernel.LIBRARY_ENV} is set: testing that library, not a fresh build")
    build, seconds = build_kernels(tmp_path_factory.getbasetemp() / "kernel-build")
    lib_dir = build / "lib"
    assert (lib_dir / "libaxial_attention_capi.so").is_file()
    assert (lib_dir / "libaxial_attention_kernels.a").is_file()
    commands = json.loads((build / "compile_commands.json").read_text())
    cuda = [c["command"] for c in commands if c["file"].endswith("axialAttentionKernel.cu")]
    assert len(cuda) == 1, commands
    for arch in DEFAULT_ARCHS[:-1]:  # machine code only
        assert f"arch=compute_{arch},code=[sm_{arch}]" in cuda[0]
    newest = DEFAULT_ARCHS[-1]  # machine code and PTX, so that future GPUs JIT
    assert f"arch=compute_{newest},code=[compute_{newest},sm_{newest}]" in cuda[0]
    print(f"kernel build, {len(DEFAULT_ARCHS)} architectures: {seconds:.1f} s")


def test_configures_without_nvcc(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "CUDAARCHS")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and not (Path(p) / "nvcc").exists()
    )
    result = subprocess.run(
        ["cmake", "-S", str(kernel.REPO_ROOT), "-B", str(tmp_path), "-DCMAKE_CUDA_COMPILER="],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "nvcc not found, the AxialAttention kernel is not built" in result.stdout
    build = subprocess.run(["cmake", "--build", str(tmp_path)], capture_output=True, env=env)
    assert build.returncode == 0
    assert not (tmp_path / "lib" / kernel.LIBRARY_NAME).exists()


def test_exports_only_the_c_abi(library):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm not found")
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert {n for n in names if not n.startswith("_")} == {
        "axial_attention_check",
        "axial_attention_workspace_size",
        "axial_attention_enqueue",
        "axial_attention_status_string",
        "axial_attention_abi_version",
    }


def test_abi_version_and_status_strings():
    lib = kernel.load_library()
    assert lib.axial_attention_abi_version() == kernel.ABI_VERSION
    strings = [kernel.status_string(s) for s in Status]
    assert len(set(strings)) == len(Status) and all(strings)
    assert kernel.status_string(Status.BAD_AXIS) == "bad axis: must be 2 (height) or 3 (width)"
    assert kernel.status_string(99) == "unknown status"


def test_valid_params_pass():
    for axis in (2, 3):
        for dtype in kernel.DataType:
            for span in (0, 1, 65):
                kernel.check(dataclasses.replace(VALID, axis=axis, dtype=dtype, span=span))
    for dq, dv in [(1, 1), (3, 5), (4, 8), (8, 16), (16, 32), (32, 64), (64, 128), (64, 1)]:
        kernel.check(dataclasses.replace(VALID, key_depth=dq, value_depth=dv))
    kernel.check(dataclasses.replace(VALID, height=1, width=1, table_length=1, span=1))
    assert kernel.workspace_size(VALID) == 0  # the fused kernel needs no scratch memory


BAD_PARAMS = [
    ({"dtype": 2}, Status.BAD_DTYPE),
    ({"dtype": -1}, Status.BAD_DTYPE),
    ({"axis": 1}, Status.BAD_AXIS),
    ({"axis": 4}, Status.BAD_AXIS),
    ({"axis": -1}, Status.BAD_AXIS),
    ({"batch": 0}, Status.BAD_SHAPE),
    ({"height": 0}, Status.BAD_SHAPE),
    ({"width": -3}, Status.BAD_SHAPE),
    ({"num_heads": 0}, Status.BAD_SHAPE),
    ({"key_depth": 0}, Status.BAD_SHAPE),
    ({"value_depth": 0}, Status.BAD_SHAPE),
    ({"height": 65536, "width": 65536}, Status.BAD_SHAPE),  # plane beyond int32
    ({"batch": 2**31 - 1, "num_heads": 2**20, "height": 2**15, "width": 2**15}, Status.BAD_SHAPE),
    ({"width": 2**30, "height": 1}, Status.BAD_SHAPE),  # 2 L beyond int32
    ({"span": 2}, Status.BAD_SPAN),
    ({"span": -1}, Status.BAD_SPAN),
    ({"table_length": 64}, Status.BAD_TABLE),
    ({"table_length": 0}, Status.BAD_TABLE),
    ({"table_length": -5}, Status.BAD_TABLE),
    ({"key_depth": 65}, Status.UNSUPPORTED),
    ({"value_depth": 129}, Status.UNSUPPORTED),
]


@pytest.mark.parametrize(("change", "status"), BAD_PARAMS, ids=lambda v: str(v))
def test_bad_params_are_refused_before_any_cuda_call(change, status):
    params = dataclasses.replace(VALID, **change)
    with pytest.raises(KernelArgumentError) as info:
        kernel.check(params)
    assert info.value.status == status
    assert kernel.status_string(status) in str(info.value)
    assert isinstance(info.value, ValueError)
    # enqueue checks the same way, with non-NULL pointers, and launches nothing
    with pytest.raises(KernelArgumentError) as info:
        kernel.enqueue(params, FAKE, FAKE_TABLES, FAKE)
    assert info.value.status == status
    assert kernel.workspace_size(params) == 0


def test_null_pointers():
    lib = kernel.load_library()
    assert lib.axial_attention_check(None) == Status.NULL_POINTER
    assert lib.axial_attention_workspace_size(None) == 0
    null_params = lib.axial_attention_enqueue(None, FAKE, None, FAKE, None, 0, None)
    assert null_params == Status.NULL_POINTER
    cases = {"qkv": (0, FAKE_TABLES, FAKE), "y": (FAKE, FAKE_TABLES, 0)}
    for field in dataclasses.fields(TablePointers):
        cases[field.name] = (FAKE, dataclasses.replace(FAKE_TABLES, **{field.name: 0}), FAKE)
    for name, (qkv, tables, y) in cases.items():
        with pytest.raises(KernelArgumentError) as info:
            kernel.enqueue(VALID, qkv, tables, y)
        assert info.value.status == Status.NULL_POINTER, name
    # a NULL tables struct
    params = kernel._c_params(VALID)
    status = lib.axial_attention_enqueue(ctypes.byref(params), FAKE, None, FAKE, None, 0, None)
    assert status == Status.NULL_POINTER


def test_workspace_status_is_not_reachable_with_a_zero_size_workspace():
    # axial_attention_workspace_size is 0, so any workspace (even NULL, 0 bytes) is large enough:
    # AXIAL_ATTENTION_ERROR_WORKSPACE exists in the ABI for a future kernel that needs scratch.
    assert kernel.workspace_size(VALID) == 0
    if has_gpu():
        pytest.skip("a GPU is present: the fake pointers below would be dereferenced")
    with pytest.raises(kernel.KernelCudaError, match="CUDA error"):
        kernel.enqueue(VALID, FAKE, FAKE_TABLES, FAKE, workspace=0, workspace_bytes=0)


def test_valid_launch_without_a_gpu_reports_a_cuda_error():
    if has_gpu():
        pytest.skip("a GPU is present: the fake pointers would be dereferenced")
    for dtype in kernel.DataType:
        params = dataclasses.replace(VALID, dtype=dtype, axis=2)
        with pytest.raises(kernel.KernelCudaError):
            kernel.enqueue(params, FAKE, FAKE_TABLES, FAKE)


def test_int32_overflow_in_python_is_a_bad_shape():
    with pytest.raises(KernelArgumentError, match="int32") as info:
        kernel.check(dataclasses.replace(VALID, batch=2**31))
    assert info.value.status == Status.BAD_SHAPE


def test_missing_library_names_make_plugins(monkeypatch, tmp_path):
    monkeypatch.setenv(kernel.LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(kernel.KernelLibraryError, match="make plugins"):
        kernel.check(VALID)


def meta_inputs(n=2, g=8, dq=4, dv=8, h=9, w=17, t=65, dtype=torch.float16):
    def meta(*shape, dtype=torch.float32):
        return torch.empty(*shape, device="meta", dtype=dtype)

    qkv = meta(n, g * (2 * dq + dv), h, w, dtype=dtype)
    tables = (meta(g, dq, t), meta(g, dq, t), meta(g, dv, t), meta(g), meta(g * dv))
    return qkv, tables, AxialAttentionAttributes(3, g, dq, dv, 65)


def test_torch_op_fake_impl_gives_the_output_shape():
    qkv, tables, attributes = meta_inputs()
    y = kernel_op.axial_attention(qkv, *tables, dataclasses.replace(attributes, axis=2))
    assert y.shape == (2, 64, 9, 17) and y.dtype == torch.float16 and y.device.type == "meta"
    torch.library.opcheck(
        torch.ops.axial_deploy.axial_attention.default,
        (qkv, *tables, 3, 8, 4, 8, 65),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_torch_op_refuses_bad_shapes_and_cpu_tensors():
    qkv, tables, attributes = meta_inputs()
    with pytest.raises(KernelArgumentError, match="qkv must be"):
        kernel_op.axial_attention(qkv[:, :-1], *tables, attributes)
    with pytest.raises(KernelArgumentError, match="rel_v must have shape"):
        bad = (tables[0], tables[1], tables[1], tables[3], tables[4])
        kernel_op.axial_attention(qkv, *bad, attributes)
    cpu = [torch.zeros(t.shape, dtype=t.dtype) for t in (qkv, *tables)]
    with pytest.raises(KernelArgumentError, match="CUDA tensors only"):
        kernel_op.axial_attention(*cpu, attributes)
    # the registered schema's plain ints are checked against the spec at the boundary
    with pytest.raises(OpSpecError, match=r"span .* must be 0 or odd, got 64"):
        torch.ops.axial_deploy.axial_attention(qkv, *tables, 3, 8, 4, 8, 64)
    # the documented keyword form is the same call
    y = kernel_op.axial_attention(qkv, *tables, **attributes.as_dict())
    assert y.shape == (2, 64, 9, 17)
