"""A small Triton client over tritonclient (HTTP or gRPC): infer, metadata, statistics.

URLs: `http://HOST:PORT` (default scheme) or `grpc://HOST:PORT`. Loopback hosts only unless
`allow_remote=True`: these commands send traffic, and a mistyped address should fail here,
not load someone else's server.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from axial_deploy.extras import require
from axial_deploy.serving import ServeError

# numpy dtype -> Triton's wire type names (tritonclient.utils.np_to_triton_dtype, inlined so
# that parsing needs no tritonclient)
TRITON_DTYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "int8": "INT8",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "object": "BYTES",
}


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # "http" | "grpc"
    host: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_url(url: str, allow_remote: bool = False) -> Endpoint:
    """'http://127.0.0.1:8000', 'grpc://localhost:8001' or '127.0.0.1:8000' (HTTP)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "grpc"):
        raise ServeError(f"--url {url!r}: scheme must be http:// or grpc://")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ServeError(f"--url {url!r} needs a host and a port, e.g. http://127.0.0.1:8000")
    if not allow_remote and not is_loopback(parts.hostname):
        raise ServeError(
            f"--url {url!r} is not a loopback address: pass --allow-remote to send requests to "
            "another machine"
        )
    return Endpoint(parts.scheme, parts.hostname, port)


class TritonClient:
    """One connection (not thread-safe: one client per thread)."""

    def __init__(self, url: str, *, allow_remote: bool = False, timeout_s: float = 30.0):
        self.endpoint = parse_url(url, allow_remote)
        if self.endpoint.protocol == "http":
            self.module = require("tritonclient.http", "the HTTP client")
            self.client = self.module.InferenceServerClient(
                self.endpoint.address, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            self.module = require("tritonclient.grpc", "the gRPC client")
            self.client = self.module.InferenceServerClient(self.endpoint.address)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def ready(self, model: str | None = None) -> bool:
        try:
            if model is None:
                return bool(self.client.is_server_ready())
            return bool(self.client.is_model_ready(model))
        except Exception:  # connection refused while starting: not ready yet
            return False

    def _call(self, what: str, function, *args, **kwargs):
        """Runs a tritonclient call; the server's refusal or an unreachable server becomes a
        one-line ServeError (the server's own message kept)."""
        utils = require("tritonclient.utils", "the client")
        try:
            return function(*args, **kwargs)
        except utils.InferenceServerException as error:
            raise ServeError(f"{what}: {error.message() or error}") from error
        except Exception as error:  # transport failures: refused, reset, closed, timed out
            raise ServeError(
                f"{what}: cannot reach {self.endpoint.address} ({error}): is the server running?"
            ) from error

    def metadata(self, model: str) -> dict:
        kwargs = {"as_json": True} if self.endpoint.protocol == "grpc" else {}
        return self._call(f"metadata of {model!r}", self.client.get_model_metadata, model, **kwargs)

    def statistics(self, model: str) -> dict:
        """Triton's statistics of `model` (its first version), including `batch_stats`."""
        kwargs = {"as_json": True} if self.endpoint.protocol == "grpc" else {}
        stats = self._call("statistics", self.client.get_inference_statistics, model, **kwargs)
        entries = stats.get("model_stats", [])
        return entries[0] if entries else {}

    def infer(self, model: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = []
        for name, array in feed.items():
            array = np.ascontiguousarray(array)
            kind = "object" if array.dtype.kind in "OSU" else array.dtype.name
            if kind not in TRITON_DTYPES:
                raise ServeError(f"input {name!r}: dtype {array.dtype} has no Triton type")
            tensor = self.module.InferInput(name, list(array.shape), TRITON_DTYPES[kind])
            tensor.set_data_from_numpy(array.astype(object) if kind == "object" else array)
            inputs.append(tensor)
        kwargs = {"client_timeout": self.timeout_s} if self.endpoint.protocol == "grpc" else {}
        response = self._call(f"infer {model!r}", self.client.infer, model, inputs, **kwargs)
        names = [o["name"] for o in self._outputs(response)]
        return {name: response.as_numpy(name) for name in names}

    def _outputs(self, response) -> list[dict]:
        if self.endpoint.protocol == "grpc":
            return response.get_response(as_json=True).get("outputs", [])
        return response.get_response().get("outputs", [])


def batch_histogram(stats: dict) -> dict[int, int]:
    """batch size -> executions, from a model's statistics (Triton's `batch_stats`)."""
    histogram = {}
    for entry in stats.get("batch_stats", []):
        count = int(entry.get("compute_infer", {}).get("count", 0))
        if count:
            histogram[int(entry["batch_size"])] = count
    return histogram


def input_for(path: str | Path, metadata: dict) -> dict[str, np.ndarray]:
    """The feed for one request from a file: a .npy array (sent as is, a batch axis added when
    the model batches and the array lacks one) or an image (uint8 pixels for an image model,
    else preprocessed to the model's fixed height and width)."""
    from axial_deploy.inputs import read_arrays
    from axial_deploy.models.preprocess import open_image

    path = Path(path)
    if not path.is_file():
        raise ServeError(f"input file {path} not found")
    inputs = metadata.get("inputs", [])
    if len(inputs) != 1:
        raise ServeError(f"infer sends one input; the model has {len(inputs)}")
    meta = inputs[0]
    dims = [int(d) for d in meta["shape"]]
    if path.suffix == ".npy":
        array = read_arrays(path)[0]  # the one .npy reader: numeric, no pickles, size checked
        if len(dims) == array.ndim + 1:
            array = array[None]
        return {meta["name"]: array}
    with open_image(path) as image:  # the one image reader: size bounded, errors named
        rgb = np.asarray(image.convert("RGB"))
    if meta["datatype"] == "UINT8":  # an image model (NAME_panoptic): raw pixels
        return {meta["name"]: rgb[None] if len(dims) == 4 else rgb}
    from axial_deploy.serving.pipeline import preprocess_image

    if len(dims) != 4 or min(dims[2:]) < 1:
        raise ServeError(f"input {meta['name']!r} {dims} has no fixed size: send a .npy array")
    return {meta["name"]: preprocess_image(rgb, (dims[2], dims[3]))[None]}


def describe(outputs: dict[str, np.ndarray]) -> list[str]:
    """One line per output: shape, dtype and range (or the JSON of segments_info)."""
    lines = []
    for name, value in outputs.items():
        if value.dtype == object:
            first = value.reshape(-1)[0]
            text = first.decode() if isinstance(first, bytes) else str(first)
            lines.append(f"  {name:<14} {len(json.loads(text))} segments: {text[:200]}")
        else:
            lines.append(
                f"  {name:<14} {list(value.shape)} {value.dtype} "
                f"min {value.min():.4g} max {value.max():.4g}"
            )
    return lines
