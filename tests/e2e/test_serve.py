"""``texttune serve`` as a user runs it: a real server process on 127.0.0.1 serving a tiny trained run.

Answers are checked against ``texttune.load(run)``; every bad request must get a 4xx with a JSON message
and no traceback; concurrent requests must be batched together and answered as if alone; a schema-driven
fuzzer must find no 5xx; SIGTERM must let the requests under way finish and exit 0; the page at / must
work in a headless browser. Every wait is bounded, and every server is killed in teardown.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi", reason="texttune serve needs the serve extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="texttune serve needs the serve extra (fastapi, uvicorn)")
httpx = pytest.importorskip("httpx", reason="the serve tests talk to the server with httpx")

import texttune
from texttune.tasks.classify import load_config, run_experiment

TEXTS = ["what a wonderful film", "awful acting, i hated it", "a moving story", "boring"]
LONG = " ".join(["wonderful"] * 60)  # 62 tokens with [CLS]/[SEP], over the run's max_length of 32
STARTUP_S = 120  # a cold interpreter importing torch on a loaded 2-core machine
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, toy, tmp_path_factory) -> Path:
    """A tiny BERT fitted to the eight toy sentences (temperature calibrated), max_length 32."""
    items = {
        "model.path": tiny_model_dir, "model.pooling": "mean", "model.head.dropout": 0, "model.max_length": 32,
        "output_dir": tmp_path_factory.mktemp("runs"),
        "data.train_file": toy, "data.validation_file": toy, "data.test_file": toy,
        "train.per_device_batch_size": 4, "train.lr": 1e-2, "train.warmup_ratio": 0, "train.num_threads": 1,
        "train.max_steps": 12, "train.eval_every_steps": 4,
    }
    return run_experiment(load_config(None, [f"{k}={v}" for k, v in items.items()]), callbacks=[]).run_dir


@pytest.fixture(scope="module")
def predictor(run_dir):
    return texttune.load(run_dir)


# --------------------------------------------------------------------------- a server process


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def post(self, body, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", json=body, timeout=30, **kwargs)

    def info(self) -> dict:
        return httpx.get(f"{self.url}/info", timeout=10).json()


@contextmanager
def running_server(model: Path, log_path: Path, *options: str):
    """``texttune serve MODEL --port 0 ...`` in a subprocess; yields once /health answers; always stopped."""
    command = [sys.executable, "-m", "texttune.cli", "serve", str(model), "--port", "0", "--num-threads", "1",
               *options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        yield Server(process, _wait_until_ready(process, log_path), log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_until_ready(process: subprocess.Popen, log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_S
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()}")
        if url is None:  # --port 0: the server prints the port it got
            match = re.search(r"on (http://127\.0\.0\.1:\d+) ", log_path.read_text(errors="replace"))
            url = match and match.group(1)
        if url is not None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    pytest.fail(f"the server did not answer /health within {STARTUP_S} s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    # A 50 ms wait for company, so that requests sent together are batched together.
    with running_server(run_dir, tmp_path_factory.mktemp("server") / "server.log", "--max-wait-ms", "50") as srv:
        yield srv


def scores(rows: list[dict]) -> dict[str, float]:
    return {row["label"]: row["score"] for row in rows}


def expected_probabilities(predictor, texts, pairs=None) -> list[dict[str, float]]:
    labels = len(predictor.label_names)
    return [{t["label"]: t["score"] for t in result["top_k"]}
            for result in predictor.predict(texts, pairs, top_k=labels)]


def assert_sorted(rows: list[dict]) -> None:
    values = [row["score"] for row in rows]
    assert values == sorted(values, reverse=True)


def assert_refused(response: httpx.Response, status: int, *parts: str) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "error_type"}
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert len(response.text) < 1000  # the offending input is never echoed back
    for part in parts:
        assert part in body["error"], body["error"]
    return body["error"]


# --------------------------------------------------------------------------- good requests


def test_one_text_gets_every_label_sorted_with_predicts_probabilities(server, predictor):
    response = server.post({"inputs": TEXTS[0]})
    assert response.status_code == 200, response.text
    rows = response.json()
    assert [row.keys() == {"label", "score"} for row in rows] == [True] * len(predictor.label_names)
    assert_sorted(rows)
    assert scores(rows) == pytest.approx(expected_probabilities(predictor, TEXTS[:1])[0], abs=1e-5)
    assert rows[0]["label"] == predictor.predict(TEXTS[0])[0]["label"]


def test_a_batch_gets_one_list_per_input_in_order(server, predictor):
    rows = server.post({"inputs": [[t] for t in TEXTS]}).json()
    assert len(rows) == len(TEXTS)
    for got, want in zip(rows, expected_probabilities(predictor, TEXTS)):
        assert_sorted(got)
        assert scores(got) == pytest.approx(want, abs=1e-5)


def test_pairs_alone_and_mixed_with_single_texts(server, predictor):
    two = server.post({"inputs": ["a moving story", "i loved it"]}).json()  # a flat list: a batch of texts
    assert len(two) == 2 and scores(two[1]) == pytest.approx(expected_probabilities(predictor, ["i loved it"])[0],
                                                             abs=1e-5)
    (pair,) = server.post({"inputs": [["a moving story", "i loved it"]]}).json()  # a pair: [[a, b]]
    assert isinstance(pair[0], dict)
    assert scores(pair) == pytest.approx(expected_probabilities(predictor, ["a moving story"], ["i loved it"])[0],
                                         abs=1e-5)
    mixed = server.post({"inputs": [["boring"], ["a moving story", "i loved it"], ["awful"]]}).json()
    assert scores(mixed[1]) == pytest.approx(scores(pair), abs=1e-5)
    assert scores(mixed[0]) == pytest.approx(expected_probabilities(predictor, ["boring"])[0], abs=1e-5)
    assert scores(mixed[2]) == pytest.approx(expected_probabilities(predictor, ["awful"])[0], abs=1e-5)


def test_raw_scores_are_the_logits(server, predictor):
    rows = server.post({"inputs": [[t] for t in TEXTS], "raw_scores": True}).json()
    logits = predictor.logits(TEXTS)
    for got, row_logits in zip(rows, logits.tolist()):
        assert_sorted(got)
        assert scores(got) == pytest.approx(dict(zip(predictor.label_names, row_logits)), abs=1e-5)


def test_probabilities_apply_the_runs_temperature(server, predictor):
    info = server.info()
    assert predictor.temperature and info["temperature"] == pytest.approx(predictor.temperature)
    assert "temperature" in info["scores"]
    rows = server.post({"inputs": TEXTS[1]}).json()
    want = torch.softmax(predictor.logits(TEXTS[1:2])[0] / predictor.temperature, dim=-1).tolist()
    assert scores(rows) == pytest.approx(dict(zip(predictor.label_names, want)), abs=1e-5)


def test_too_long_input_is_refused_unless_truncate(server, predictor):
    error = assert_refused(server.post({"inputs": [["short"], [LONG]]}), 422, "inputs[1]", "62 tokens",
                           "maximum of 32", "truncate")
    assert "inputs[0]" not in error
    assert_refused(server.post({"inputs": LONG, "truncate": False}), 422, "inputs has 62 tokens")
    rows = server.post({"inputs": LONG, "truncate": True}).json()
    assert scores(rows) == pytest.approx(expected_probabilities(predictor, [LONG])[0], abs=1e-5)  # predict truncates
    assert server.post({"inputs": "short", "truncate": None}).status_code == 200  # null: the default


def test_health_info_page_and_openapi(server, run_dir, predictor):
    assert httpx.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
    info = server.info()
    assert info["model"] == str(run_dir.resolve()) and info["model_name"] == run_dir.name
    assert info["labels"] == predictor.label_names == ["neg", "pos"]
    assert info["max_length"] == 32 and info["backend"] == "torch"
    assert info["limits"] == {"max_batch_size": 32, "max_wait_ms": 50.0, "max_inputs": 1000,
                              "max_body_bytes": 1 << 20, "max_queued_inputs": 16000}
    assert set(info["versions"]) >= {"texttune", "torch", "transformers"}
    assert info["versions"]["torch"] == torch.__version__
    page = httpx.get(server.url, timeout=10)
    assert page.status_code == 200 and "<textarea" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"https?://", page.text)  # nothing from outside
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    request = schema["components"]["schemas"]["PredictRequest"]
    assert set(request["properties"]) == {"inputs", "truncate", "raw_scores"} and request["required"] == ["inputs"]
    assert {"413", "422"} <= set(schema["paths"]["/predict"]["post"]["responses"])
    assert httpx.get(f"{server.url}/docs", timeout=10).status_code == 200


# --------------------------------------------------------------------------- bad requests


def raw_post(server: Server, content: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(f"{server.url}/predict", content=content, headers={"content-type": content_type}, timeout=30)


BAD_BODIES = {
    "malformed-json": (b'{"inputs": "a text"', 422, "malformed JSON"),
    "not-json-at-all": (b"inputs=a text", 422, "malformed JSON"),
    "not-utf-8": (b'{"inputs": "\xff\xfe"}', 400, "UTF-8"),
    "missing-inputs": (b'{"truncate": true}', 422, "inputs: Field required"),
    "empty-body": (b"", 422, "the body is empty"),
    "body-not-an-object": (b'["a text"]', 422, "JSON object"),
    "inputs-a-number": (b'{"inputs": 5}', 422, "inputs: expected a string"),
    "inputs-null": (b'{"inputs": null}', 422, "inputs: expected a string"),
    "inputs-numbers": (b'{"inputs": [1, 2]}', 422, "inputs[0]: expected"),
    "inputs-three-in-a-pair": (b'{"inputs": [["a", "b", "c"]]}', 422, "expected one text [a] or a pair [a, b]"),
    "inputs-mixed": (b'{"inputs": [["a"], "b"]}', 422, "inputs[1]: expected a list"),
    "inputs-object": (b'{"inputs": {"text": "a"}}', 422, "inputs: expected"),
    "empty-list": (b'{"inputs": []}', 422, "the batch is empty"),
    "empty-sequence": (b'{"inputs": [[]]}', 422, "inputs[0]: expected one text"),
    "empty-string": (b'{"inputs": ""}', 422, "inputs: empty text"),
    "blank-string-in-batch": (b'{"inputs": [["ok"], ["  "]]}', 422, "inputs[1][0]: empty text"),
    "lone-surrogate": (b'{"inputs": "\\ud800"}', 422, "not valid Unicode"),
    "truncate-a-string": (b'{"inputs": "a", "truncate": "yes"}', 422, "truncate: Input should be a valid boolean"),
    "raw-scores-a-number": (b'{"inputs": "a", "raw_scores": 1}', 422, "raw_scores"),
    "unknown-field": (b'{"inputs": "a", "truncation_direction": "Left"}', 422, "truncation_direction: unknown field"),
    "ten-thousand-inputs": (json.dumps({"inputs": [["a"]] * 10_000}).encode(), 413, "10000 inputs; at most 1000"),
    "five-megabyte-text": (json.dumps({"inputs": "word " * 1_000_000}).encode(), 413, "at most 1,048,576 bytes"),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_requests_get_a_4xx_with_a_message(server, name):
    content, status, message = BAD_BODIES[name]
    assert_refused(raw_post(server, content), status, message)


def test_other_bad_requests(server):
    assert_refused(raw_post(server, b'{"inputs": "a"}', "text/plain"), 415, "Content-Type: application/json")

    def chunks():  # no Content-Length: the streamed size is what counts
        for _ in range(30):
            yield b"x" * 100_000

    response = httpx.post(f"{server.url}/predict", content=chunks(), headers={"content-type": "application/json"},
                          timeout=30)
    assert_refused(response, 413, "goes on past the limit")
    assert_refused(httpx.get(f"{server.url}/predict", timeout=10), 405)
    assert_refused(httpx.get(f"{server.url}/no-such-page", timeout=10), 404)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:  # httpx refuses to send this one
        raw.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: many\r\n\r\n{}")
        status_line = raw.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 400"), status_line
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200  # still serving


def test_each_request_is_one_log_line(server):
    server.post({"inputs": [["a"], ["b"], ["c"]]})
    raw_post(server, b"{")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "POST /predict 422 inputs=-" not in server.log():
        time.sleep(0.1)
    log = server.log()
    assert re.search(r"INFO texttune\.serve: POST /predict 200 inputs=3 \d+\.\dms", log), log[-2000:]
    assert re.search(r"POST /predict 422 inputs=- \d+\.\dms", log)
    assert "Traceback" not in log


# --------------------------------------------------------------------------- batching


def test_concurrent_requests_are_batched_and_answered_as_alone(server):
    bodies = [{"inputs": f"{TEXTS[i % 4]} number {i}"} for i in range(12)]
    bodies += [{"inputs": [[TEXTS[i % 4]], ["a second text", "with a pair"]]} for i in range(4)]
    alone = [server.post(body).json() for body in bodies]
    before = server.info()["stats"]
    barrier = threading.Barrier(len(bodies))
    together: list = [None] * len(bodies)

    def send(i: int) -> None:
        with httpx.Client(timeout=30) as client:  # connected before the barrier: the posts leave together
            client.get(f"{server.url}/health")
            barrier.wait(timeout=30)
            together[i] = client.post(f"{server.url}/predict", json=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    for got, want in zip(together, alone):
        assert got.status_code == 200, got.text
        got = got.json()
        if isinstance(want[0], dict):
            got, want = [got], [want]
        assert [scores(g) for g in got] == [pytest.approx(scores(w), abs=1e-5) for w in want]
    after = server.info()["stats"]
    assert after["requests"] - before["requests"] == len(bodies)
    assert after["batches_of_several_requests"] > before["batches_of_several_requests"], after
    assert after["largest_batch_requests"] > 1
    assert after["largest_batch_inputs"] <= 32  # max_batch_size


# --------------------------------------------------------------------------- fuzzing from the schema


def test_schema_driven_fuzzing_finds_no_server_error(server):
    schemathesis = pytest.importorskip("schemathesis", reason="the fuzzing test needs schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {"POST /predict", "GET /health", "GET /info"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
                continue  # nothing to make invalid

            @settings(max_examples=50, deadline=10_000, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case):
                response = case.call(base_url=server.url, timeout=30)
                assert "Traceback" not in response.text
                case.validate_response(response, checks=checks)

            call()
    assert server.process.poll() is None and "Traceback" not in server.log()


# --------------------------------------------------------------------------- shutdown


def test_sigterm_lets_requests_under_way_finish_and_exits_0(run_dir, predictor, tmp_path):
    # A 3 s wait for company holds the requests in the queue while SIGTERM arrives.
    with running_server(run_dir, tmp_path / "server.log", "--max-wait-ms", "3000") as srv:
        results: dict[int, httpx.Response] = {}

        def send(i: int) -> None:
            results[i] = httpx.post(f"{srv.url}/predict", json={"inputs": TEXTS[i]}, timeout=60)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(TEXTS))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while srv.info()["stats"]["queued_requests"] < len(TEXTS):
            assert time.monotonic() < deadline, srv.info()["stats"]
            time.sleep(0.05)
        srv.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=60)
        assert srv.process.wait(timeout=60) == 0, srv.log()
        log = srv.log()
    assert sorted(results) == list(range(len(TEXTS)))
    for i, response in results.items():
        assert response.status_code == 200, response.text
        assert scores(response.json()) == pytest.approx(expected_probabilities(predictor, TEXTS[i : i + 1])[0],
                                                        abs=1e-5)
    assert "Shutting down" in log and "stopped" in log and "Traceback" not in log
    assert log.count("POST /predict 200") == len(TEXTS)


# --------------------------------------------------------------------------- the page, in a browser


def test_the_page_classifies_a_typed_text_in_a_browser(server, predictor):
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} for the browser test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright")
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run"]
    outside: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=flags)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server.url) else None)
            page.goto(server.url)
            # Locators, not wait_for_function: the page's CSP forbids the eval that would need.
            page.locator("#model").filter(has_text="labels").wait_for()
            page.fill("#text", TEXTS[0])
            page.click("#classify")
            page.wait_for_selector("#results .row")
            first = page.locator("#results .row").first
            label = first.locator(".label").inner_text()
            score = float(first.locator(".score").inner_text())
            rows = page.locator("#results .row").count()
            error = page.locator("#error").inner_text()
        finally:
            browser.close()
    want = predictor.predict(TEXTS[0])[0]
    assert label == want["label"] and score == pytest.approx(want["score"], abs=1e-4)
    assert rows == len(predictor.label_names) and error == ""
    assert outside == []


# --------------------------------------------------------------------------- the ONNX backend


def test_an_onnx_export_is_served_by_onnxruntime(run_dir, tmp_path):
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module, reason="the ONNX backend needs the onnx extra")
    from texttune.onnx_backend import export_onnx

    export = tmp_path / "onnx"
    export_onnx(run_dir, export, "none")
    onnx = texttune.load(export, backend="onnx")
    with running_server(export, tmp_path / "server.log", "--backend", "onnx") as srv:
        info = srv.info()
        rows = srv.post({"inputs": [[t] for t in TEXTS], "raw_scores": True}).json()
        probabilities = srv.post({"inputs": TEXTS[2]}).json()
    assert info["backend"] == "onnx" and "onnxruntime" in info["versions"]
    assert info["labels"] == onnx.label_names and info["temperature"] == pytest.approx(onnx.temperature)
    for got, row_logits in zip(rows, onnx.logits(TEXTS).tolist()):
        assert scores(got) == pytest.approx(dict(zip(onnx.label_names, row_logits)), abs=1e-5)
    assert scores(probabilities) == pytest.approx(expected_probabilities(onnx, TEXTS[2:3])[0], abs=1e-5)


def test_a_closed_form_model_is_served_without_a_token_limit(tmp_path):
    """A classic baseline reads raw texts (no tokenizer): no length refusal, the same scores as predict."""
    from texttune.cli import main

    words = [("wonderful", "pos"), ("great", "pos"), ("moving", "pos"), ("dull", "neg"), ("boring", "neg"),
             ("awful", "neg")]
    rows = [f"a {word} {noun},{label}" for word, label in words for noun in ("film", "story", "plot", "cast")]
    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    code = main(["run", "--set", "model.name=tfidf_lr", "--set", "model.min_df=1", "--set", "model.cv_folds=2",
                 *(arg for split in ("train", "validation", "test")
                   for arg in ("--set", f"data.{split}_file={data}")), "--set", f"output_dir={tmp_path / 'runs'}"])
    assert code == 0
    (run,) = (tmp_path / "runs").iterdir()
    model = texttune.load(run)
    with running_server(run, tmp_path / "server.log") as srv:
        info = srv.info()
        long_text = srv.post({"inputs": LONG})  # no max_length: nothing to truncate or refuse
        rows_ = srv.post({"inputs": [["a wonderful plot"], ["a boring cast"]]}).json()
    assert info["max_length"] is None and info["labels"] == model.label_names
    assert long_text.status_code == 200, long_text.text
    want = expected_probabilities(model, ["a wonderful plot", "a boring cast"])
    assert [scores(r) for r in rows_] == [pytest.approx(w, abs=1e-5) for w in want]


# --------------------------------------------------------------------------- the command's own errors


def test_serve_a_missing_model_is_one_message(run_cli, tmp_path):
    code, out, err = run_cli("serve", tmp_path / "nope", "--port", "0")
    assert code == 2 and "Traceback" not in out + err
    assert "no such run directory" in err


def test_serve_on_a_port_in_use_is_one_message(run_cli, run_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run_cli("serve", run_dir, "--port", str(port))
    assert code == 2 and "Traceback" not in out + err
    assert f"127.0.0.1:{port}: cannot listen there" in err
