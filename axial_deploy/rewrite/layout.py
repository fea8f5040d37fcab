"""Layout: fold the transposes around rewritten layers into the exporter's own.

The rewrite cuts each layer at its lines [N, other, C, L] and views them as NCHW
[N, C, other, L] (`LINES_TO_NCHW`, its own inverse), so the node attends along axis 3.
`normalize_layout` then folds chains of Transposes (dropping identities) and moves each
AxialAttention node from an H/W-swapped view onto the NCHW tensor itself (flipping its axis),
so that a rewritten graph holds no more transposes than the exporter's and the node reads real
NCHW tensors.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

SWAP_HW = [0, 1, 3, 2]
LINES_TO_NCHW = [0, 2, 1, 3]  # [N, other, C, L] <-> [N, C, other, L] (its own inverse)


def normalize_layout(graph: gs.Graph, op_type: str) -> None:
    """Fold transposes and move every `op_type` node onto the NCHW tensor (see module doc)."""
    # One node at a time, in graph order, folding after each move: a swap moved out of one
    # layer then cancels the swap in front of the next instead of being moved again.
    fold_transposes(graph)
    moved = True
    while moved:
        graph.toposort()
        moved = any(move_onto_nchw(graph, node, op_type) for node in graph.nodes)
        if moved:
            graph.cleanup()
            fold_transposes(graph)


def fold_transposes(graph: gs.Graph) -> None:
    """Compose consecutive Transposes and bypass identity ones, until nothing changes."""
    changed = True
    while changed:
        changed = _compose_chains(graph)
        changed = _bypass_identities(graph) or changed
        graph.cleanup()


def _compose_chains(graph: gs.Graph) -> bool:
    """Transpose(Transpose(x)) -> one Transpose of x with the composed permutation."""
    changed = False
    for node in list(graph.nodes):
        if node.op != "Transpose" or "perm" not in node.attrs or not node.inputs:
            continue
        source = node.inputs[0]
        if len(source.inputs) == 1 and source.inputs[0].op == "Transpose":
            previous = source.inputs[0]
            if "perm" not in previous.attrs:
                continue
            node.attrs["perm"] = [previous.attrs["perm"][i] for i in node.attrs["perm"]]
            node.inputs[0] = previous.inputs[0]
            changed = True
    return changed


def _bypass_identities(graph: gs.Graph) -> bool:
    """Consumers of an identity Transpose read its input (unless it is a graph output)."""
    changed = False
    for node in list(graph.nodes):
        perm = list(node.attrs.get("perm", [])) if node.op == "Transpose" else []
        if not perm or perm != list(range(len(perm))):
            continue
        out, source = node.outputs[0], node.inputs[0]
        if out in graph.outputs:
            continue
        for consumer in list(out.outputs):
            for position, tensor in enumerate(consumer.inputs):
                if tensor is out:
                    consumer.inputs[position] = source
        node.outputs.clear()
        changed = True
    return changed


def move_onto_nchw(graph: gs.Graph, node: gs.Node, op_type: str) -> bool:
    """X -> Transpose(SWAP_HW) -> Conv -> node -> Y becomes X -> Conv -> node (axis flipped) ->
    Transpose(SWAP_HW) -> Y; False (nothing changed) where the node does not sit so."""
    if node.op != op_type or len(node.inputs[0].inputs) != 1:
        return False
    qkv = node.inputs[0]
    conv = qkv.inputs[0]
    if conv.op != "Conv" or len(qkv.outputs) != 1:
        return False
    x = conv.inputs[0]
    if len(x.inputs) != 1 or x.inputs[0].op != "Transpose" or len(x.outputs) != 1:
        return False
    swap = x.inputs[0]
    if list(swap.attrs.get("perm", [])) != SWAP_HW:
        return False
    conv.inputs[0] = swap.inputs[0]
    node.attrs["axis"] = 5 - int(node.attrs["axis"])  # 2 <-> 3
    y = node.outputs[0]
    swapped = None if y.shape is None else [*y.shape[:2], y.shape[3], y.shape[2]]
    nchw = gs.Variable(f"{node.name}/nchw_output", dtype=y.dtype, shape=swapped)
    node.outputs.clear()
    node.outputs.append(nchw)
    graph.nodes.append(gs.Node("Transpose", f"{node.name}/swap_hw", {"perm": SWAP_HW}, [nchw], [y]))
    return True
