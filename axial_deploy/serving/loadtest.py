"""A bounded closed-loop load generator, reported in perf_analyzer's terms.

`concurrency` client threads each send their share of `requests` back to back (a closed loop,
as perf_analyzer's --concurrency-range), each on its own connection; the run stops at the
request count or at `time_limit_s`, whichever comes first. The report gives throughput
(infer/sec: requests x batch / wall time), client latency p50/p90/p95/p99 and average in
microseconds, errors with their first messages, and the server's batch-size histogram over
the run (the difference of Triton's statistics before and after).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from axial_deploy.serving import ServeError
from axial_deploy.serving.client import TritonClient, batch_histogram

MAX_REQUESTS = 1_000_000  # a guard against typos, not a tuning knob


@dataclass
class LoadReport:
    model: str
    url: str
    concurrency: int
    requests_asked: int
    requests_sent: int
    errors: int
    seconds: float
    throughput_infer_per_sec: float
    latency_us: dict[str, float]
    batch_histogram: dict[int, int]
    error_samples: list[str] = field(default_factory=list)
    stopped_by_time_limit: bool = False

    def to_json(self) -> dict:
        data = asdict(self)
        data["batch_histogram"] = {str(k): v for k, v in self.batch_histogram.items()}
        return data

    def summary(self) -> str:
        lat = self.latency_us
        lines = [
            f"*** Measurement: model {self.model} at {self.url}, concurrency {self.concurrency}",
            f"  Request count: {self.requests_sent} ({self.errors} errors) in {self.seconds:.2f} s"
            + (" (stopped by the time limit)" if self.stopped_by_time_limit else ""),
            f"  Throughput: {self.throughput_infer_per_sec:.1f} infer/sec",
        ]
        if lat:
            lines.append(
                f"  Latency: avg {lat['avg']:.0f} usec, p50 {lat['p50']:.0f} usec, "
                f"p90 {lat['p90']:.0f} usec, p95 {lat['p95']:.0f} usec, p99 {lat['p99']:.0f} usec"
            )
        histogram = ", ".join(f"{k}: {v}" for k, v in sorted(self.batch_histogram.items()))
        lines.append(f"  Server batch sizes (size: executions): {histogram or 'none recorded'}")
        lines += [f"  error: {text}" for text in self.error_samples]
        return "\n".join(lines)


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {}
    us = np.asarray(latencies_s) * 1e6
    values = {f"p{q}": float(np.percentile(us, q)) for q in (50, 90, 95, 99)}
    return {"avg": float(us.mean()), **values, "max": float(us.max())}


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _worker(url, model, feed, count, deadline, timeout_s, allow_remote, tally, check) -> None:
    done = 0
    try:
        with TritonClient(url, allow_remote=allow_remote, timeout_s=timeout_s) as client:
            while done < count and time.monotonic() <= deadline:
                _one_request(client, model, feed, tally, check)
                done += 1
    except Exception as error:  # e.g. a client that cannot connect: its unsent requests fail
        with tally.lock:
            tally.errors += [f"{type(error).__name__}: {error}"[:300]] * (count - done)


def _one_request(client, model, feed, tally: _Tally, check) -> None:
    start = time.perf_counter()
    try:
        outputs = client.infer(model, feed)
        if check is not None:
            check(outputs)
    except Exception as error:  # counted and reported, never fatal to the run
        with tally.lock:
            tally.errors.append(f"{type(error).__name__}: {error}"[:300])
        return
    elapsed = time.perf_counter() - start
    with tally.lock:
        tally.latencies.append(elapsed)


def run_load(
    url: str,
    model: str,
    feed: dict[str, np.ndarray],
    *,
    concurrency: int = 1,
    requests: int = 100,
    time_limit_s: float = 60.0,
    timeout_s: float = 30.0,
    allow_remote: bool = False,
    check=None,
) -> LoadReport:
    """Sends `requests` inferences of `feed` from `concurrency` threads; `check(outputs)` may
    raise to count a wrong answer as an error."""
    if not 1 <= concurrency <= 256:
        raise ServeError(f"--concurrency must be 1..256, got {concurrency}")
    if not 1 <= requests <= MAX_REQUESTS or requests < concurrency:
        raise ServeError(f"--requests must be {concurrency}..{MAX_REQUESTS}, got {requests}")
    if time_limit_s <= 0:
        raise ServeError(f"--time-limit must be positive, got {time_limit_s}")
    with TritonClient(url, allow_remote=allow_remote, timeout_s=timeout_s) as client:
        if not client.ready(model):
            raise ServeError(f"model {model!r} is not ready at {url}")
        before = batch_histogram(client.statistics(model))
    tally = _Tally()
    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    started = time.perf_counter()
    deadline = time.monotonic() + time_limit_s
    args = (url, model, feed)
    threads = [
        threading.Thread(
            target=_worker,
            args=(*args, share, deadline, timeout_s, allow_remote, tally, check),
            daemon=True,
        )
        for share in shares
    ]
    for thread in threads:
        thread.start()
    for thread in threads:  # bounded: each request times out, the loop stops at the deadline
        thread.join(time_limit_s + timeout_s + 5)
    seconds = time.perf_counter() - started
    try:  # a server that was told to stop during the run may refuse new connections
        with TritonClient(url, allow_remote=allow_remote, timeout_s=timeout_s) as client:
            after = batch_histogram(client.statistics(model))
    except ServeError:
        after = dict(before)
    sent = len(tally.latencies) + len(tally.errors)
    batch = _batch_of(feed)
    return LoadReport(
        model=model,
        url=url,
        concurrency=concurrency,
        requests_asked=requests,
        requests_sent=sent,
        errors=len(tally.errors),
        seconds=seconds,
        throughput_infer_per_sec=len(tally.latencies) * batch / seconds if seconds else 0.0,
        latency_us=percentiles(tally.latencies),
        batch_histogram={k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)},
        error_samples=sorted(set(tally.errors))[:5],
        stopped_by_time_limit=sent < requests and time.monotonic() >= deadline,
    )


def _batch_of(feed: dict[str, np.ndarray]) -> int:
    """Inferences per request: the first axis of the (batched) input."""
    first = next(iter(feed.values()))
    return int(first.shape[0]) if first.ndim else 1


def random_feed(metadata: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """One request of N(0, 1) values (uint8 noise for images) at the model's shapes: dynamic
    axes are 1 for the batch axis and 64 elsewhere."""
    from axial_deploy.serving.client import TRITON_DTYPES

    numpy_of = {v: k for k, v in TRITON_DTYPES.items()}
    generator = np.random.default_rng(seed)
    feed = {}
    for meta in metadata.get("inputs", []):
        dims = [int(d) for d in meta["shape"]]
        shape = [1 if i == 0 and d < 0 else (64 if d < 0 else d) for i, d in enumerate(dims)]
        dtype = np.dtype(numpy_of.get(meta["datatype"], "float32"))
        if dtype == np.uint8:
            feed[meta["name"]] = generator.integers(0, 256, shape, dtype=np.uint8)
        else:
            feed[meta["name"]] = generator.standard_normal(shape).astype(dtype)
    return feed
