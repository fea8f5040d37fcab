"""`axial-deploy triton-repo`: a Triton model repository for a GPU fleet on the NGC image.

Layout of OUT (mounted read-only into every Triton replica):

    OUT/models/NAME/config.pbtxt, OUT/models/NAME/1/model.plan   (or model.onnx)
    OUT/models/NAME_preprocess, NAME_postprocess   (Python backend, with --panoptic)
    OUT/models/NAME_panoptic                       (ensemble: raw image -> segments)
    OUT/plugins/libaxial_attention_plugin.so       (outside models/: Triton would take a
                                                    folder there for a model)
    OUT/launch.sh, OUT/repository.json             (the exact launch line; what made it)

An engine's `config.pbtxt` comes from its manifest: tensor names, dtypes and dims, the max
batch from the optimization profile, dynamic batching and instance groups. The manifest's
TensorRT version picks the NGC Triton release whose TensorRT matches (engines load only in
the TensorRT that built them). Where no recorded release matches, it stops and says what to look
up rather than picking an image that cannot load the engine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axial_deploy.artifacts import replace_folder
from axial_deploy.serving import ServeError
from axial_deploy.serving.pipeline import PanopticSettings

# NGC Triton container `nvcr.io/nvidia/tritonserver:<release>-py3` -> what is inside.
#
# Sources (each fact was looked up, none is from memory):
#   RELEASE_NOTES: the release's page, "Driver Requirements": "Release YY.MM is based on CUDA ..."
#     (https://docs.nvidia.com/deeplearning/triton-inference-server/release-notes/rel-YY-MM.html).
#   The Triton server and TensorRT versions of 24.05 .. 25.06 were recorded in this table before
#   the CUDA 13 releases; their TensorRT versions agree with the "TensorRT version" column of the
#   trtllm-python-py3 images of the same releases where those carry the same TensorRT
#   (https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/introduction/compatibility.html).
#   For 25.07 on, the TensorRT inside the py3 image is listed only in the Frameworks Support Matrix
#   (SUPPORT_MATRIX), which could not be read when this table was extended: those entries say
#   None rather than guess, and `triton-repo` then asks the user to read it there.
# A release is listed here from the first one with TensorRT 10 up to NEWEST_RELEASE, the newest
# release with a published release-notes page when the table was last extended;
# tests/serving/test_triton_repo.py checks that no month in between is missing.
RELEASE_NOTES = (
    "https://docs.nvidia.com/deeplearning/triton-inference-server/release-notes/rel-{yy}-{mm}.html"
)
SUPPORT_MATRIX = "https://docs.nvidia.com/deeplearning/frameworks/support-matrix/index.html"
NEWEST_RELEASE = "26.10"


@dataclass(frozen=True)
class TritonRelease:
    server: str | None  # Triton server version (None: not found in the sources)
    tensorrt: str | None  # TensorRT in the py3 image (None: not found in the sources)
    cuda: str | None  # the CUDA the release is based on (None: page not found)


TRITON_RELEASES: dict[str, TritonRelease] = {
    "24.05": TritonRelease("2.46.0", "10.0.1.6", None),
    "24.06": TritonRelease("2.47.0", "10.1.0.27", "12.5.0.23"),
    "24.07": TritonRelease("2.48.0", "10.2.0.19", None),
    "24.08": TritonRelease("2.49.0", "10.3.0.26", None),
    "24.09": TritonRelease("2.50.0", "10.4.0.26", None),
    "24.10": TritonRelease("2.51.0", "10.5.0.18", "12.6.2"),
    "24.11": TritonRelease("2.52.0", "10.6.0.26", None),
    "24.12": TritonRelease("2.53.0", "10.7.0.23", None),
    "25.01": TritonRelease("2.54.0", "10.8.0.43", None),
    "25.02": TritonRelease("2.55.0", "10.8.0.43", None),
    "25.03": TritonRelease("2.56.0", "10.9.0.34", "12.8.1.012"),
    "25.04": TritonRelease("2.57.0", "10.9.0.34", "12.9.0"),
    "25.05": TritonRelease("2.58.0", "10.10.0.31", None),
    "25.06": TritonRelease("2.59.0", "10.11.0.33", "12.9.1.010"),
    "25.07": TritonRelease(None, None, None),
    # 25.08 is based on CUDA 13 (13.0.0.044); 25.06 was on 12.9.1, 25.07's page was not found.
    "25.08": TritonRelease(None, None, "13.0.0.044"),
    "25.09": TritonRelease(None, None, None),
    "25.10": TritonRelease(None, None, "13.0.2.006"),
    "25.11": TritonRelease(None, None, None),
    "25.12": TritonRelease(None, None, "13.1.0.36"),
    "26.01": TritonRelease(None, None, None),
    "26.02": TritonRelease(None, None, "13.1.1"),
    "26.03": TritonRelease(None, None, None),
    "26.04": TritonRelease(None, None, "13.2.1"),
    "26.05": TritonRelease(None, None, None),
    "26.06": TritonRelease(None, None, "13.3.0"),
    "26.07": TritonRelease(None, None, "13.3.1"),
    "26.08": TritonRelease(None, None, None),
    "26.09": TritonRelease(None, None, "13.4.1"),
    "26.10": TritonRelease(None, None, "13.4.3.001"),
}
IMAGE = "nvcr.io/nvidia/tritonserver:{release}-py3"
MOUNT = "/axial"  # where OUT is mounted in the container
LAUNCH_OUT = 'OUT="$(cd "$(dirname "$0")" && pwd)"'

TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "object": "TYPE_STRING",
}


@dataclass
class RepoOptions:
    name: str = "axial"
    max_batch: int | None = None  # None: the engine profile's max batch (ONNX: 8)
    queue_delay_us: int = 2000
    preferred_batch: list[int] = field(default_factory=list)
    instances: int = 1
    kind: str = "KIND_GPU"
    release: str | None = None  # NGC release; None: the one matching the engine's TensorRT
    plugins: str | None = None  # plugin library (default: the manifest's)
    ort_op_library: str | None = None  # ONNX models with AxialAttention nodes
    panoptic: PanopticSettings | None = None
    force: bool = False


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # numpy name
    dims: tuple[int, ...]  # without the batch axis when batching; -1 dynamic


@dataclass
class RepoReport:
    out: Path
    models: list[str]
    release: str
    launch: str
    warnings: list[str]


def release_for(tensorrt_version: str) -> tuple[str | None, list[str]]:
    """(the newest NGC release recorded with exactly this TensorRT, or None; the releases
    recorded with the same TensorRT major.minor, for the message)."""
    recorded = {r: t.tensorrt for r, t in TRITON_RELEASES.items() if t.tensorrt}
    exact = [r for r, trt in recorded.items() if trt == tensorrt_version]
    if exact:
        return exact[-1], exact
    prefix = ".".join(tensorrt_version.split(".")[:2]) + "."
    return None, [r for r, trt in recorded.items() if trt.startswith(prefix)]


def _release_key(release: str) -> tuple[int, int] | None:
    """(year, month) of a release name 'YY.MM', or None when it is not one."""
    parts = release.split(".")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        return None
    year, month = int(parts[0]), int(parts[1])
    return (year, month) if 1 <= month <= 12 else None


def no_release_message(tensorrt_version: str, near: list[str]) -> str:
    """Why no image is picked for an engine's TensorRT, and what to check: never a guess."""
    unknown = [r for r, t in TRITON_RELEASES.items() if t.tensorrt is None]
    newest = max(r for r, t in TRITON_RELEASES.items() if t.tensorrt)
    span = f"{unknown[0]}..{unknown[-1]}" if unknown else "none"
    hint = f" (same TensorRT minor: {', '.join(near)}, a different patch build)" if near else ""
    return (
        f"no NGC Triton release recorded in axial-deploy ships TensorRT {tensorrt_version}"
        f"{hint}, and engines load only in the TensorRT version that built them. The TensorRT "
        f"inside releases {span} is not recorded here: look up the release whose TensorRT is "
        f"{tensorrt_version} in the Frameworks Support Matrix ({SUPPORT_MATRIX}) and pass "
        "--release YY.MM, or rebuild the engine with the TensorRT of a recorded release "
        f"(newest recorded: {newest} with TensorRT {TRITON_RELEASES[newest].tensorrt})"
    )


