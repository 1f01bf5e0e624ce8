"""A bounded load run against the local stack: N concurrent clients for M seconds.

It starts the stack itself - ``--backends`` processing backends (``watercolor
process``) and one API (``watercolor api``, gunicorn) on loopback ports, as
``./run.sh`` does - or drives one already running (``--url``). Each client
sends a seeded mix of good and bad requests over a keep-alive connection:

* good: one raw image (``POST /v1/upscale``), a JSON batch of three (``POST /``)
  and a multipart pair answered as a zip, on real photo crops, with a fast
  model and ``lanczos``;
* bad: a truncated JPEG, text named ``.png``, a pixel bomb, an output over the
  cap, an invalid scale, an unknown model, an empty body, a wrong Content-Type
  and an unknown route.

Every kind has the statuses it may get; anything else is a failure - except
503 with ``Retry-After``, the documented backpressure, which is counted on its
own. The report gives requests and images per second, latency percentiles
(p50/p90/p99, overall and per kind), the statuses seen, and the resident
memory (VmRSS, and VmHWM: the peak) of the API and every backend before and
after the run (after a warm-up that loads the models, so a leak shows as
growth).

    .venv/bin/python bench/load.py                   # 8 clients, 60 s, 2 backends
    .venv/bin/python bench/load.py --quick           # 3 clients, 6 s (what the test runs)
    .venv/bin/python bench/load.py --clients 16 --seconds 120 --json load.json

Exit status: 0 when there was no failure, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
#: The model of the "good" requests that go through a network (the fastest one).
FAST_MODEL = "realesr-animevideov3"


# --- the local stack ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB (from /proc/PID/status); {} once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class Service:
    """``python -m watercolor COMMAND`` as a subprocess with WTC_* settings; output to a log file."""

    def __init__(self, command: str, log_path: Path, port: int, settings: dict[str, object]) -> None:
        self.command = command
        self.log_path = log_path
        self.port = port
        self.settings = dict(settings)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WTC_")}
        env.update({f"WTC_{k.upper()}": str(v) for k, v in self.settings.items()})
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "watercolor", self.command], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self.wait_ready()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.log_path.name} exited: {self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def memory(self) -> dict[str, int]:
        return memory(self.pid) if self.alive() else {}

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def wait_ready(self, timeout: float = 120) -> None:
        raise NotImplementedError


class BackendService(Service):
    """A real processing backend on a loopback port."""

    def __init__(self, log_dir: Path, **settings: object) -> None:
        port = free_port()
        values = {"process_host": "127.0.0.1", "process_port": port, "threads": 1, "log_level": "INFO",
                  "grace_period": 30, **settings}
        super().__init__("process", Path(log_dir) / f"backend-{port}.log", port, values)
        self.address = ("127.0.0.1", port)
        self.label = f"127.0.0.1:{port}"

    def ping(self, timeout: float = 2.0):
        from watercolor import protocol, transport

        secret = str(self.settings.get("shared_secret") or "").encode() or None
        return transport.exchange(self.address, protocol.ping("load"), secret=secret, io_timeout=timeout,
                                  connect_timeout=timeout)

    def wait_ready(self, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.check_alive()
            try:
                if self.ping().header.get("protocol"):
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.1)
        raise RuntimeError(f"backend {self.label} did not start")


class ApiService(Service):
    """A real API (gunicorn: a master and one worker process) on a loopback port."""

    def __init__(self, log_dir: Path, backends: Sequence[str], port: int | None = None,
                 **settings: object) -> None:
        port = port or free_port()
        values = {"api_host": "127.0.0.1", "api_port": port, "process_backends": ",".join(backends),
                  "log_level": "INFO", **settings}
        super().__init__("api", Path(log_dir) / f"api-{port}.log", port, values)
        self.url = f"http://127.0.0.1:{port}"

    def kill(self) -> None:
        """SIGKILL the worker and the master at once, as a container runtime kills a pod."""
        if self.alive():
            for worker in children(self.pid):
                try:
                    os.kill(worker, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        super().kill()

    def memory(self) -> dict[str, int]:
        """The worker's memory (it holds the app); the master's is small and constant."""
        if not self.alive():
            return {}
        workers = children(self.pid)
        return memory(workers[0]) if workers else {}

    def get(self, path: str, timeout: float = 5.0, headers: dict[str, str] | None = None
            ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def wait_ready(self, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.check_alive()
            try:
                if self.get("/healthz", timeout=2)[0] == 200 and children(self.pid):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the API did not start")


class LocalStack:
    """``backends`` processing backends and one API in front of them, like ``./run.sh``."""

    def __init__(self, log_dir: Path, backends: int = 2, *, backend_settings: dict | None = None,
                 api_settings: dict | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.backends = [BackendService(self.log_dir, **(backend_settings or {})) for _ in range(backends)]
        self.api = ApiService(self.log_dir, [b.label for b in self.backends], **(api_settings or {}))

    def __enter__(self) -> LocalStack:
        try:
            for backend in self.backends:
                backend.start()
            self.api.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.api.url

    def stop(self) -> None:
        self.api.stop()
        for backend in self.backends:
            backend.stop()

    def memory(self) -> dict[str, dict[str, int]]:
        out = {"api": self.api.memory()}
        for n, backend in enumerate(self.backends, 1):
            out[f"backend{n}"] = backend.memory()
        return out


# --- the requests ------------------------------------------------------------------------------------


def _photo_crops() -> list[bytes]:
    import skimage.data

    crops = [skimage.data.astronaut()[40:88, 180:244], skimage.data.coffee()[100:156, 200:256],
             skimage.data.chelsea()[50:90, 100:172]]
    out = []
    for array in crops:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def _jpeg(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix: how to send it and the statuses it may get."""

    name: str
    good: bool
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    expect: frozenset[int]
    images: int = 1
    weight: int = 1


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request_mix(api_key: str | None = None) -> list[Kind]:
    crops = _photo_crops()
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    png = {**auth, "Content-Type": "image/png"}
    jpeg = _jpeg(crops[0])
    batch = json.dumps({"id": "load", "model": "lanczos", "scale": 3,
                        "images": [base64.b64encode(c).decode() for c in crops]}).encode()
    zip_body, zip_type = _multipart([("cup.png", crops[1]), ("cat.png", crops[2])])
    ok = frozenset({200})
    return [
        Kind("raw-fast-model", True, "POST", f"/v1/upscale?model={FAST_MODEL}&scale=2", crops[0], png, ok,
             weight=3),
        Kind("raw-lanczos-jpeg", True, "POST", "/v1/upscale?model=lanczos&scale=4&format=jpeg", jpeg,
             {**auth, "Content-Type": "image/jpeg"}, ok, weight=2),
        Kind("json-batch-3", True, "POST", "/", batch, {**auth, "Content-Type": "application/json"}, ok,
             images=3, weight=2),
        Kind("multipart-zip-2", True, "POST", f"/v1/upscale?model={FAST_MODEL}&scale=2", zip_body,
             {**auth, "Content-Type": zip_type}, ok, images=2),
        Kind("truncated-jpeg", False, "POST", "/v1/upscale?model=lanczos", jpeg[: len(jpeg) * 2 // 3],
             {**auth, "Content-Type": "image/jpeg"}, frozenset({422})),
        Kind("text-named-png", False, "POST", "/v1/upscale?model=lanczos", b"not a picture\n" * 50, png,
             frozenset({415})),
        Kind("pixel-bomb", False, "POST", "/v1/upscale?model=lanczos", _png_declaring(60000, 60000), png,
             frozenset({422})),
        Kind("output-over-cap", False, "POST", "/v1/upscale?model=lanczos&scale=8",
             _png_declaring(2000, 2000), png, frozenset({422})),
        Kind("scale-99", False, "POST", "/v1/upscale?scale=99", crops[0], png, frozenset({422})),
        Kind("unknown-model", False, "POST", "/v1/upscale?model=nope", crops[0], png, frozenset({422})),
        Kind("empty-body", False, "POST", "/v1/upscale?model=lanczos", b"", png, frozenset({400})),
        Kind("wrong-content-type", False, "POST", "/v1/upscale", b"hello",
             {**auth, "Content-Type": "text/plain"}, frozenset({415})),
        Kind("unknown-route", False, "GET", "/v1/nowhere", b"", auth, frozenset({404})),
    ]


# --- the run -----------------------------------------------------------------------------------------


@dataclass
class Sample:
    kind: str
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    seconds: float
    problem: str = ""


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)


