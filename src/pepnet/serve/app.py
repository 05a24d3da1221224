"""The HTTP server of ``pepnet serve``: a Starlette application run by uvicorn.

Routes: ``POST /v1/score``, ``GET /healthz``, ``GET /readyz``, ``GET /v1/metadata``, ``GET /metrics``
(see docs/serving.md). The model comes from an export directory (served as it is) or a models directory
(``versions/<N>/`` + ``current``, see :mod:`pepnet.export.publish`), which is watched: a new version is loaded
and checked beside the old one, then swapped in between two batches; requests already parsed are scored by
the version that parsed them, so none is dropped. A version that fails to load or to verify is refused and
the old one keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import prometheus_client as prom
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import DataError
from ..export import publish
from ..export.serving import ExportedModel
from .batcher import MicroBatcher
from .requests import RequestError, input_fields, parse

log = logging.getLogger("pepnet.serve")
SETTINGS_ENV = "PEPNET_SERVE_SETTINGS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode (--workers N > 1)


@dataclass
class Settings:
    """What ``pepnet serve`` was asked for (passed to each uvicorn worker as JSON in ``PEPNET_SERVE_SETTINGS``)."""

    source: str
    max_wait_ms: float = 2.0
    max_batch_rows: int = 4096
    max_body_bytes: int = 8 << 20
    request_timeout_s: float = 10.0
    poll_s: float = 1.0
    threads: int = 1  # torch threads per worker: 2 do not speed up a forward pass of 200 rows on 2 cores, and the
    # worker's event loop (parsing, answering) and other workers need the other cores (docs/serving.md)
    backend: str = "auto"  # the forward pass: torch, onnx, or auto (onnx when the export has model.onnx)


def _loaded(path: str | Path, version: str, backend: str) -> ExportedModel:
    """The export in ``path`` as model ``version``, with the encoder's lookups built: its first request is not slower
    than the others."""
    model = ExportedModel(path, version=version, backend=backend)
    model.encoder.build_lookups()
    return model


def answer(model: ExportedModel, probs: np.ndarray, ignored: list[str]) -> dict:
    """The body of a score response: the model version, the reported tasks and their probabilities per row (from
    ``probs``, float32 [N, len(model.tasks)]), and the ignored request fields if any."""
    reported = model.encoder.reported_tasks
    out = {"model_version": model.version, "tasks": reported,
           "scores": {t: probs[:, model.tasks.index(t)].tolist() for t in reported}}
    if ignored:
        out["ignored_fields"] = ignored
    return out


class Metrics:
    """The Prometheus metrics of one server process. With ``--workers N`` (N > 1) prometheus_client runs in its
    multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by :func:`run`): every worker writes its values to
    that folder, and :meth:`exposition` sums them over the workers, so ``/metrics`` counts every request whichever
    worker answers the scrape; the model version is then given per live worker (label ``pid``)."""

    def __init__(self) -> None:
        r = self.registry = prom.CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.requests = prom.Counter("pepnet_requests", "Score requests answered, by HTTP status", ["status"],
                                     registry=r)
        self.rows = prom.Counter("pepnet_rows_scored", "Rows scored", registry=r)
        self.latency = prom.Histogram("pepnet_request_latency_seconds", "Score request latency (body read to "
                                      "response)", registry=r, buckets=(.0005, .001, .002, .003, .005, .0075, .01,
                                                                       .015, .025, .05, .1, .25, .5, 1, 2.5, 10))
        self.errors = prom.Counter("pepnet_request_errors", "Refused or failed score requests, by kind", ["kind"],
                                   registry=r)
        self.oov = prom.Counter("pepnet_oov_ids", "Ids scored with their field's out-of-vocabulary row (unseen "
                                "value or null), by field", ["field"], registry=r)
        self.batches = prom.Counter("pepnet_batches", "Forward passes (micro-batches)", registry=r)
        self.batch_requests = prom.Histogram("pepnet_batch_requests", "Requests coalesced per micro-batch",
                                             registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.version = prom.Gauge("pepnet_model_version", "Version number of the model being served (0 for an "
                                  "export directory served as it is)", registry=r, multiprocess_mode="liveall")
        self.swaps = prom.Counter("pepnet_model_swaps", "New model versions swapped in", registry=r)
        self.refused = prom.Counter("pepnet_model_refused", "Model versions refused (failed to load or to "
                                    "verify), by version and reason", ["version", "reason"], registry=r)

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or of every worker in multiprocess mode."""
        if not self.multiprocess:
            return prom.generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return prom.generate_latest(merged)