def check_release(release: str) -> str | None:
    """Refuses a --release that is not a release name or is older than the table; returns a
    warning for one newer than the table (its contents are not recorded), else None."""
    key = _release_key(release)
    if key is None or (release not in TRITON_RELEASES and release < min(TRITON_RELEASES)):
        known = f"{min(TRITON_RELEASES)}..{max(TRITON_RELEASES)}"
        raise ServeError(
            f"--release {release}: unknown NGC release (known: {known}, as YY.MM; newer ones are "
            "accepted with a warning)"
        )
    if release not in TRITON_RELEASES:
        return (
            f"Triton {release} is newer than axial-deploy's table ({max(TRITON_RELEASES)}): check "
            f"that its TensorRT is the engine's in the Frameworks Support Matrix ({SUPPORT_MATRIX})"
        )
    return None


def _dims(values) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def tensor_block(kind: str, tensors: list[Tensor]) -> str:
    """`input [...]` / `output [...]` in protobuf text format."""
    entries = []
    for t in tensors:
        if t.dtype not in TRITON_TYPES:
            raise ServeError(f"tensor {t.name!r}: dtype {t.dtype} has no Triton type")
        dims = t.dims or (1,)  # Triton needs at least one dim; a scalar travels as [1]
        entries.append(
            f'  {{\n    name: "{t.name}"\n    data_type: {TRITON_TYPES[t.dtype]}\n'
            f"    dims: {_dims(dims)}\n  }}"
        )
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def batching_block(options: RepoOptions, max_batch: int) -> str:
    if max_batch < 1:
        return ""
    preferred = [b for b in options.preferred_batch if b <= max_batch]
    lines = ["dynamic_batching {"]
    if preferred:
        lines.append(f"  preferred_batch_size: {_dims(preferred)}")
    lines.append(f"  max_queue_delay_microseconds: {int(options.queue_delay_us)}")
    return "\n".join([*lines, "}\n"])