def _check(kind: Kind, status: int, headers: http.client.HTTPMessage, body: bytes) -> str:
    """"" when the answer is acceptable; "backpressure" for a documented 503; else the problem."""
    if status == 503 and headers.get("Retry-After"):
        return "backpressure"
    if status not in kind.expect:
        return f"status {status}: {body[:200]!r}"
    if status >= 400:
        try:
            error = json.loads(body)["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str)
        except Exception:  # noqa: BLE001 - any shape problem is the finding
            return f"error body is not {{'error': {{code, message}}}}: {body[:200]!r}"
    elif kind.name == "json-batch-3":
        answer = json.loads(body)
        if len(answer.get("images") or []) != kind.images or not all(answer["images"]) or "errors" in answer:
            return "batch answer lacks images"
    elif not body:
        return "empty result"
    return ""


def client_loop(url: str, kinds: list[Kind], until: float, results: Results, seed: int,
                timeout: float) -> None:
    """One client: weighted random kinds, one keep-alive connection, reconnecting when it drops."""
    rng = random.Random(seed)
    weighted = [k for k in kinds for _ in range(k.weight)]
    parts = urlsplit(url)
    connection: http.client.HTTPConnection | None = None
    while time.monotonic() < until:
        kind = rng.choice(weighted)
        if connection is None:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        started = time.monotonic()
        try:
            connection.request(kind.method, kind.path, body=kind.body or None, headers=kind.headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            results.add(Sample(kind.name, 0, time.monotonic() - started, f"no answer: {exc!r}"))
            connection.close()
            connection = None
            time.sleep(0.05)
            continue
        elapsed = time.monotonic() - started
        problem = _check(kind, response.status, response.msg, body)
        results.add(Sample(kind.name, response.status, elapsed, problem))
        if response.will_close:
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


def run_load(url: str, kinds: list[Kind], *, clients: int, seconds: float, seed: int = 1,
             timeout: float = 120, during: Callable[[float], None] | None = None) -> Results:
    """``clients`` threads for ``seconds``; ``during(elapsed)`` is called every 0.1 s meanwhile."""
    results = Results()
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=client_loop, args=(url, kinds, until, results, seed + n, timeout),
                                daemon=True, name=f"load-{n}") for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if during is not None:
            during(time.monotonic() - started)
        time.sleep(0.1)
    return results


def warm_up(url: str, kinds: list[Kind], rounds: int = 2) -> None:
    """Send every kind a few times, so models are loaded and caches filled before memory is measured."""
    parts = urlsplit(url)
    for _ in range(rounds):
        for kind in kinds:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            try:
                connection.request(kind.method, kind.path, body=kind.body or None, headers=kind.headers)
                connection.getresponse().read()
            finally:
                connection.close()


# --- the report --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def summarise(results: Results, kinds: list[Kind], seconds: float, clients: int,
              memory_before: dict, memory_after: dict) -> dict:
    by_name = {k.name: k for k in kinds}
    samples = results.samples
    failures = [s for s in samples if s.problem and s.problem != "backpressure"]
    answered = [s for s in samples if not s.problem]
    good = [s for s in answered if by_name[s.kind].good]
    per_kind = {}
    grouped: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        grouped[sample.kind].append(sample)
    for name, group in sorted(grouped.items()):
        times = [s.seconds for s in group if not s.problem]
        per_kind[name] = {"requests": len(group), "statuses": dict(Counter(str(s.status) for s in group)),
                          "p50_ms": round(percentile(times, 50) * 1000, 1),
                          "p99_ms": round(percentile(times, 99) * 1000, 1)}
    all_times = [s.seconds for s in answered]
    good_times = [s.seconds for s in good]
    return {
        "clients": clients,
        "seconds": round(seconds, 1),
        "requests": len(samples),
        "images": sum(by_name[s.kind].images for s in good),
        "requests_per_second": round(len(samples) / seconds, 2),
        "good_images_per_second": round(sum(by_name[s.kind].images for s in good) / seconds, 2),
        "failures": len(failures),
        "failure_examples": [f"{s.kind}: {s.problem}" for s in failures[:10]],
        "backpressure_503": sum(1 for s in samples if s.problem == "backpressure"),
        "statuses": dict(Counter(str(s.status) for s in samples)),
        "latency_ms": {f"p{q}": round(percentile(all_times, q) * 1000, 1) for q in (50, 90, 99)},
        "good_latency_ms": {f"p{q}": round(percentile(good_times, q) * 1000, 1) for q in (50, 90, 99)},
        "per_kind": per_kind,
        "memory_kib": {name: {"before": memory_before.get(name, {}), "after": memory_after.get(name, {})}
                       for name in memory_after},
    }


