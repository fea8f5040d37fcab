"""Stage 2: rewrite every axial-attention layer of an ONNX graph into one AxialAttention node.

A layer is found from what it computes, not from node names or one exporter's op patterns. The
stage (`stage.rewrite`) runs four steps, one module each:

1. *Locate* (`locate`): every Softmax is a candidate. Walking back from it (bounded to the
   layer: each path stops at its first constant-weight projection), the first 1x1 Conv is the
   qkv projection; its input, walked back through reshapes, is the layer input X.
   Walking forward, the first Transpose that every path from the Softmax to the graph outputs
   goes through is the layer output Y (stride pooling stays after it).
2. *Extract by probing* (`probe`, running graph pieces from `pieces`): the piece of graph from
   the qkv tensor to the Softmax input (logits) is linear in q and k plus one bilinear q.k
   term, and the piece from (qkv, attention weights) to Y is linear in v and the weights plus
   a bias. ONNX Runtime runs both pieces on probe inputs, which reveals each qkv channel's role
   (query, key, value) and head (position-free layers by a q.k probe: zero tables), the
   relative tables, the logit scales, the value scales and the output bias: the operator
   contract's constants, whatever ops the exporter chose (Einsum or MatMul, Gather,
   BatchNormalization folded or not).
3. *Verify* (`verify`): the original layer (ONNX Runtime) and the extracted Conv + operator
   (`axial_attention_op`) must agree on a random input (fp32 max rel err < 1e-4); otherwise
   the layer is left intact and reported with the reason. A graph is never silently wrong.
4. *Replace* (`replace`, onnx-graphsurgeon): X -> 1x1 Conv (blocked Q|K|V) -> AxialAttention
   -> Y as a registered graph function, one cleanup/toposort removes what became dead, and
   `layout` folds the transposes of the cut into the exporter's own.

`records` holds what is reported: one `LayerRecord` per Softmax in a `RewriteReport`.
"""

from __future__ import annotations

from .layout import LINES_TO_NCHW, SWAP_HW, normalize_layout
from .locate import RESHAPE_OPS, GraphIndex
from .pieces import PieceExtractor, SubModel
from .probe import Extracted, extract_layer
from .records import LayerRecord, RewriteError, RewriteReport
from .stage import PROBE_LINES, VERIFY_LINES, load_model, rewrite, rewrite_file, save_model
from .verify import VERIFY_RTOL, verify_layer

__all__ = [
    "LINES_TO_NCHW",
    "PROBE_LINES",
    "RESHAPE_OPS",
    "SWAP_HW",
    "VERIFY_LINES",
    "VERIFY_RTOL",
    "Extracted",
    "GraphIndex",
    "LayerRecord",
    "PieceExtractor",
    "RewriteError",
    "RewriteReport",
    "SubModel",
    "extract_layer",
    "load_model",
    "normalize_layout",
    "rewrite",
    "rewrite_file",
    "save_model",
    "verify_layer",
]
