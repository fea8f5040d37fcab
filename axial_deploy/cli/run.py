"""Run an engine or ONNX model on a .npy array or an image.

Runs ENGINE (TensorRT, manifest-checked) or ONNX (ONNX Runtime) on one input: a .npy array, or
an image preprocessed as the model expects (resized to the model's input size; panoptic models
are recognized by their semantic/center/offset outputs). Prints each output's shape and range;
--output saves them as .npz.

--save-inputs / --save-outputs write the fed input and the outputs as Polygraphy JSON, so
Polygraphy can replay the run elsewhere and compare, e.g. this ONNX Runtime run (AxialAttention
through the reference op) against the engine on the GPU:
  axial-deploy run model.axial.onnx --input x.png --save-inputs in.json --save-outputs ref.json
  LD_PRELOAD=$(axial-deploy plugin-path --format preload) \
      polygraphy run model.engine --trt --plugins LIB --load-inputs in.json --load-outputs ref.json
(Polygraphy opens --plugins before it imports TensorRT: the preload puts TensorRT first, so the
plugin registers when opened; docs/plugin-loading.md.)
"""

from __future__ import annotations

import argparse

from axial_deploy.cli.args import Files, add_cuda_binding, add_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="ENGINE|ONNX")
    parser.add_argument("--input", required=True, metavar="FILE.npy|IMAGE")
    add_output(parser, "save the outputs here (.npz)", required=False, metavar="FILE.npz")
    parser.add_argument(
        "--save-inputs",
        metavar="FILE.json",
        help="save the fed input as Polygraphy input data (for `polygraphy run --load-inputs`)",
    )
    parser.add_argument(
        "--save-outputs",
        metavar="FILE.json",
        help="save the outputs as Polygraphy RunResults (for `polygraphy run --load-outputs`)",
    )
    add_cuda_binding(parser)


def files(args: argparse.Namespace) -> Files:
    """Every file this command reads and writes, checked before any work (`cli.main`)."""
    written = {"-o": args.output, "--save-inputs": args.save_inputs,
               "--save-outputs": args.save_outputs}  # fmt: skip
    return Files({"ENGINE|ONNX": args.model, "--input": args.input}, written)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from axial_deploy.artifacts import atomic_output
    from axial_deploy.engine.runtime import Engine
    from axial_deploy.inputs import InputFileError, read_input
    from axial_deploy.task import task_of_outputs

    with Engine(args.model, cuda=args.cuda) as engine:
        if len(engine.inputs) != 1:
            raise InputFileError(f"run feeds one input; {args.model} has {len(engine.inputs)}")
        meta = engine.inputs[0]
        task = task_of_outputs(m.name for m in engine.outputs)
        array = read_input(args.input, tuple(meta.shape), task, args.model)
        outputs = engine.infer({meta.name: array})
        backend, seconds = engine.backend, engine.last_inference_time
        print(f"{backend}: {seconds * 1e3:.2f} ms")
    for name, value in outputs.items():
        print(
            f"  {name:<12} {list(value.shape)} {value.dtype} "
            f"min {value.min():.4g} max {value.max():.4g} mean {value.mean():.4g}"
        )
    if args.output:
        with atomic_output(args.output) as tmp, open(tmp, "wb") as stream:
            np.savez(stream, **outputs)
        print(f"wrote {args.output}")
    # what the model was fed, in its input dtype (Polygraphy checks dtypes when it replays)
    fed = {meta.name: array.astype(meta.dtype, copy=False)}
    _save_for_polygraphy(args, fed, outputs, backend, seconds)
    return 0


def _save_for_polygraphy(args, feed: dict, outputs: dict, backend: str, seconds: float) -> None:
    from axial_deploy.inputs import save_polygraphy_inputs, save_polygraphy_outputs

    if args.save_inputs:
        print(f"wrote {save_polygraphy_inputs(args.save_inputs, [feed])} (Polygraphy inputs)")
    if args.save_outputs:
        # the runner's name says where the reference came from in Polygraphy's comparison
        path = save_polygraphy_outputs(
            args.save_outputs, [outputs], f"axial-deploy-{backend}", seconds
        )
        print(f"wrote {path} (Polygraphy RunResults)")