class Server:
    """State of one server process: settings, current model, batcher, metrics."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.source = Path(settings.source)
        self.watching = publish.is_models_dir(self.source)
        self.refused: dict[str, str] = {}  # version -> reason
        self.model = self._load(self._current())
        self.fields = input_fields(self.model.encoder)
        self.batcher: MicroBatcher | None = None

    def _current(self) -> str:
        if not self.watching:
            return "0"
        v = publish.current_version(self.source)
        if v is None:
            raise FileNotFoundError(f"{self.source} has no published version yet ({publish.CURRENT} missing); "
                                    "publish one with `pepnet export RUN --publish DIR`")
        return str(v)

    def _load(self, version: str) -> ExportedModel:
        path = publish.version_dir(self.source, int(version)) if self.watching else self.source
        model = _loaded(path, version, self.settings.backend)
        self.metrics.version.set(int(version))
        return model

    # ------------------------------------------------------------------ model updates
    async def watch(self) -> None:
        """Poll ``current``; load, verify and swap in each new version (refused ones are remembered)."""
        while True:
            await asyncio.sleep(self.settings.poll_s)
            try:
                version = self._current()
            except (ValueError, OSError) as exc:
                log.warning("cannot read the current version: %s", exc)
                continue
            if version == self.model.version or version in self.refused:
                continue
            try:
                model = await asyncio.to_thread(_loaded, publish.version_dir(self.source, int(version)), version,
                                            self.settings.backend)
                fields = input_fields(model.encoder)
            except Exception as exc:  # noqa: BLE001 - any failure to load refuses the version
                reason = "verification_failed" if "verification batch" in str(exc) else "load_failed"
                self.refused[version] = f"{type(exc).__name__}: {exc}"
                self.metrics.refused.labels(version, reason).inc()
                log.error("refused model version %s (%s): %s; still serving version %s", version, reason,
                          self.refused[version], self.model.version)
                continue
            self.model, self.fields = model, fields  # one assignment: requests parsed from now on use it
            self.metrics.version.set(int(version))
            self.metrics.swaps.inc()
            log.info("serving model version %s", version)

    def on_batch(self, rows: int, jobs: int, oov: dict[str, int]) -> None:
        m = self.metrics
        m.rows.inc(rows)
        m.batches.inc()
        m.batch_requests.observe(jobs)
        for name, n in oov.items():
            if n:
                m.oov.labels(name).inc(n)

    # ------------------------------------------------------------------ routes
    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestError("body_too_large", f"the body has {int(declared)} bytes; at most {limit} are accepted "
                               "(--max-body-bytes)", status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError("body_too_large", f"the body exceeds {limit} bytes (--max-body-bytes)", status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def score(self, request: Request) -> Response:
        start = time.perf_counter()
        assert self.batcher is not None
        self.batcher.arriving += 1
        arriving = True
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                body = await self._body(request)
                model, fields = self.model, self.fields
                df, ignored = parse(body, request.headers.get("content-type", ""), fields,
                                    self.settings.max_batch_rows)
                self.batcher.arriving -= 1
                arriving = False
                try:
                    probs = await self.batcher.submit(model, df)
                except DataError as exc:
                    raise RequestError("bad_value", exc.detail, exc.column, exc.row) from None
            status, resp = 200, JSONResponse(answer(model, probs, ignored))
        except RequestError as exc:
            self.metrics.errors.labels(exc.kind).inc()
            status, resp = exc.status, JSONResponse(exc.body(), status_code=exc.status)
        except TimeoutError:
            self.metrics.errors.labels("timeout").inc()
            status = 503
            resp = JSONResponse(RequestError("timeout", f"the request took longer than "
                                             f"{self.settings.request_timeout_s} s").body(), status_code=status)
        except ClientDisconnect:
            self.metrics.errors.labels("client_disconnect").inc()
            return Response(status_code=499)
        finally:
            if arriving:
                self.batcher.arriving -= 1
        self.metrics.requests.labels(str(status)).inc()
        self.metrics.latency.observe(time.perf_counter() - start)
        return resp

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        ready = self.batcher is not None and self.batcher.task is not None and not self.batcher.task.done()
        return JSONResponse({"ready": ready, "model_version": self.model.version}, status_code=200 if ready else 503)

    async def metadata(self, request: Request) -> Response:
        m = self.model
        schema = m.encoder.schema
        domains = next((m.encoder.vocabs[f.name].cast(str).to_list() for f in schema.features
                        if f.source == schema.domain and f.name in m.encoder.vocabs), None)
        return JSONResponse({
            "model_version": m.version, "backend": m.backend,
            "tasks": m.tasks, "reported_tasks": m.encoder.reported_tasks,
            "domain_column": schema.domain, "domains": domains,
            "inputs": [{"name": f.name, "type": f.kind, "nullable": f.nullable, "use": f.use} for f in self.fields],
            "extra_fields": "ignored; listed in the response as ignored_fields",
            "limits": {"max_batch_rows": self.settings.max_batch_rows, "max_body_bytes": self.settings.max_body_bytes,
                       "max_wait_ms": self.settings.max_wait_ms, "request_timeout_s": self.settings.request_timeout_s},
            "refused_versions": self.refused,
            "manifest": {k: v for k, v in m.manifest.items() if k != "verification"},
        })

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=prom.CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):
        self.batcher = MicroBatcher(self.settings.max_wait_ms / 1000, self.settings.max_batch_rows, self.on_batch)
        self.batcher.start()
        watcher = asyncio.get_running_loop().create_task(self.watch()) if self.watching else None
        log.info("serving %s, model version %s", self.source, self.model.version)
        try:
            yield
        finally:
            if watcher:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            await self.batcher.stop()
            if self.metrics.multiprocess:  # this worker's live gauge (model version) leaves the sums
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())


def create_app(settings: Settings | None = None) -> Starlette:
    """The application (``settings`` default: the JSON in ``PEPNET_SERVE_SETTINGS``, as uvicorn workers get it)."""
    import torch

    if settings is None:
        settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))
    torch.set_num_threads(settings.threads)
    prom.disable_created_metrics()  # no *_created series: one line per metric is enough
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    server = Server(settings)
    routes = [Route("/v1/score", server.score, methods=["POST"]), Route("/healthz", server.healthz),
              Route("/readyz", server.readyz), Route("/v1/metadata", server.metadata),
              Route("/metrics", server.prometheus)]
    app = Starlette(routes=routes, lifespan=server.lifespan)
    app.state.server = server
    return app


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
        access_log: bool = False) -> None:
    """Serve until interrupted (uvicorn; ``workers`` processes, each with its own model and batcher; with more
    than one, their metrics are summed through a temporary folder, see :class:`Metrics`)."""
    import shutil
    import tempfile

    import uvicorn

    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    metrics_dir = tempfile.mkdtemp(prefix="pepnet-metrics-") if workers > 1 else None
    if metrics_dir:
        os.environ[MULTIPROC_ENV] = metrics_dir  # read by prometheus_client when each worker imports it
    try:
        uvicorn.run("pepnet.serve.app:create_app", factory=True, host=host, port=port, workers=workers,
                    access_log=access_log, timeout_keep_alive=5, limit_concurrency=1024, log_level="info")
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
