"""Small helpers over ONNX graphs (onnx.GraphProto / NodeProto), written once for every stage.

- `attribute(node, name)`: an attribute's Python value, or a default;
- `label(node)`: how reports and option lists name a node (its name, else its first output);
- `used_names(graph)` and `unique_name(base, taken)`: new tensor / node names that clash with
  nothing in the graph;
- `producers(graph)` / `consumers(graph)`: which node writes, and which nodes read, each tensor;
- `drop_unused_initializers(graph)`: what a pass that rewires inputs leaves behind;
- `tensor_dims`, `graph_input_dims`, `is_static` and `static_shape`: shapes with symbolic axes
  (an int for a fixed axis, the symbol for a dynamic one) and their resolution to a static shape
  where a dynamic axis 0 is the batch. Callers turn `SymbolicDimensionError` into their own
  error, since only they know the fix to suggest (re-export, --shapes, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from numbers import Integral
from typing import Any

import onnx

from axial_deploy.errors import AxialDeployError

Dim = Any  # an int for a fixed axis; a symbol (str), None or a negative int for a dynamic one


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of `node`'s attribute `name` (ints, floats, lists, tensors), else `default`."""
    for entry in node.attribute:
        if entry.name == name:
            return onnx.helper.get_attribute_value(entry)
    return default


def label(node: onnx.NodeProto) -> str:
    """A node's name, or its first output when it has none (exporters leave some unnamed)."""
    return node.name or node.output[0]


def used_names(graph: onnx.GraphProto) -> set[str]:
    """Every node, tensor, initializer and value_info name of `graph` (what a new name must
    avoid)."""
    taken = {name for node in graph.node for name in [node.name, *node.input, *node.output]}
    taken |= {info.name for info in [*graph.input, *graph.output, *graph.value_info]}
    taken |= {tensor.name for tensor in graph.initializer}
    return taken


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_1`, `base_2`, ... : the first not in `taken`, which it is added to."""
    name, number = base, 1
    while name in taken:
        name, number = f"{base}_{number}", number + 1
    taken.add(name)
    return name


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node that writes it (graph inputs and initializers have none)."""
    return {name: node for node in graph.node for name in node.output}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it, in graph order (once per input slot)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove the initializers no node reads any more (e.g. FP32 weights replaced by copies)."""
    used = {name for node in graph.node for name in node.input}
    remaining = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(remaining)


def replace_nodes(graph: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> None:
    """Make `nodes` (copies are taken) the graph's node list, then drop unread initializers."""
    nodes = list(nodes)
    del graph.node[:]
    graph.node.extend(nodes)
    drop_unused_initializers(graph)


# --------------------------------------------------------------------------- symbolic shapes


class SymbolicDimensionError(AxialDeployError, ValueError):
    """A dynamic axis other than the batch that a static shape needs a size for."""

    def __init__(self, axis: int, dim: Dim) -> None:
        super().__init__(f"axis {axis} is symbolic ({dim!r})")
        self.axis = axis
        self.dim = dim


def tensor_dims(info: onnx.ValueInfoProto) -> list[int | str]:
    """The dims of a typed tensor: ints where fixed, the symbol ('?' when unnamed) where not."""
    return [
        dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?")
        for dim in info.type.tensor_type.shape.dim
    ]


def graph_input_dims(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Name -> dims (see `tensor_dims`) of the graph's real inputs (initializers excluded)."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return {
        info.name: tensor_dims(info) for info in model.graph.input if info.name not in initializers
    }


def is_static(dim: Dim) -> bool:
    """A fixed axis: an int >= 0 (ONNX Runtime gives None or a symbol, TensorRT -1, otherwise)."""
    return isinstance(dim, Integral) and not isinstance(dim, bool) and dim >= 0


def static_shape(
    dims: Sequence[Dim], batch: int, sizes: Sequence[int] | None = None
) -> tuple[int, ...]:
    """`dims` with a dynamic axis 0 set to `batch` and any other dynamic axis taken from
    `sizes` (e.g. an optimization profile's opt shape); raises SymbolicDimensionError for a
    dynamic axis other than 0 when `sizes` is None."""
    shape = []
    for axis, dim in enumerate(dims):
        if is_static(dim):
            shape.append(int(dim))
        elif axis == 0:
            shape.append(batch)
        elif sizes is not None:
            shape.append(int(sizes[axis]))
        else:
            raise SymbolicDimensionError(axis, dim)
    return tuple(shape)