def instance_block(count: int, kind: str) -> str:
    return f"instance_group [\n  {{\n    count: {int(count)}\n    kind: {kind}\n  }}\n]\n"


def model_config(
    name: str,
    platform_or_backend: str,
    max_batch: int,
    inputs: list[Tensor],
    outputs: list[Tensor],
    extra: str = "",
) -> str:
    key = "backend" if platform_or_backend == "python" else "platform"
    head = f'name: "{name}"\n{key}: "{platform_or_backend}"\nmax_batch_size: {int(max_batch)}\n'
    return head + tensor_block("input", inputs) + tensor_block("output", outputs) + extra


def parameters_block(values: dict[str, str]) -> str:
    items = [
        f"  {{\n    key: {_quote(k)}\n    value: {{ string_value: {_quote(v)} }}\n  }}"
        for k, v in values.items()
    ]
    return "parameters [\n" + ",\n".join(items) + "\n]\n" if items else ""


def _quote(text: str) -> str:
    """A protobuf text-format string literal (C escapes; UTF-8 kept as is)."""
    return json.dumps(text, ensure_ascii=False)


# ------------------------------------------------------------------------------------------
# The network model: from an engine's manifest, or from an ONNX graph
# ------------------------------------------------------------------------------------------


def engine_tensors(manifest) -> tuple[list[Tensor], list[Tensor], int]:
    """(inputs, outputs, max batch) of an engine: batched along axis 0 when every input's
    first axis is dynamic, the max batch being the smallest profile maximum of those axes."""
    inputs, outputs = manifest.inputs, manifest.outputs
    batching = all(t.shape and t.shape[0] == -1 for t in inputs)
    max_batch = 0
    if batching:
        if not manifest.profiles:
            raise ServeError("the engine's manifest has no optimization profile for its batch axis")
        profile = manifest.profiles[0]
        max_batch = min(int(profile[t.name][2][0]) for t in inputs)

    def cut(shape: list[int]) -> tuple[int, ...]:
        return tuple(shape[1:] if batching else shape)

    return (
        [Tensor(t.name, t.dtype, cut(t.shape)) for t in inputs],
        [Tensor(t.name, t.dtype, cut(t.shape)) for t in outputs],
        max_batch,
    )


