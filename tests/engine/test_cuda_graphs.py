"""CUDA graphs in `runtime.Engine`: one graph per input shape and I/O addresses, each on its own
execution context, at most GRAPH_CACHE_SIZE (least recently used dropped), never replayed for
other shapes or addresses.

CUDA and TensorRT cannot run here, so the runner's own code (`_TrtRunner.infer`, its capture
and release) runs against a minimal double of what it calls: a CUDA binding whose capture
records the enqueues issued while capturing and whose launch replays them into a log of what
"ran", and TensorRT contexts that remember their shapes and addresses. The real path runs on a
GPU in tests/engine/test_runtime.py (gpu, tensorrt)."""

from __future__ import annotations

import numpy as np
import pytest

from axial_deploy.engine.runtime import (
    GRAPH_CACHE_SIZE,
    CapturedGraph,
    EngineError,
    GraphCache,
    TensorMeta,
    _TrtRunner,
    graph_key,
)


class FakeCuda:
    """The binding calls `_TrtRunner.infer` makes; capture and launch as CUDA does them: work
    issued while capturing is recorded, not run; a launch runs what was recorded. A recorded
    enqueue runs with its context's shapes and addresses as they are at the launch: a graph
    replayed after its context was set up for another shape runs stale, as on a GPU, where
    the launches read state the context keeps."""

    def __init__(self):
        self.capturing: list | None = None
        self.ran: list[tuple] = []  # (context id, shapes, addresses) of each executed enqueue
        self.freed: list = []
        self.syncs = 0

    def issue(self, context: FakeContext) -> None:
        if self.capturing is not None:
            self.capturing.append(context)  # the launch reads the context's state when it runs
        else:
            self.ran.append(context.state())

    def begin_capture(self, stream):
        assert self.capturing is None, "capture already running"
        self.capturing = []

    def end_capture(self, stream):
        graph, self.capturing = tuple(self.capturing), None
        return graph

    def launch(self, graph, stream):
        assert graph not in self.freed, "launch of a freed graph"
        self.ran.extend(context.state() for context in graph)

    def free_graph(self, graph):
        self.freed.append(graph)

    def record(self, event, stream): ...
    def h2d(self, device, host, nbytes, stream): ...
    def d2h(self, host, device, nbytes, stream): ...
    def elapsed_ms(self, start, end):
        return 0.0

    def sync(self, stream):
        self.syncs += 1

    def handle(self, stream):
        return 0


class FakeContext:
    """A TensorRT execution context as far as the runner uses it: shapes, addresses, enqueue."""

    count = 0

    def __init__(self, cuda: FakeCuda):
        FakeContext.count += 1
        self.id, self.cuda = FakeContext.count, cuda
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def get_tensor_address(self, name):
        return self.addresses[name]

    def get_tensor_shape(self, name):  # output "y" has the input's shape
        return self.shapes["x"]

    def state(self) -> tuple:
        return self.id, dict(self.shapes), dict(self.addresses)

    def execute_async_v3(self, stream):
        self.cuda.issue(self)
        return True


class FakeEngine:
    def __init__(self, cuda):
        self.cuda, self.contexts = cuda, []

    def create_execution_context(self):
        self.contexts.append(FakeContext(self.cuda))
        return self.contexts[-1]


def fake_runner(capacity: int = GRAPH_CACHE_SIZE) -> _TrtRunner:
    """A `_TrtRunner` on the doubles: input x [1..4, 3] and output y, buffers at 0x1000/0x2000."""
    runner = _TrtRunner.__new__(_TrtRunner)
    cuda = FakeCuda()
    runner.cuda, runner.backend, runner.stream, runner.events = cuda, "tensorrt", object(), [0] * 4
    runner.engine = FakeEngine(cuda)
    runner.context = runner.engine.create_execution_context()
    runner.inputs = [TensorMeta("x", np.dtype(np.float32), (-1, 3), ((1, 3), (2, 3), (4, 3)))]
    runner.outputs = [TensorMeta("y", np.dtype(np.float32), (-1, 3))]
    runner.device = {"x": 0x1000, "y": 0x2000}
    runner.host = {name: np.zeros(12, np.float32) for name in runner.device}
    for name, address in runner.device.items():
        runner.context.set_tensor_address(name, address)
    runner.graphs = None
    runner.enable_graphs(capacity)
    return runner


