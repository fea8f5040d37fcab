"""The two places that lean on a third-party library beyond its documented API, each behind an
adapter that checks what it uses and says so when it moved (docs/architecture.md, rules):

- onnxruntime-extensions' Python-op bridge (`ort_ops._extensions_bridge`): the buffer hook that
  hands AxialAttentionReference's output back without a Python list;
- Polygraphy's CUDA wrapper (`polygraphy_binding.polygraphy_cudart`): the CUDA runtime library
  it loaded.

The installed versions pass through the real adapters; an unknown version or a missing internal
(simulated on the real module with monkeypatch) is refused with a message naming it."""

from __future__ import annotations

import ctypes

import pytest

from axial_deploy.errors import AxialDeployError


@pytest.fixture
def extensions():
    return pytest.importorskip("onnxruntime_extensions", reason="needs onnxruntime-extensions")


def test_the_installed_extensions_bridge_is_accepted(extensions):
    from axial_deploy.op.ort import BUFFER_HOOK_VERSIONS, _extensions_bridge

    if not extensions.__version__.startswith(BUFFER_HOOK_VERSIONS):
        pytest.skip(f"onnxruntime-extensions {extensions.__version__} is not a checked version")
    bridge = _extensions_bridge()
    assert callable(bridge.default_hook) and callable(bridge.install_hooker)
    assert isinstance(bridge.opdefs, dict)


def test_an_unknown_extensions_version_is_refused_by_name(extensions, monkeypatch):
    from axial_deploy.op.ort import ExtensionsBridgeError, _extensions_bridge

    monkeypatch.setattr(extensions, "__version__", "9.1.0")
    with pytest.raises(ExtensionsBridgeError, match=r"onnxruntime-extensions 9\.1\.0 is not a "):
        _extensions_bridge()


@pytest.mark.parametrize(
    ("owner", "attribute", "named"),
    [
        ("onnxruntime_extensions._ocos", "_on_pyop_invocation", "_ocos._on_pyop_invocation"),
        ("onnxruntime_extensions.Opdef", "_odlist", "Opdef._odlist"),
        ("onnxruntime_extensions.PyCustomOpDef", "install_hooker", "PyCustomOpDef.install_hooker"),
    ],
)
def test_a_moved_extensions_internal_is_refused_by_name(
    extensions, monkeypatch, owner, attribute, named
):
    from axial_deploy.op.ort import BUFFER_HOOK_VERSIONS, ExtensionsBridgeError, _extensions_bridge

    monkeypatch.setattr(extensions, "__version__", BUFFER_HOOK_VERSIONS[0] + "0")
    monkeypatch.delattr(f"{owner}.{attribute}")
    with pytest.raises(ExtensionsBridgeError, match=rf"bridge has moved \(no {named}\)") as info:
        _extensions_bridge()
    assert isinstance(info.value, AxialDeployError)


def test_without_the_bridge_the_hook_warns_and_is_not_installed(extensions, monkeypatch):
    from axial_deploy.op.ort import _install_buffer_hook

    monkeypatch.setattr(extensions, "__version__", "9.1.0")
    with pytest.warns(RuntimeWarning, match="same results, slower"):
        assert _install_buffer_hook() is False


def test_polygraphy_cuda_runtime_through_the_public_handle():
    """The real wrapper where a CUDA runtime library is installed (no GPU needed): our own
    function objects over Polygraphy's handle, which keeps its own."""
    pytest.importorskip("polygraphy", reason="needs polygraphy")
    from polygraphy import cuda as pg_cuda

    from axial_deploy.engine.cuda.polygraphy_binding import cuda_error_name, polygraphy_cudart

    try:
        lib = polygraphy_cudart()
    except OSError as error:
        pytest.skip(f"no CUDA runtime library for Polygraphy to load: {error}")
    assert cuda_error_name(lib, 100) == "cudaErrorNoDevice (100)"
    handle = pg_cuda.wrapper().handle
    assert handle.cudaGetErrorName.restype is ctypes.c_int  # Polygraphy's untouched
    with pytest.raises(AttributeError):
        lib.cudaNoSuchFunction  # noqa: B018 (a missing symbol fails like ctypes' own lookup)


def test_a_polygraphy_wrapper_without_its_handle_is_refused(monkeypatch):
    polygraphy = pytest.importorskip("polygraphy", reason="needs polygraphy")
    from polygraphy import cuda as pg_cuda

    from axial_deploy.engine.cuda.polygraphy_binding import EngineError, polygraphy_cudart

    class MovedWrapper:  # what a Polygraphy whose wrapper dropped `handle` would give
        pass

    monkeypatch.setattr(pg_cuda, "wrapper", MovedWrapper)
    with pytest.raises(EngineError, match=rf"Polygraphy {polygraphy.__version__}'s CUDA wrapper"):
        polygraphy_cudart()