def onnx_tensors(model, max_batch: int) -> tuple[list[Tensor], list[Tensor], int]:
    """(inputs, outputs, max batch) of an ONNX graph; symbolic dims become -1."""
    from onnx.helper import tensor_dtype_to_np_dtype

    initializers = {i.name for i in model.graph.initializer}

    def read(values) -> list[tuple[str, str, list[int]]]:
        found = []
        for v in values:
            if v.name in initializers:
                continue
            tensor_type = v.type.tensor_type
            dtype = np.dtype(tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
            found.append((v.name, dtype, dims))
        return found

    inputs, outputs = read(model.graph.input), read(model.graph.output)
    batching = max_batch > 0 and all(dims and dims[0] == -1 for _, _, dims in inputs)
    cut = (lambda dims: tuple(dims[1:])) if batching else tuple
    return (
        [Tensor(n, t, cut(d)) for n, t, d in inputs],
        [Tensor(n, t, cut(d)) for n, t, d in outputs],
        max_batch if batching else 0,
    )


def network_config(name, platform, inputs, outputs, max_batch, options, extra="") -> str:
    body = batching_block(options, max_batch) + instance_block(options.instances, options.kind)
    filename = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx"}[platform]
    body += f'default_model_filename: "{filename}"\n' + extra
    return model_config(name, platform, max_batch, inputs, outputs, body)


# ------------------------------------------------------------------------------------------
# Panoptic: Python-backend pre/post-processing and an ensemble taking raw images
# ------------------------------------------------------------------------------------------

PYTHON_MODEL = '''"""{name}: a Triton Python-backend model written by `axial-deploy triton-repo`.

Runs axial_deploy.serving.pipeline ({step}); the image needs axial-deploy installed
(see deploy/triton/Dockerfile). Settings come from config.pbtxt's parameters.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from axial_deploy.serving.pipeline import PanopticSettings, PanopticStep, preprocess_image


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {{k: v["string_value"] for k, v in config.get("parameters", {{}}).items()}}
        self.step = params["step"]
        self.network_input = params["network_input"]
        self.input_dtype = np.dtype(params["input_dtype"])
        self.hw = tuple(json.loads(params["input_hw"]))
        self.outputs = json.loads(params["network_outputs"])
        if self.step == "postprocess":
            self.post = PanopticStep(PanopticSettings.from_json(json.loads(params["panoptic"])))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                run = self._preprocess if self.step == "preprocess" else self._postprocess
                responses.append(pb_utils.InferenceResponse(output_tensors=run(request)))
            except Exception as error:  # a bad request fails alone, the others go on
                message = f"{{self.step}}: {{type(error).__name__}}: {{error}}"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))
        return responses

    def _preprocess(self, request):
        images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
        pixels = np.stack([preprocess_image(image, self.hw) for image in images])
        sizes = np.array([image.shape[:2] for image in images], dtype=np.int32)
        return [
            pb_utils.Tensor(self.network_input, pixels.astype(self.input_dtype)),
            pb_utils.Tensor("ORIGINAL_HW", sizes),
        ]

    def _postprocess(self, request):
        def read(name):
            return pb_utils.get_input_tensor_by_name(request, name).as_numpy()

        maps = [read(self.outputs[key]) for key in ("semantic", "center", "offset")]
        results = self.post(*maps, read("ORIGINAL_HW"))
        segments = np.array([[json.dumps(s).encode()] for _, s in results], dtype=np.object_)
        return [
            pb_utils.Tensor("PANOPTIC", np.stack([ids for ids, _ in results])),
            pb_utils.Tensor("SEGMENTS_INFO", segments),
        ]
'''

IMAGE_INPUT = Tensor("IMAGE", "uint8", (-1, -1, 3))
SIZE_TENSOR = Tensor("ORIGINAL_HW", "int32", (2,))
PANOPTIC_OUTPUTS = [Tensor("PANOPTIC", "int32", (-1, -1)), Tensor("SEGMENTS_INFO", "object", (1,))]


def _panoptic_parts(inputs: list[Tensor], outputs: list[Tensor]) -> tuple[Tensor, dict]:
    """The network's image input (fixed H, W) and its semantic/center/offset outputs."""
    by_name = {t.name: t for t in outputs}
    if len(inputs) != 1 or {"semantic", "center", "offset"} - set(by_name):
        raise ServeError(
            "--panoptic needs a panoptic model (one image input; outputs semantic, center, "
            f"offset); this one has inputs {[t.name for t in inputs]}, outputs {sorted(by_name)}"
        )
    image = inputs[0]
    if len(image.dims) < 2 or min(image.dims[-2:]) < 1:
        raise ServeError(
            f"--panoptic resizes images to the model's height and width, but input "
            f"{image.name!r} {list(image.dims)} has none fixed: export at a fixed size"
        )
    return image, by_name


def python_configs(name, inputs, outputs, max_batch, options) -> dict[str, str]:
    """config.pbtxt of NAME_preprocess and NAME_postprocess."""
    image, by_name = _panoptic_parts(inputs, outputs)
    shared = {
        "network_input": image.name,
        "input_dtype": image.dtype,
        "input_hw": json.dumps(list(image.dims[-2:])),
        "network_outputs": json.dumps({k: k for k in ("semantic", "center", "offset")}),
    }
    cpu = instance_block(options.instances, "KIND_CPU")
    pre = parameters_block({"step": "preprocess", **shared}) + cpu
    post_params = {"step": "postprocess", **shared}
    post_params["panoptic"] = json.dumps(options.panoptic.to_json())
    post = parameters_block(post_params) + cpu
    maps = [by_name[k] for k in ("semantic", "center", "offset")]
    return {
        f"{name}_preprocess": model_config(
            f"{name}_preprocess", "python", max_batch, [IMAGE_INPUT], [image, SIZE_TENSOR], pre
        ),
        f"{name}_postprocess": model_config(
            f"{name}_postprocess", "python", max_batch, [*maps, SIZE_TENSOR], PANOPTIC_OUTPUTS, post
        ),
    }


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
    maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
    return f'    {{\n      model_name: "{model}"\n      model_version: -1\n      ' + (
        "\n      ".join(maps) + "\n    }"
    )


def ensemble_config(name: str, image: Tensor, max_batch: int) -> str:
    """NAME_panoptic: IMAGE -> preprocess -> NAME -> postprocess -> PANOPTIC, SEGMENTS_INFO."""
    maps = {k: k for k in ("semantic", "center", "offset")}
    steps = [
        _step(
            f"{name}_preprocess",
            {"IMAGE": "IMAGE"},
            {image.name: "pixels", "ORIGINAL_HW": "original_hw"},
        ),
        _step(name, {image.name: "pixels"}, maps),
        _step(
            f"{name}_postprocess",
            {**maps, "ORIGINAL_HW": "original_hw"},
            {"PANOPTIC": "PANOPTIC", "SEGMENTS_INFO": "SEGMENTS_INFO"},
        ),
    ]
    scheduling = "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
    return model_config(
        f"{name}_panoptic", "ensemble", max_batch, [IMAGE_INPUT], PANOPTIC_OUTPUTS, scheduling
    )


# ------------------------------------------------------------------------------------------
# Writing the repository
# ------------------------------------------------------------------------------------------


@dataclass
class _Network:
    platform: str
    source: Path
    inputs: list[Tensor]
    outputs: list[Tensor]
    max_batch: int
    release: str
    plugin: Path | None  # copied to OUT/plugins/
    extra: str  # more config.pbtxt (model_operations)
    warnings: list[str]
    manifest: dict | None
    external_data: list[Path] = field(default_factory=list)  # beside an .onnx


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _engine_network(path: Path, options: RepoOptions) -> _Network:
    from dataclasses import asdict

    from axial_deploy.engine.manifest import read_manifest, version_fits

    manifest = read_manifest(path)
    if manifest.backend != "tensorrt":
        raise ServeError(
            f"{path} was built with {manifest.backend}; Triton's TensorRT backend loads TensorRT "
            "engines only: rebuild with --backend tensorrt, or serve the .onnx file"
        )
    inputs, outputs, max_batch = engine_tensors(manifest)
    if options.max_batch is not None:
        if options.max_batch > max_batch:
            raise ServeError(
                f"--max-batch {options.max_batch} exceeds the engine's profile (max batch "
                f"{max_batch}): rebuild with a larger profile or lower --max-batch"
            )
        max_batch = options.max_batch if max_batch else 0
    warnings = []
    matched, near = release_for(manifest.tensorrt_version)
    if matched is None and manifest.version_compatible:
        # a version-compatible engine also loads in a later TensorRT: the newest recorded fit
        fitting = [r for r, t in TRITON_RELEASES.items() if version_fits(manifest, t.tensorrt)]
        matched = fitting[-1] if fitting else None
    if options.release is None and matched is None:
        raise ServeError(no_release_message(manifest.tensorrt_version, near))
    release = options.release or matched
    newer = check_release(release)
    shipped = TRITON_RELEASES[release].tensorrt if release in TRITON_RELEASES else None
    if newer:
        warnings.append(newer)
    elif shipped is None:
        warnings.append(
            f"the TensorRT inside Triton {release} is not recorded in axial-deploy: check that it "
            f"is {manifest.tensorrt_version} (the engine's) in the Frameworks Support Matrix "
            f"({SUPPORT_MATRIX}); engines load only in the TensorRT version that built them"
        )
    elif not version_fits(manifest, shipped):
        warnings.append(
            f"the engine was built with TensorRT {manifest.tensorrt_version} but Triton {release} "
            f"ships TensorRT {shipped}: it will not load there. "
            + (f"Use --release {matched} " if matched else "Rebuild the engine ")
            + "(engines load only in the TensorRT version that built them)"
        )
    plugin = None
    if manifest.plugin_sha256 and not manifest.plugin_serialized:
        plugin = Path(options.plugins or manifest.plugin_library or "")
        if not plugin.is_file():
            raise ServeError(
                f"the engine needs the AxialAttention plugin library ({manifest.plugin_library}) "
                "and it is not there: pass --plugins PATH"
            )
        if _sha256(plugin) != manifest.plugin_sha256:
            raise ServeError(
                f"plugin {plugin} differs from the one the engine was built with (sha256 "
                f"{manifest.plugin_sha256[:12]}...): pass the build's library with --plugins"
            )
    return _Network(
        "tensorrt_plan", path, inputs, outputs, max_batch, release, plugin, "", warnings,
        asdict(manifest),
    )  # fmt: skip


def _onnx_network(path: Path, options: RepoOptions) -> _Network:
    from axial_deploy.artifacts import check_external_data, load_onnx
    from axial_deploy.engine.build import axial_attention_nodes

    model = load_onnx(path, ServeError, load_external_data=False)
    external_data = check_external_data(model, path, ServeError)
    inputs, outputs, max_batch = onnx_tensors(
        model, 8 if options.max_batch is None else options.max_batch
    )
    plugin, extra = None, ""
    if axial_attention_nodes(model):
        if not options.ort_op_library:
            raise ServeError(
                f"{path} has AxialAttention nodes, which Triton's ONNX Runtime backend runs only "
                "through an ONNX Runtime custom-op library (RegisterCustomOps), which axial-deploy "
                "does not ship: serve the graph from before `rewrite` (standard ops), build a "
                "TensorRT engine, or pass --ort-op-library PATH with such a library of your own"
            )
        plugin = Path(options.ort_op_library)
        if not plugin.is_file():
            raise ServeError(f"--ort-op-library {plugin} not found")
        extra = f'model_operations {{\n  op_library_filename: "{MOUNT}/plugins/{plugin.name}"\n}}\n'
    release = options.release or max(TRITON_RELEASES)
    return _Network(
        "onnxruntime_onnx",
        path,
        inputs,
        outputs,
        max_batch,
        release,
        plugin,
        extra,
        [],
        None,
        external_data,
    )


def _server_version(release: str) -> str | None:
    entry = TRITON_RELEASES.get(release)
    return entry.server if entry else None


def launch_line(
    release: str, plugin: Path | None, panoptic: bool, platform: str, version_compatible=False
) -> str:
    """The docker command that serves OUT (mounted at /axial) on GPUs, HTTP 8000, gRPC 8001,
    metrics 8002. Panoptic repositories need axial-deploy in the image (deploy/triton).

    A version-compatible engine (`build --serialize-plugin`) carries its plugin and needs no
    plugins=; Triton's TensorRT backend runs its host code only with `version-compatible=true`
    (https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/tensorrt_backend/README.html)."""
    image = f"axial-deploy-triton:{release}" if panoptic else IMAGE.format(release=release)
    command = [
        "docker run --rm --gpus all --shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002",
        f'-v "$OUT":{MOUNT}:ro {image}',
        f"tritonserver --model-repository={MOUNT}/models",
    ]
    if plugin is not None and platform == "tensorrt_plan":
        command.append(f"--backend-config=tensorrt,plugins={MOUNT}/plugins/{plugin.name}")
    if version_compatible and platform == "tensorrt_plan":
        command.append("--backend-config=tensorrt,version-compatible=true")
    return " \\\n  ".join(command)


def _write_models(root: Path, network: _Network, options: RepoOptions) -> list[str]:
    name, models = options.name, root / "models"
    folder = models / name / "1"
    folder.mkdir(parents=True)
    filename = "model.plan" if network.platform == "tensorrt_plan" else "model.onnx"
    shutil.copyfile(network.source, folder / filename)
    for location in network.external_data:  # weights an .onnx file keeps beside it
        (folder / location).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(network.source.parent / location, folder / location)
    config = network_config(
        name, network.platform, network.inputs, network.outputs, network.max_batch, options,
        network.extra,
    )  # fmt: skip
    (models / name / "config.pbtxt").write_text(config)
    written = [name]
    if options.panoptic is not None:
        configs = python_configs(name, network.inputs, network.outputs, network.max_batch, options)
        for model, text in configs.items():
            (models / model / "1").mkdir(parents=True)
            (models / model / "config.pbtxt").write_text(text)
            step = model.rsplit("_", 1)[1]
            source = PYTHON_MODEL.format(name=model, step=step)
            (models / model / "1" / "model.py").write_text(source)
        image = _panoptic_parts(network.inputs, network.outputs)[0]
        (models / f"{name}_panoptic" / "1").mkdir(parents=True)
        ensemble = ensemble_config(name, image, network.max_batch)
        (models / f"{name}_panoptic" / "config.pbtxt").write_text(ensemble)
        written += [*configs, f"{name}_panoptic"]
    return written


def write_repository(model: str | Path, out: str | Path, options: RepoOptions) -> RepoReport:
    """Writes the repository for an engine (.engine/.plan + manifest) or an .onnx file to
    `out`, atomically: it appears complete or not at all (an existing `out` is replaced only
    with `options.force`)."""
    path, out = Path(model), Path(out)
    if not path.is_file():
        raise ServeError(f"model file {path} not found")
    if out.exists() and not options.force:
        raise ServeError(f"{out} exists: pass --force to replace it")
    if options.release is not None:
        check_release(options.release)  # refuses a malformed or too old one before any work
    if path.suffix in (".engine", ".plan"):
        network = _engine_network(path, options)
    elif path.suffix == ".onnx":
        network = _onnx_network(path, options)
    else:
        raise ServeError(f"{path}: give a .engine/.plan (with its manifest) or an .onnx file")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        models = _write_models(staging, network, options)
        if network.plugin is not None:
            (staging / "plugins").mkdir()
            shutil.copyfile(network.plugin, staging / "plugins" / network.plugin.name)
        version_compatible = bool(network.manifest and network.manifest["version_compatible"])
        launch = launch_line(
            network.release, network.plugin, options.panoptic is not None, network.platform,
            version_compatible,
        )  # fmt: skip
        script = (
            f"#!/bin/sh\n# Serves this repository on this host's GPUs.\n{LAUNCH_OUT}\n{launch}\n"
        )
        (staging / "launch.sh").write_text(script)
        (staging / "launch.sh").chmod(0o755)
        record = {
            "source": str(path), "platform": network.platform, "release": network.release,
            "triton": _server_version(network.release), "models": models,
            "warnings": network.warnings, "manifest": network.manifest,
        }  # fmt: skip
        (staging / "repository.json").write_text(json.dumps(record, indent=2) + "\n")
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RepoReport(out, models, network.release, launch, network.warnings)
