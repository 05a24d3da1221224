"""`pepnet serve` as a real process on 127.0.0.1: parity with the Predictor and Run.predict, every class of bad
request, metrics, a model swap under concurrent load and the refusal of bad versions."""
from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import pepnet
from pepnet.cli import resolve_config
from pepnet.datasets.synthetic import SyntheticSpec, generate
from pepnet.export import Predictor, export_run
from pepnet.export.publish import current_version, publish
from pepnet.serve.launch import Client, running_server

TINY = ["data.synthetic.n_rows=3000", "data.synthetic.n_users=300", "data.synthetic.n_items=500",
        "train.epochs=1", "train.progress=false", "model.hidden_units=[16, 8]"]
README = Path(__file__).parents[2] / "README.md"
TASKS = ["click", "like"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny synthetic run, its export, a models directory with it as version 1, and rows to score."""
    tmp = tmp_path_factory.mktemp("serve")
    pepnet.fit(resolve_config("synthetic"), tmp / "run", overrides=TINY, log=lambda _: None)
    export_run(tmp / "run", tmp / "export")
    publish(tmp / "models", lambda folder: shutil.copytree(tmp / "export", folder))
    rows = generate(SyntheticSpec(n_rows=120, n_users=300, n_items=500, seed=5)).drop(TASKS)
    rows.write_parquet(tmp / "rows.parquet")
    return tmp, rows


@pytest.fixture(scope="module")
def server(setup):
    tmp, _ = setup
    with running_server(tmp / "models", "--poll-s", "0.1", "--max-batch-rows", "500", "--max-body-bytes", "200000",
                        "--timeout-s", "3", "--threads", "1", log=tmp / "server.log") as port:
        yield port


def _post(port: int, body, content_type: str = "application/json") -> tuple[int, dict]:
    client = Client(port)
    try:
        return client.call("POST", "/v1/score", body, content_type)
    finally:
        client.close()


def _scores(resp: dict) -> np.ndarray:
    assert resp["tasks"] == TASKS
    return np.column_stack([resp["scores"][t] for t in TASKS])


def _arrow(df: pl.DataFrame) -> bytes:
    sink = io.BytesIO()
    table = df.to_arrow()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def test_parity_every_request_form(setup, server):
    tmp, rows = setup
    eager = pepnet.Run.load(tmp / "run").predict(str(tmp / "rows.parquet")).select([f"p_{t}" for t in TASKS])
    eager = eager.to_numpy()
    offline = Predictor(tmp / "export").predict(rows).select([f"p_{t}" for t in TASKS]).to_numpy()
    forms = {"rows": {"rows": rows.to_dicts()}, "columns": {"columns": rows.to_dict(as_series=False)}}
    for name, body in forms.items():
        status, resp = _post(server, body)
        assert status == 200, (name, resp)
        assert resp["model_version"] == "1"
        np.testing.assert_allclose(_scores(resp), offline, atol=1e-6, rtol=0, err_msg=name)
    status, resp = _post(server, _arrow(rows), "application/vnd.apache.arrow.stream")
    assert status == 200, resp
    np.testing.assert_allclose(_scores(resp), offline, atol=1e-6, rtol=0)
    np.testing.assert_allclose(offline, eager, atol=1e-6, rtol=0)
    assert len(np.unique(offline[:, 0])) > 10  # real, varied scores

    # a ranking request: one user and context, candidates without them
    context_cols = ["domain_id", "user_id", "time", "user_segment"]
    context = rows.row(0, named=True)
    ranked = rows.with_columns([pl.lit(context[c], dtype=rows.schema[c]).alias(c) for c in context_cols])
    body = {"context": {c: context[c] for c in context_cols}, "candidates": ranked.drop(context_cols).to_dicts()}
    status, resp = _post(server, body)
    assert status == 200, resp
    np.testing.assert_allclose(_scores(resp), Predictor(tmp / "export").predict(ranked).select(
        [f"p_{t}" for t in TASKS]).to_numpy(), atol=1e-6, rtol=0)


def test_onnx_backend_scores_as_the_torch_program(setup):
    tmp, rows = setup
    export_run(tmp / "run", tmp / "export_onnx", ("torch", "onnx"))
    want = Predictor(tmp / "export", backend="torch").predict(rows).select([f"p_{t}" for t in TASKS]).to_numpy()
    with running_server(tmp / "export_onnx", "--threads", "1", log=tmp / "server_onnx.log") as port:
        client = Client(port)
        try:
            status, meta = client.call("GET", "/v1/metadata")
            assert status == 200 and meta["backend"] == "onnx"  # auto: the export has model.onnx
        finally:
            client.close()
        status, resp = _post(port, {"rows": rows.to_dicts()})
    assert status == 200, resp
    np.testing.assert_allclose(_scores(resp), want, atol=1e-6, rtol=0)


def _bad_requests(rows: pl.DataFrame) -> list[tuple[str, bytes | dict, int, str, str | None, int | None]]:
    """(name, body, status, kind, field, row) for every class of bad request."""
    good = rows.head(6).to_dicts()

    def with_row(i: int, **changes) -> dict:
        out = [dict(r) for r in good]
        for k, v in changes.items():
            if v is KeyError:
                del out[i][k]
            else:
                out[i][k] = v
        return {"rows": out}

    nan_body = json.dumps(with_row(4, d1=12345.5)).replace("12345.5", "NaN")  # json.dumps cannot write NaN
    return [
        ("not JSON", b"{not json", 400, "bad_json", None, None),
        ("missing field", with_row(3, item_id=KeyError), 400, "missing_field", "item_id", 3),
        ("wrong type", with_row(2, user_id="abc"), 400, "wrong_type", "user_id", 2),
        ("null forbidden", with_row(1, d0=None), 400, "null_value", "d0", 1),
        ("NaN", nan_body.encode(), 400, "not_finite", "d1", 4),
        ("infinity", json.dumps(with_row(5, d0=12345.5)).replace("12345.5", "1e999").encode(), 400,
         "not_finite", "d0", 5),
        ("empty list", {"rows": []}, 400, "empty", "rows", None),
        ("empty candidates", {"context": {}, "candidates": []}, 400, "empty", "candidates", None),
        ("oversized body", {"rows": good * 400}, 413, "body_too_large", None, None),
        ("batch over limit", {"columns": {k: v * 100 for k, v in rows.head(6).to_dict(as_series=False).items()}},
         413, "batch_too_large", "columns", None),
        ("not an object", {"rows": [1, 2]}, 400, "wrong_type", "rows", 0),
        ("length mismatch", {"columns": {**rows.head(3).to_dict(as_series=False), "d0": [0.1]}}, 400,
         "length_mismatch", "d0", None),
        ("bad arrow", b"\x00\x01garbage", 400, "bad_body", None, None),
    ]


def test_every_bad_request_class_gets_a_4xx_naming_field_and_row(setup, server):
    _, rows = setup
    status, before = _post(server, {"rows": rows.head(6).to_dicts()})
    assert status == 200
    for name, body, want_status, kind, field, row in _bad_requests(rows):
        ctype = "application/vnd.apache.arrow.stream" if name == "bad arrow" else "application/json"
        status, resp = _post(server, body, ctype)
        assert status == want_status, (name, resp)
        err = resp["error"]
        assert (err["kind"], err["field"]) == (kind, field), (name, err)
        assert err["row"] == row, (name, err)
        assert err["message"], name
    # a body that never completes is cut off after --timeout-s
    with socket.create_connection(("127.0.0.1", server), timeout=20) as s:
        s.sendall(b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 100\r\n\r\n{")
        raw = b""
        while b"}}" not in raw:  # the status line, then the JSON body (possibly in a second packet)
            chunk = s.recv(4096)
            if not chunk:
                break
            raw += chunk
    reply = raw.decode()
    assert reply.startswith("HTTP/1.1 503") and '"kind":"timeout"' in reply
    # the server still answers, with the same scores
    status, after = _post(server, {"rows": rows.head(6).to_dicts()})
    assert status == 200 and after["scores"] == before["scores"]


def test_extra_fields_ignored_and_unseen_values_counted(setup, server):
    _, rows = setup
    metrics_before = _metric(server, 'pepnet_oov_ids_total{field="domain_id"}')
    body = {"rows": [{**r, "campaign": "x", "domain_id": 99, "item_id": 10**12} for r in rows.head(3).to_dicts()]}
    status, resp = _post(server, body)
    assert status == 200 and resp["ignored_fields"] == ["campaign"]
    assert len(resp["scores"]["click"]) == 3
    assert _metric(server, 'pepnet_oov_ids_total{field="domain_id"}') == metrics_before + 3
    assert _metric(server, 'pepnet_oov_ids_total{field="item_id"}') >= 3


def _metrics(port: int) -> str:
    client = Client(port)
    try:
        status, text = client.call("GET", "/metrics")
    finally:
        client.close()
    assert status == 200
    return str(text)


def _metric(port: int, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", _metrics(port), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_health_metadata_and_metrics(server):
    client = Client(server)
    try:
        assert client.call("GET", "/healthz") == (200, {"status": "ok"})
        status, ready = client.call("GET", "/readyz")
        assert status == 200 and ready["ready"] is True
        status, meta = client.call("GET", "/v1/metadata")
    finally:
        client.close()
    assert status == 200 and meta["tasks"] == TASKS and meta["domains"] == ["0", "1", "2"]
    inputs = {f["name"]: f for f in meta["inputs"]}
    assert inputs["d0"]["type"] == "float" and not inputs["d0"]["nullable"]
    assert inputs["item_id"]["type"] == "int" and inputs["item_id"]["nullable"]
    assert meta["manifest"]["model"] == "pepnet" and meta["backend"] == "torch"  # the export has no model.onnx
    text = _metrics(server)
    for line in ('pepnet_requests_total{status="200"}', 'pepnet_request_errors_total{kind="missing_field"}',
                 "pepnet_request_latency_seconds_bucket", "pepnet_rows_scored_total", 'pepnet_oov_ids_total{field=',
                 "pepnet_model_version", "pepnet_batch_requests_bucket"):
        assert line in text, line


def test_metrics_of_several_workers_are_summed(setup):
    """With --workers 2, /metrics counts the requests of both workers, whichever worker answers the scrape; the
    model version is given per live worker."""
    tmp, rows = setup

    def workers(text: str) -> set[str]:  # the pids that report a model version (1) into the sums
        return set(re.findall(r'^pepnet_model_version\{pid="(\d+)"\} 1\.0$', text, re.M))

    with running_server(tmp / "models", "--workers", "2", "--threads", "1", log=tmp / "server_workers.log") as port:
        deadline = time.monotonic() + 60
        while len(workers(_metrics(port))) < 2:  # ready means one worker is; the other may still be loading
            assert time.monotonic() < deadline, "the second worker never reported its model version"
            time.sleep(0.2)
        for i in range(24):  # each on a new connection: the kernel hands connections to both workers
            assert _post(port, {"rows": rows[i : i + 1].to_dicts()})[0] == 200
        scrapes = [_metrics(port) for _ in range(6)]
    for text in scrapes:
        assert re.search(r'^pepnet_requests_total\{status="200"\} 24\.0$', text, re.M), text
        assert re.search(r"^pepnet_rows_scored_total 24\.0$", text, re.M)
        assert len(workers(text)) == 2, text


def test_swap_under_concurrent_load_drops_nothing(setup, server):
    tmp, rows = setup
    body = {"context": {c: rows["domain_id"][0] if c == "domain_id" else rows[c][0]
                        for c in ("domain_id", "user_id", "time", "user_segment")},
            "candidates": rows.drop(["domain_id", "user_id", "time", "user_segment"]).head(50).to_dicts()}
    old = current_version(tmp / "models")
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def client_loop() -> None:
        client = Client(server)
        try:
            while not stop.is_set():
                status, resp = client.call("POST", "/v1/score", body)
                results.append((status, resp.get("model_version", "") if isinstance(resp, dict) else ""))
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        new = publish(tmp / "models", lambda folder: shutil.copytree(tmp / "export", folder))
        deadline = time.monotonic() + 60
        while not any(v == str(new) for _, v in results[-50:]) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    versions = [v for _, v in results]
    assert all(s == 200 for s, _ in results), [r for r in results if r[0] != 200][:3]
    assert str(old) in versions and str(new) in versions
    first_new = versions.index(str(new))
    assert str(old) not in versions[first_new + 50:]  # once swapped, the new version serves


def test_bad_versions_are_refused_and_the_old_one_keeps_serving(setup, server):
    tmp, rows = setup
    serving = str(current_version(tmp / "models"))

    def tampered(folder: Path) -> None:
        shutil.copytree(tmp / "export", folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["verification"]["logits"][0][0] += 0.5
        (folder / "manifest.json").write_text(json.dumps(manifest))

    def truncated(folder: Path) -> None:
        shutil.copytree(tmp / "export", folder)
        data = (folder / "model.pt2").read_bytes()
        (folder / "model.pt2").write_bytes(data[: len(data) // 2])

    for write, reason in ((tampered, "verification_failed"), (truncated, "load_failed")):
        bad = publish(tmp / "models", write)
        name = f'pepnet_model_refused_total{{reason="{reason}",version="{bad}"}}'
        deadline = time.monotonic() + 60
        while _metric(server, name) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _metric(server, name) == 1
        status, resp = _post(server, {"rows": rows.head(2).to_dicts()})
        assert status == 200 and resp["model_version"] == serving
    client = Client(server)
    try:
        meta = client.call("GET", "/v1/metadata")[1]
    finally:
        client.close()
    assert "verification batch" in meta["refused_versions"][str(bad - 1)]
    assert meta["model_version"] == serving
    log = (tmp / "server.log").read_text()
    assert f"refused model version {bad - 1}" in log and f"refused model version {bad}" in log


def _readme_curls() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## Serving"):]
    section = section[: section.index("\n## ", 4)] if "\n## " in section[4:] else section
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    commands = [c for b in blocks for c in b.replace("\\\n", " ").splitlines() if c.strip().startswith("curl ")]
    return [shlex.split(c) for c in commands]


def test_readme_curl_examples_work_as_written(server):
    curls = _readme_curls()
    assert len(curls) >= 3
    for argv in curls:
        url = next(a for a in argv if a.startswith("http://"))
        assert url.startswith("http://127.0.0.1:8000/"), url
        path = url.removeprefix("http://127.0.0.1:8000")
        data = next((argv[i + 1] for i, a in enumerate(argv) if a in ("-d", "--data")), None)
        headers = [argv[i + 1] for i, a in enumerate(argv) if a == "-H"]
        ctype = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("content-type")),
                     "application/x-www-form-urlencoded")
        client = Client(server)
        try:
            status, resp = client.call("POST" if data else "GET", path, data.encode() if data else None, ctype)
        finally:
            client.close()
        assert status == 200, (argv, resp)
        if path == "/v1/score":
            assert set(resp["scores"]) == set(TASKS) and all(0 < p < 1 for p in resp["scores"]["click"])