def run(runner: _TrtRunner, batch: int) -> dict:
    """One inference; returns what actually executed for it (must be exactly one enqueue at
    its own shape and the runner's addresses)."""
    before = len(runner.cuda.ran)
    out = runner.infer({"x": np.ones((batch, 3), np.float32)})
    assert out["y"].shape == (batch, 3)
    executed = runner.cuda.ran[before:]
    expected = {"x": (batch, 3)}
    addresses = {name: runner.context.get_tensor_address(name) for name in runner.device}
    # a first capture at a shape runs it once plainly, then replays: every execution matches
    assert executed and all(s == expected and a == addresses for _, s, a in executed), executed
    return executed[-1]


def test_each_shape_gets_its_own_graph_and_context_and_is_never_replayed_stale():
    runner = fake_runner()
    first = run(runner, 2)
    assert runner.graphs.captures == 1
    assert run(runner, 2) == first  # a replay: no new capture
    assert runner.graphs.captures == 1
    other = run(runner, 3)  # another shape: captured anew, on another context
    assert runner.graphs.captures == 2 and other[0] != first[0]
    assert run(runner, 2) == first and run(runner, 3) == other  # each replays its own
    assert runner.graphs.captures == 2
    assert runner.context.id not in {first[0], other[0]}  # the plain context is never captured


def test_a_moved_buffer_means_a_new_capture():
    runner = fake_runner()
    run(runner, 2)
    runner.device["y"] = 0x3000
    runner.context.set_tensor_address("y", 0x3000)
    executed = run(runner, 2)
    assert executed[2]["y"] == 0x3000 and runner.graphs.captures == 2


def test_the_cache_is_bounded_and_drops_the_least_recently_used():
    runner = fake_runner(capacity=2)
    run(runner, 1)
    run(runner, 2)
    run(runner, 1)  # 1 is now the most recently used
    run(runner, 3)  # drops 2
    assert runner.graphs.captures == 3 and len(runner.graphs) == 2
    (freed,) = runner.cuda.freed
    assert {context.shapes["x"] for context in freed} == {(2, 3)}
    assert runner.cuda.syncs >= 1  # the stream is idle before a graph is freed
    run(runner, 1)  # still cached
    assert runner.graphs.captures == 3
    run(runner, 2)  # dropped before: captured again
    assert runner.graphs.captures == 4


def test_a_failed_capture_ends_the_capture_and_caches_nothing():
    runner = fake_runner()

    def failing_enqueue(shapes, context=None):
        if runner.cuda.capturing is not None:
            raise EngineError("execute_async_v3 failed")
        return {"y": shapes["x"]}

    runner._enqueue = failing_enqueue
    with pytest.raises(EngineError, match="execute_async_v3"):
        runner.infer({"x": np.ones((2, 3), np.float32)})
    assert runner.cuda.capturing is None and len(runner.graphs) == 0


def test_graph_cache_alone():
    made, released = [], []

    def capture(key):
        made.append(key)
        return CapturedGraph(f"graph{len(made)}", None, {})

    cache = GraphCache(capture, released.append, capacity=2)
    a, b, c = (graph_key({"x": (n, 3)}, {"x": 1}) for n in (1, 2, 3))
    assert cache.get(a).graph == "graph1" and cache.get(a).graph == "graph1"
    cache.get(b)
    cache.get(c)  # a is the least recently used
    assert a not in cache and [g.graph for g in released] == ["graph1"]
    cache.clear()
    assert len(cache) == 0 and {g.graph for g in released} == {"graph1", "graph2", "graph3"}
    assert graph_key({"x": (1, 3)}, {"x": 1}) != graph_key({"x": (1, 3)}, {"x": 2})
    with pytest.raises(EngineError, match="at least 1"):
        GraphCache(capture, released.append, capacity=0)