def render(summary: dict) -> str:
    lines = [
        f"{summary['requests']} requests from {summary['clients']} clients in {summary['seconds']} s: "
        f"{summary['requests_per_second']} req/s, {summary['good_images_per_second']} good images/s",
        f"failures: {summary['failures']}   503 backpressure: {summary['backpressure_503']}   "
        f"statuses: {summary['statuses']}",
        "latency ms (all answered): " + "  ".join(f"{k} {v}" for k, v in summary["latency_ms"].items()),
        "latency ms (good only):    " + "  ".join(f"{k} {v}" for k, v in summary["good_latency_ms"].items()),
        "",
        f"{'kind':<22}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}  statuses",
    ]
    for name, row in summary["per_kind"].items():
        lines.append(f"{name:<22}{row['requests']:>9}{row['p50_ms']:>9}{row['p99_ms']:>9}  {row['statuses']}")
    lines += ["", f"{'process':<10}{'RSS before':>12}{'RSS after':>12}{'peak after':>12}   (MiB)"]
    for name, mem in summary["memory_kib"].items():
        before, after = mem["before"], mem["after"]
        lines.append(f"{name:<10}{before.get('VmRSS', 0) / 1024:>12.1f}{after.get('VmRSS', 0) / 1024:>12.1f}"
                     f"{after.get('VmHWM', 0) / 1024:>12.1f}")
    for example in summary["failure_examples"]:
        lines.append(f"FAILURE {example}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--backends", type=int, default=2)
    parser.add_argument("--slots", type=int, default=1, help="WTC_SLOTS of each backend")
    parser.add_argument("--queue", type=int, default=4, help="WTC_QUEUE of each backend")
    parser.add_argument("--url", help="drive an API that is already running instead of starting one")
    parser.add_argument("--api-key", help="API key to send (with --url)")
    parser.add_argument("--quick", action="store_true", help="3 clients for 6 s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--log-dir", type=Path, help="where the stack's logs go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds = 3, 6.0

    kinds = request_mix(args.api_key)
    if args.url:
        warm_up(args.url, kinds)
        results = run_load(args.url, kinds, clients=args.clients, seconds=args.seconds, seed=args.seed)
        summary = summarise(results, kinds, args.seconds, args.clients, {}, {})
    else:
        log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="wtc-load-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        backend_settings = {"slots": args.slots, "queue": args.queue, "max_input_pixels": 4_000_000,
                            "max_output_pixels": 16_000_000}
        api_settings = {"api_workers": max(8, args.clients * 2), "max_input_pixels": 4_000_000,
                        "max_output_pixels": 16_000_000}
        with LocalStack(log_dir, args.backends, backend_settings=backend_settings,
                        api_settings=api_settings) as stack:
            print(f"stack: API {stack.url}, backends {', '.join(b.label for b in stack.backends)}; "
                  f"logs in {log_dir}", file=sys.stderr)
            warm_up(stack.url, kinds)
            before = stack.memory()
            started = time.monotonic()
            results = run_load(stack.url, kinds, clients=args.clients, seconds=args.seconds, seed=args.seed)
            elapsed = time.monotonic() - started
            after = stack.memory()
            summary = summarise(results, kinds, elapsed, args.clients, before, after)
    print(render(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
