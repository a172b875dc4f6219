"""``clsvc serve``: the HTTP API in-process (FastAPI's TestClient) with the shipped ``arctic`` model.

Every endpoint, every error answer (status and the one-line JSON ``{"error": ...}``), the upload
cap enforced while the body streams in, the bounded pool (503 when full, 504 on timeout: a
queued job never runs, a running one stops before vocoding), the per-request temp folders, the
OpenAPI document, and the command itself (missing extra, bad options, a real server on a free
port). Concurrency is made deterministic with a converter wrapper whose ``convert_mel`` waits on a
threading.Event; nothing asserts on wall-clock time (the waits are liveness bounds only).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from clsvc.cli import main

SERVE_INSTALLED = all(importlib.util.find_spec(m) is not None for m in ("fastapi", "uvicorn", "httpx")) and (
    importlib.util.find_spec("python_multipart") is not None or importlib.util.find_spec("multipart") is not None)
needs_serve = pytest.mark.skipif(not SERVE_INSTALLED, reason="needs the serve extra and httpx: pip install -e '.[dev]'")

SR = 16000
DEMO = Path(__file__).resolve().parents[1] / "src" / "clsvc" / "resources" / "demo"
LIVENESS_S = 120.0  # bound on waits for another thread (never reached unless something hangs)


def voiced(seconds: float, sr: int = SR, f0: float = 140.0, channels: int = 1) -> np.ndarray:
    """A voiced, speech-like test signal: harmonics of ``f0`` Hz with a 3 Hz syllable-rate envelope."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 10)) * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t))
    x = (0.25 * x / np.max(np.abs(x))).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def wav_bytes(x: np.ndarray, sr: int = SR, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


CLIP = wav_bytes(voiced(1.2))


def error_of(r: Any, status: int) -> str:
    """The response's one-line error message, after checking the status and the body's shape."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


class Gated:
    """A converter that delegates to the real one, counts the stages it is asked to run and, when
    ``block`` is set, waits in ``convert_mel`` until ``release`` is set (``entered`` says it got there)."""

    def __init__(self, vc: Any, one_shot: bool | None = None):
        self._vc = vc
        self._one_shot = one_shot
        self.calls: Counter[str] = Counter()
        self.block = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.seen_in_tmp: list[list[str]] = []
        self.tmp: Path | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vc, name)

    @property
    def one_shot(self) -> bool:
        return self._vc.one_shot if self._one_shot is None else self._one_shot

    def convert_mel(self, source: Any, speaker: Any) -> np.ndarray:
        self.calls["convert_mel"] += 1
        if self.tmp is not None:  # what the request's folder holds while the job runs
            self.seen_in_tmp.append(sorted(str(p.relative_to(self.tmp)) for p in self.tmp.rglob("*")))
        if self.block:
            self.entered.set()
            assert self.release.wait(LIVENESS_S)
        return self._vc.convert_mel(source, speaker)

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        self.calls["vocode"] += 1
        return self._vc.vocode(mel)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def vc():
    import clsvc

    return clsvc.load("arctic")


@pytest.fixture(scope="module")
def serve_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve-uploads")


def _client(app: Any) -> Any:
    with warnings.catch_warnings():  # newer Starlette asks for httpx2 instead of httpx; both work
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(app)


# Small limits so that the cap and duration errors need small files only.
LIMITS = dict(max_upload_bytes=512 * 1024, max_seconds=4.0)


@pytest.fixture(scope="module")
def client(vc, serve_tmp):
    from clsvc.serve import ServeLimits, create_app

    with _client(create_app(vc, ServeLimits(**LIMITS), tmp_dir=serve_tmp)) as c:
        yield c


def _gated_app(vc: Any, tmp: Path, **limits: Any) -> tuple[Any, Gated]:
    from clsvc.serve import ServeLimits, create_app

    gated = Gated(vc)
    gated.tmp = tmp
    return create_app(gated, ServeLimits(**limits), model_name="arctic", tmp_dir=tmp), gated


# ----------------------------------------------------------------------------- endpoints


@needs_serve
def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": "arctic", "busy": 0}


@needs_serve
def test_speakers_lists_voices_and_limits(client, vc):
    r = client.get("/v1/speakers")
    assert r.status_code == 200
    info = r.json()
    assert info["model"] == "arctic" and info["one_shot"] is True and info["sample_rate"] == SR
    # The card's featured voices come first (the page selects the first), then every other name.
    assert info["speakers"][:3] == ["bdl", "slt", "cathy"]
    assert sorted(info["speakers"]) == sorted(vc.speakers)
    assert info["max_seconds"] == 4.0 and info["max_upload_bytes"] == 512 * 1024
    assert info["min_seconds"] == pytest.approx(0.512)  # MIN_FRAMES (32) frames of 256 samples: stricter than 0.5


@needs_serve
def test_convert_to_named_speaker_returns_wav(client, serve_tmp):
    r = client.post("/v1/convert", files={"source": ("my clip.wav", CLIP, "audio/wav")}, data={"speaker": "slt"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert r.headers["content-disposition"] == 'attachment; filename="converted.wav"'
    assert float(r.headers["x-clsvc-seconds"]) >= 0
    info = sf.info(io.BytesIO(r.content))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 1, "PCM_16", "WAV")
    y, _ = sf.read(io.BytesIO(r.content))
    assert abs(len(y) / SR - 1.2) < 0.05
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) > 0.01
    assert list(serve_tmp.iterdir()) == []  # the request's folder is gone


@needs_serve
def test_convert_one_shot_from_references(client, serve_tmp):
    # Stereo 22.05 kHz source (down-mixed and resampled like `clsvc convert`); references in FLAC and OGG
    # Vorbis (the server names its temp files itself, without extensions: libsndfile reads the headers).
    source = wav_bytes(voiced(1.2, sr=22050, channels=2), sr=22050)
    ref = (DEMO / "cathy_arctic_b0512.flac").read_bytes()
    ogg = wav_bytes(sf.read(io.BytesIO(ref))[0], fmt="OGG", subtype="VORBIS")
    r = client.post("/v1/convert", files=[("source", ("s.wav", source, "audio/wav")),
                                          ("reference", ("cathy.flac", ref, "audio/flac")),
                                          ("reference", ("cathy.ogg", ogg, "audio/ogg"))])
    assert r.status_code == 200, r.text
    y, sr = sf.read(io.BytesIO(r.content))
    assert sr == SR and abs(len(y) / SR - 1.2) < 0.05
    assert list(serve_tmp.iterdir()) == []


# ----------------------------------------------------------------------------- errors


SILENT = wav_bytes(np.zeros(SR, np.float32))
SHORT = wav_bytes(voiced(0.3))
LONG = wav_bytes(voiced(5.0))  # max_seconds is 4
NAN = wav_bytes(np.full(SR, np.nan, np.float32), subtype="FLOAT")


@needs_serve
@pytest.mark.parametrize("files, data, status, words", [
    ({}, {"speaker": "slt"}, 422, ["source: missing"]),
    ({"source": ("a.wav", CLIP, "audio/wav")}, {}, 422, ["target voice is missing"]),
    ([("source", ("a.wav", CLIP, "audio/wav")), ("reference", ("r.wav", CLIP, "audio/wav"))], {"speaker": "slt"},
     422, ["both given"]),
    ({"source": ("a.wav", CLIP, "audio/wav")}, {"speaker": "bob"}, 422, ["unknown speaker 'bob'", "bdl, slt, cathy",
                                                                         "GET /v1/speakers"]),
    ({"source": ("a.wav", b"", "audio/wav")}, {"speaker": "slt"}, 422, ["source (a.wav)", "empty"]),
    ({"source": ("junk.wav", b"not audio at all" * 64, "audio/wav")}, {"speaker": "slt"}, 422,
     ["source (junk.wav)", "not a readable audio file"]),
    ({"source": ("quiet.wav", SILENT, "audio/wav")}, {"speaker": "slt"}, 422, ["source (quiet.wav)", "silent"]),
    ({"source": ("short.wav", SHORT, "audio/wav")}, {"speaker": "slt"}, 422, ["source (short.wav)", "0.30 s",
                                                                              "at least 0.51 s"]),
    ({"source": ("nan.wav", NAN, "audio/wav")}, {"speaker": "slt"}, 422, ["source (nan.wav)", "NaN"]),
    ([("source", ("a.wav", CLIP, "audio/wav")), ("reference", ("r.wav", SILENT, "audio/wav"))], {}, 422,
     ["reference (r.wav)", "silent"]),
    ({"source": ("long.wav", LONG, "audio/wav")}, {"speaker": "slt"}, 413, ["source (long.wav)", "at most 4 s",
                                                                            "--max-seconds"]),
    ([("source", ("a.wav", CLIP, "audio/wav")), ("source", ("b.wav", CLIP, "audio/wav"))], {"speaker": "slt"}, 422,
     ["source: given more than once"]),
    ({"source": ("a.wav", CLIP, "audio/wav")}, {"speaker": ["slt", "bdl"]}, 422, ["speaker: given more than once"]),
    ({"source": ("a.wav", CLIP, "audio/wav")}, {"speaker": ""}, 422, ["target voice is missing"]),
    ([("source", ("a.wav", CLIP, "audio/wav"))] + [("reference", (f"r{i}.wav", CLIP, "audio/wav")) for i in range(9)],
     {}, 422, ["9 files, at most 8"]),
    ({}, {"source": "text, not a file", "speaker": "slt"}, 422, ["source: sent as a text value, not a file", "multipart file field 'source'"]),
])
def test_convert_refuses_bad_requests(client, serve_tmp, caplog, files, data, status, words):
    r = client.post("/v1/convert", files=files or {"unrelated": ("x.txt", b"x", "text/plain")}, data=data)
    message = error_of(r, status)
    for w in words:
        assert w in message, message
    assert "/tmp" not in message and str(serve_tmp) not in message  # the upload is named, not the server's file
    assert list(serve_tmp.iterdir()) == []
    assert not [rec for rec in caplog.records if rec.exc_info]  # a bad request logs no traceback


@needs_serve
@pytest.mark.parametrize("kwargs", [
    dict(json={"source": "a.wav", "speaker": "slt"}),
    dict(data={"speaker": "slt"}),  # application/x-www-form-urlencoded
    dict(content=b"RIFF....", headers={"content-type": "audio/wav"}),
    dict(content=b""),
])
def test_convert_refuses_other_content_types(client, kwargs):
    message = error_of(client.post("/v1/convert", **kwargs), 415)
    assert "multipart/form-data" in message


@needs_serve
def test_malformed_multipart_is_a_client_error(client):
    r = client.post("/v1/convert", content=b"--XYZ\r\nthis is not a part",
                    headers={"content-type": "multipart/form-data; boundary=XYZ"})
    assert 400 <= r.status_code < 500
    error_of(r, r.status_code)
    r = client.post("/v1/convert", content=b"x", headers={"content-type": "multipart/form-data"})  # no boundary
    assert "cannot be parsed" in error_of(r, 400)


@needs_serve
def test_upload_over_the_cap_is_refused_from_content_length(client):
    big = b"\0" * (600 * 1024)  # over the 512 KiB cap (and over it + the 64 KiB allowed for framing)
    r = client.post("/v1/convert", files={"source": ("big.wav", big, "audio/wav")}, data={"speaker": "slt"})
    message = error_of(r, 413)
    assert "over this server's limit of 524,288 bytes" in message
    assert re.search(r"the upload \(6\d\d,\d{3} bytes\)", message)  # refused from its Content-Length


@needs_serve
def test_upload_cap_counts_the_files_exactly(client):
    # Under the body cap (cap + framing allowance) but the files together are over max_upload_bytes.
    part = b"\0" * (270 * 1024)
    r = client.post("/v1/convert", files=[("source", ("a.wav", part, "audio/wav")),
                                          ("reference", ("b.wav", part, "audio/wav"))])
    assert "552,960 bytes" in error_of(r, 413)


@needs_serve
def test_upload_cap_is_enforced_while_the_body_streams_in(vc, tmp_path):
    """No Content-Length (chunked): the body is read through a counter that stops at the cap, so an
    endless upload is answered 413 after about cap + 64 KiB, not read to its end."""
    from clsvc.serve import ServeLimits, create_app
    from clsvc.serve.app import FORM_OVERHEAD_BYTES

    cap = 64 * 1024
    app = create_app(vc, ServeLimits(max_upload_bytes=cap), tmp_dir=tmp_path)
    head = (b'--XyZ\r\nContent-Disposition: form-data; name="source"; filename="a.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n")
    chunk, chunks = 16 * 1024, 1000  # 16 MB offered
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        body = head if pulled == 1 else b"\1" * chunk
        return {"type": "http.request", "body": body, "more_body": pulled < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/convert", "raw_path": b"/v1/convert", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"test"), (b"content-type", b"multipart/form-data; boundary=XyZ"),
                         (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert "over this server's limit" in json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error"]
    assert (pulled - 1) * chunk <= cap + FORM_OVERHEAD_BYTES + chunk  # stopped right after the cap
    assert list(tmp_path.iterdir()) == []


@needs_serve
def test_one_shot_refused_for_a_model_without_it(vc, tmp_path):
    from clsvc.serve import ServeLimits, create_app

    app = create_app(Gated(vc, one_shot=False), ServeLimits(), model_name="arctic", tmp_dir=tmp_path)
    with _client(app) as c:
        assert c.get("/v1/speakers").json()["one_shot"] is False
        r = c.post("/v1/convert", files=[("source", ("a.wav", CLIP, "audio/wav")),
                                         ("reference", ("r.wav", CLIP, "audio/wav"))])
    message = error_of(r, 422)
    assert "no one-shot" in message and "'speaker'" in message


@needs_serve
def test_unexpected_failure_is_500_with_the_traceback_logged_once(vc, tmp_path, caplog):
    class Broken(Gated):
        def convert_mel(self, source: Any, speaker: Any) -> np.ndarray:
            raise RuntimeError("a bug in the model")

    from clsvc.serve import create_app

    with _client(create_app(Broken(vc), model_name="arctic", tmp_dir=tmp_path)) as c:
        r = c.post("/v1/convert", files={"source": ("a.wav", CLIP, "audio/wav")}, data={"speaker": "slt"})
    assert error_of(r, 500) == "internal error"
    logged = [rec for rec in caplog.records if rec.exc_info]
    assert len(logged) == 1 and "a bug in the model" in str(logged[0].exc_info[1])
    assert list(tmp_path.iterdir()) == []


@needs_serve
def test_load_app_by_checkpoint_name(tmp_path):
    from clsvc.serve import ServeLimits, load_app

    with _client(load_app("arctic", ServeLimits(workers=2, queue=0), tmp_dir=tmp_path)) as c:
        assert c.get("/healthz").json() == {"status": "ok", "model": "arctic", "busy": 0}


@needs_serve
def test_unknown_paths_and_methods_answer_json(client):
    assert "no such page or endpoint" in error_of(client.get("/v2/nothing"), 404)
    r = client.get("/v1/convert")
    assert "method not allowed" in error_of(r, 405)
    assert "POST" in r.headers["allow"]
    error_of(client.post("/healthz"), 405)


# ----------------------------------------------------------------------------- the pool


@needs_serve
def test_full_pool_answers_503_at_once(vc, tmp_path):
    app, gated = _gated_app(vc, tmp_path, workers=1, queue=0)
    gated.block = True
    with _client(app) as c, concurrent.futures.ThreadPoolExecutor(1) as ex:
        first = ex.submit(c.post, "/v1/convert", files={"source": ("a.wav", CLIP, "audio/wav")},
                          data={"speaker": "bdl"})
        assert gated.entered.wait(LIVENESS_S)  # the one worker is converting (and held there)
        assert c.get("/healthz").json()["busy"] == 1
        r = c.post("/v1/convert", files={"source": ("b.wav", CLIP, "audio/wav")}, data={"speaker": "slt"})
        assert "busy" in error_of(r, 503)
        assert int(r.headers["retry-after"]) >= 1
        # Uploads live under server-chosen names in a per-request folder while the job runs.
        assert len(gated.seen_in_tmp) == 1 and [p.split("/")[-1] for p in gated.seen_in_tmp[0]][1:] == ["source"]
        gated.release.set()
        done = first.result(LIVENESS_S)
        assert done.status_code == 200, done.text
        assert app.state.pool.wait_idle(LIVENESS_S)
        assert c.get("/healthz").json()["busy"] == 0
        assert gated.calls == Counter(convert_mel=1, vocode=1)
    assert list(tmp_path.iterdir()) == []


@needs_serve
def test_timeout_of_a_running_job_stops_it_before_vocoding(vc, tmp_path):
    app, gated = _gated_app(vc, tmp_path, workers=1, queue=0, timeout_s=3.0)
    gated.block = True  # the job cannot finish before the test releases it: it times out
    app.state.pool.executor.submit(int).result()  # the worker thread exists and waits: the job starts at once
    with _client(app) as c:
        r = c.post("/v1/convert", files={"source": ("a.wav", CLIP, "audio/wav")}, data={"speaker": "slt"})
        assert "took longer than 3 s" in error_of(r, 504)
        gated.release.set()
        pool = app.state.pool
        assert pool.wait_idle(LIVENESS_S)
    # Stopped at the stage boundary after convert_mel (or before it, had the timeout come during decoding).
    assert gated.calls["vocode"] == 0 and gated.calls["convert_mel"] <= 1
    assert (pool.started, pool.stopped, pool.finished, pool.cancelled) == (1, 1, 0, 0)
    assert list(tmp_path.iterdir()) == []


@needs_serve
def test_timeout_of_a_queued_job_cancels_it(vc, tmp_path):
    app, gated = _gated_app(vc, tmp_path, workers=1, queue=1, timeout_s=0.2)
    pool = app.state.pool
    hold = threading.Event()
    blocker = pool.executor.submit(hold.wait, LIVENESS_S)  # the only worker thread is busy
    with _client(app) as c:
        r = c.post("/v1/convert", files={"source": ("a.wav", CLIP, "audio/wav")}, data={"speaker": "slt"})
        error_of(r, 504)
        hold.set()
        assert blocker.result(LIVENESS_S) is True
        assert pool.wait_idle(LIVENESS_S)
    assert (pool.started, pool.cancelled) == (0, 1)  # it never ran
    assert not gated.calls
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- page and schema


@needs_serve
def test_page_and_static_files(vc, tmp_path, monkeypatch):
    import clsvc.serve.app as serve_app
    from clsvc.serve import create_app

    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>clsvc</title>")
    (static / "style.css").write_text("body { margin: 0 }")
    monkeypatch.setattr(serve_app, "STATIC_DIR", static)
    with _client(create_app(vc)) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and "clsvc" in r.text
        r = c.get("/static/style.css")
        assert r.status_code == 200 and "margin" in r.text
    # Without the page the API still starts; / says the page is missing.
    monkeypatch.setattr(serve_app, "STATIC_DIR", tmp_path / "none")
    with _client(create_app(vc)) as c:
        assert "web page is not installed" in error_of(c.get("/"), 404)
        assert c.get("/healthz").status_code == 200


@needs_serve
def test_shipped_page_is_served_when_present(client):
    from clsvc.serve.app import STATIC_DIR

    if not (STATIC_DIR / "index.html").is_file():
        pytest.skip("the web page is not in this checkout")
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


@needs_serve
def test_openapi_describes_the_api(client):
    doc = client.get("/openapi.json").json()
    assert set(doc["paths"]) == {"/healthz", "/v1/speakers", "/v1/convert"}
    assert set(doc["paths"]["/v1/convert"]) == {"post"}
    post = doc["paths"]["/v1/convert"]["post"]
    body = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    schemas = doc["components"]["schemas"]
    form = schemas[body["$ref"].rsplit("/", 1)[1]]
    assert set(form["properties"]) == {"source", "speaker", "reference"} and form["required"] == ["source"]
    assert set(post["responses"]) >= {"200", "400", "413", "415", "422", "500", "503", "504"}
    assert set(post["responses"]["200"]["content"]) == {"audio/wav"}
    assert "X-Clsvc-Seconds" in post["responses"]["200"]["headers"]
    assert "Retry-After" in post["responses"]["503"]["headers"]
    for code in ("400", "413", "415", "422", "503", "504"):
        ref = post["responses"][code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody")
    assert schemas["ErrorBody"]["required"] == ["error"]
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 body is replaced
    for path, model in (("/healthz", "Health"), ("/v1/speakers", "Speakers")):
        ok = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].endswith(f"/{model}")


# ----------------------------------------------------------------------------- the command


def test_serve_without_the_extra_is_one_line(monkeypatch, capsys):
    for name in list(sys.modules):
        if name == "clsvc.serve" or name.startswith("clsvc.serve."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("clsvc: error:")
    assert "fastapi" in err and "pip install 'clsvc[serve]'" in err


@needs_serve
@pytest.mark.parametrize("args, words", [
    (["--workers", "0"], "--workers"),
    (["--queue", "-1"], "--queue"),
    (["--max-seconds", "0"], "--max-seconds"),
    (["--timeout", "0"], "--timeout"),
    (["--max-upload-mb", "0"], "--max-upload-mb"),
    (["--host", "no-such-host.invalid"], "--host"),
    (["--port", "70000"], "--port 70000"),
])
def test_serve_refuses_bad_options_before_loading(args, words, capsys):
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


@needs_serve
def test_serve_refuses_a_port_in_use(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"127.0.0.1:{port}: cannot listen" in err


@needs_serve
def test_serve_command_runs_a_server(tmp_path):
    """The real command on a free port: the ready line with the URL, then the API over HTTP."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "clsvc", "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(LIVENESS_S, proc.kill)  # a server that never gets ready ends the readline below
    watchdog.start()
    try:
        line = proc.stdout.readline()  # blocks until the server is ready (or has exited)
        m = re.fullmatch(r"clsvc: serving arctic at (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)\n", line)
        assert m, (line, proc.poll())
        url = m.group(1)
        with urllib.request.urlopen(url + "healthz", timeout=LIVENESS_S) as r:
            assert json.load(r) == {"status": "ok", "model": "arctic", "busy": 0}
        req = urllib.request.Request(url + "v1/convert", data=b"{}", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=LIVENESS_S)
        assert e.value.code == 415 and "multipart/form-data" in json.load(e.value)["error"]
    finally:
        watchdog.cancel()
        proc.terminate()
        _, err = proc.communicate(timeout=LIVENESS_S)
    assert "Traceback" not in err


def test_spawned_server_that_cannot_start_is_one_error_with_its_output(tmp_path):
    from clsvc.serve.spawn import ServerFailed, spawned_server

    log = tmp_path / "serve.log"
    with pytest.raises(ServerFailed, match="exited with status 2") as err:
        with spawned_server(["--workers", "0"], log=log, start_timeout=60):
            pass
    assert "workers" in str(err.value) and "workers" in log.read_text()
