"""The HTTP API of ``clsvc serve``: a FastAPI app around one loaded :class:`~clsvc.inference.Converter`.

Endpoints (the OpenAPI document at ``/openapi.json`` describes the same, ``/docs`` renders it):

* ``GET /healthz`` -> ``{"status": "ok", "model": NAME, "busy": JOBS}`` (``busy``: conversions
  admitted and not finished, queued ones included).
* ``GET /v1/speakers`` -> ``{"model", "speakers", "one_shot", "sample_rate", "max_seconds",
  "min_seconds", "max_upload_bytes"}``: the names ``speaker`` takes (a shipped model's featured
  speakers first, e.g. bdl, slt, cathy for ``arctic``), whether ``reference`` audio works, the
  output rate (Hz) and the limits (seconds of audio, bytes of upload).
* ``POST /v1/convert``, ``multipart/form-data``: ``source`` (one audio file, required) and the
  target voice as EITHER the text field ``speaker`` (a name from ``/v1/speakers``) OR one or more
  files in ``reference`` (one-shot models only), not both. Audio is anything libsndfile reads
  (WAV, FLAC, OGG, ...), mono or multi-channel (averaged), any rate from 8 kHz (resampled to the
  model's rate as ``clsvc convert`` does). Answers ``audio/wav`` (16-bit PCM, mono, the model's
  rate) with ``Content-Disposition: attachment; filename="converted.wav"`` and
  ``X-Clsvc-Seconds`` (the job's wall time in seconds: decoding, conversion and vocoding).
* ``GET /`` the web page (``static/index.html``) and ``/static/...`` its files, when installed.

Errors are JSON ``{"error": "<one line naming the field or file and the fix>"}``:

* 400: the multipart body cannot be parsed (no boundary, truncated, ...).
* 404 / 405: no such path / method.
* 413: an upload over ``max_upload_bytes`` (refused from ``Content-Length`` before the body is
  read, else while it is read: at most ``max_upload_bytes`` + 64 KiB of form framing is read), or
  audio longer than ``max_seconds``.
* 415: a body that is not ``multipart/form-data`` (JSON, urlencoded, none).
* 422: missing or repeated fields, both or neither of ``speaker`` / ``reference``, an unknown
  speaker (the message lists valid names), ``reference`` for a model without one-shot voices,
  more than :data:`MAX_REFERENCES` references, and audio that is empty, unreadable, silent or
  shorter than ``min_seconds`` (all content errors are 422, the body itself was well-formed).
* 503 + ``Retry-After`` (whole seconds): ``workers + queue`` conversions are already admitted;
  answered at once (before the upload is read when the server is full on arrival). Also to a
  conversion cut short because the server is shutting down.
* 504: the conversion did not finish within ``timeout_s`` (counted from the moment the job is
  queued, after the upload has arrived).
* 500 ``{"error": "internal error"}``: a bug; the traceback is logged once (logger ``clsvc.serve``).

Concurrency and timeouts: conversions run in a pool of ``workers`` threads sharing the one
model; at most ``workers + queue`` are admitted at a time. A job that times out while queued is
cancelled and never runs. A running job cannot be interrupted inside a stage, so it is stopped at
the next stage boundary (after decoding each file, after the target voice, after the mel
conversion, before vocoding): the stage in progress runs to its end, everything after it is
skipped and nothing is returned; its slot is freed when its thread is (so ``busy`` and the
503 limit count it until then).

Uploads are copied into a per-request folder made with :func:`tempfile.mkdtemp` (files named by the
server, never by the client) and read with :func:`clsvc.audio.load_wav`; the folder is deleted
when the request ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import logging
import math
import re
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
import numpy as np
import soundfile as sf
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive

from ..audio import load_wav
from ..errors import ClsvcError
from ..inference import MIN_FRAMES
from ..pretrained import DEFAULT_VOCODER

if TYPE_CHECKING:
    import socket

    from ..inference import Converter

log = logging.getLogger("clsvc.serve")

#: The web page's folder (written separately; the API works without it).
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Bytes of multipart framing (boundaries, part headers, the speaker field) allowed on top of
#: ``max_upload_bytes`` while the body streams in; the files' own sizes are then checked exactly.
FORM_OVERHEAD_BYTES = 64 * 1024
#: Most ``reference`` files in one request (each is decoded and embedded: bounded work).
MAX_REFERENCES = 8
#: Bytes copied per read when an upload is written to the request's folder.
_COPY_BYTES = 1 << 20
#: Samples (frames x channels) decoded per read while an upload's duration is measured.
_SCAN_SAMPLES = 1 << 18
#: Shown in the 404 of an unknown path.
_ENDPOINTS = "GET /healthz, GET /v1/speakers, POST /v1/convert, GET / (the page), GET /docs"


@dataclass(frozen=True)
class ServeLimits:
    """What one server accepts and how much it does at once.

    ``max_upload_bytes``: bytes of audio files in one request (source and references together);
    ``max_seconds`` / ``min_seconds``: the longest and shortest audio accepted, in seconds, per
    file (the shortest is raised to the model's own minimum, ``MIN_FRAMES`` frames, when that is
    longer); ``workers``: conversions run at once (threads sharing the model); ``queue``: further
    conversions admitted to wait for a worker (beyond them: 503); ``timeout_s``: seconds a job may
    take from being queued to its result (beyond: 504, and the job is cancelled or stopped).
    Values out of range are one ClsvcError naming the ``clsvc serve`` option.
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_seconds: float = 60.0
    min_seconds: float = 0.5
    workers: int = 1
    queue: int = 4
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        checks = [
            (self.max_upload_bytes >= 1024, "max_upload_bytes", self.max_upload_bytes, "at least 1 KiB",
             "--max-upload-mb"),
            (0 < self.max_seconds <= 3600 and math.isfinite(self.max_seconds), "max_seconds", self.max_seconds,
             "in (0, 3600] seconds", "--max-seconds"),
            (0 <= self.min_seconds < self.max_seconds, "min_seconds", self.min_seconds,
             "at least 0 and below max_seconds", "--max-seconds"),
            (self.workers >= 1, "workers", self.workers, "at least 1", "--workers"),
            (self.queue >= 0, "queue", self.queue, "0 or more", "--queue"),
            (0 < self.timeout_s and math.isfinite(self.timeout_s), "timeout_s", self.timeout_s,
             "a positive number of seconds", "--timeout"),
        ]
        for ok, name, value, want, flag in checks:
            if not ok:
                raise ClsvcError(f"{flag}: {name} = {value} is out of range; give {want}")


class ServeError(StarletteHTTPException):
    """A request the server refuses: ``status`` (4xx/5xx) and a one-line ``message`` that names the
    field or file and the fix; answered as JSON ``{"error": message}`` with ``headers``.

    A subclass of Starlette's HTTPException, so that one raised while FastAPI reads the body (the
    upload cap) keeps its status instead of becoming FastAPI's generic 400."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.message = message


class _Stopped(Exception):
    """A job that timed out, stopped at a stage boundary (its result is not wanted)."""


# ------------------------------------------------------------------------- response models


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str = Field(description="One line naming the offending field or file and the fix.",
                       examples=["speaker: unknown speaker 'bob'; speakers of arctic: bdl, slt, cathy"])


class Health(BaseModel):
    status: str = Field(description="Always 'ok' when the server answers.", examples=["ok"])
    model: str = Field(description="The loaded model's name.", examples=["arctic"])
    busy: int = Field(ge=0, description="Conversions admitted and not finished (queued ones included).")


class Speakers(BaseModel):
    model: str = Field(description="The loaded model's name.", examples=["arctic"])
    speakers: list[str] = Field(description="Names the 'speaker' field of /v1/convert takes (featured ones first).")
    one_shot: bool = Field(description="Whether 'reference' audio can give the target voice.")
    sample_rate: int = Field(description="Sample rate of the converted audio (Hz).", examples=[16000])
    max_seconds: float = Field(description="Longest audio accepted per file (seconds).")
    min_seconds: float = Field(description="Shortest audio accepted per file (seconds).")
    max_upload_bytes: int = Field(description="Most bytes of audio files in one request.")


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"model": ErrorBody, "description": description}
    if headers:
        out["headers"] = headers
    return out


_CONVERT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The converted speech: 16-bit PCM WAV, mono, at the model's sample rate.",
        "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "X-Clsvc-Seconds": {"description": "Wall time of the job (decode, convert, vocode), seconds.",
                                "schema": {"type": "number", "minimum": 0}},
            "Content-Disposition": {"description": 'attachment; filename="converted.wav"',
                                    "schema": {"type": "string"}},
        },
    },
    400: _error("The multipart body cannot be parsed."),
    413: _error("The upload is over max_upload_bytes, or an audio file is longer than max_seconds."),
    415: _error("The body is not multipart/form-data."),
    422: _error("Missing, repeated or conflicting fields, an unknown speaker, references for a model without "
                "one-shot voices, or audio that is empty, unreadable, silent or too short."),
    500: _error("A bug in the server (the traceback is in its log)."),
    503: _error("The server is full (workers + queue conversions in flight); retry later.",
                {"Retry-After": {"description": "Seconds to wait before retrying.",
                                 "schema": {"type": "integer", "minimum": 1}}}),
    504: _error("The conversion took longer than the server's timeout and was stopped."),
}


# ------------------------------------------------------------------------- the pool


class ConversionPool:
    """``workers`` threads converting, at most ``workers + queue`` jobs admitted at a time.

    Admission (:meth:`admit`) happens in the event loop; a slot is given back when its job's
    future is done (finished, failed, stopped or cancelled), so a timed-out job that is still
    running keeps its slot until its thread is free. Counters (``started``, ``cancelled``,
    ``stopped``, ``finished``) are for tests and the log.
    """

    def __init__(self, workers: int, queue: int):
        self.workers = workers
        self.capacity = workers + queue
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.in_flight = 0
        self.started = self.cancelled = self.stopped = self.finished = 0
        self._seconds = 0.0  # running mean of finished jobs' wall time (s), for Retry-After
        self._stops: set[threading.Event] = set()

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The worker threads (made on first use, again after :meth:`shutdown`)."""
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="clsvc-convert")
            return self._executor

    def full(self) -> bool:
        with self._lock:
            return self.in_flight >= self.capacity

    def retry_after(self) -> int:
        """Whole seconds until a slot is likely free: about one job's time (1 s before any finished)."""
        with self._lock:
            return max(1, math.ceil(self._seconds or 1.0))

    def busy_error(self) -> ServeError:
        wait = self.retry_after()
        return ServeError(503, f"the server is busy ({self.capacity} conversion(s) in flight, its --workers + "
                               f"--queue); retry in {wait} s", {"Retry-After": str(wait)})

    def admit(self) -> None:
        """Take a slot, or raise the 503 at once when all are taken; :meth:`release` or a
        :meth:`submit` gives it back."""
        with self._lock:
            if self.in_flight < self.capacity:
                self.in_flight += 1
                return
        raise self.busy_error()

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block (a thread, not the event loop) until no job is in flight; False after ``timeout`` s."""
        with self._idle:
            return self._idle.wait_for(lambda: self.in_flight == 0, timeout)

    def submit(self, job: Callable[[threading.Event], Any], stop: threading.Event) -> concurrent.futures.Future[Any]:
        """Run ``job(stop)`` on a worker; the admitted slot is given back when the future is done."""
        with self._lock:
            self._stops.add(stop)
        try:
            fut = self.executor.submit(self._run, job, stop)
        except BaseException:
            with self._lock:
                self._stops.discard(stop)
            self.release()
            raise
        fut.add_done_callback(lambda f: self._done(f, stop))
        return fut

    def _run(self, job: Callable[[threading.Event], Any], stop: threading.Event) -> Any:
        with self._lock:
            self.started += 1
        if stop.is_set():  # timed out between being picked up and starting
            raise _Stopped
        t0 = time.perf_counter()
        out = job(stop)
        seconds = time.perf_counter() - t0
        with self._lock:
            self._seconds = seconds if not self._seconds else 0.8 * self._seconds + 0.2 * seconds
        return out

    def _done(self, fut: concurrent.futures.Future[Any], stop: threading.Event) -> None:
        with self._lock:
            self._stops.discard(stop)
            if fut.cancelled():
                self.cancelled += 1
            elif isinstance(fut.exception(), _Stopped):
                self.stopped += 1
            else:
                self.finished += 1
        self.release()

    def shutdown(self) -> None:
        """Cancel queued jobs, ask running ones to stop at their next stage, free the threads."""
        with self._lock:
            executor, self._executor = self._executor, None
            stops = list(self._stops)
        for stop in stops:
            stop.set()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------- audio in and out


def _label(field: str, filename: str | None, index: int | None = None) -> str:
    """How messages name an upload: ``source (clip.wav)``, ``reference 2 (b.flac)``. The client's
    file name is only echoed (printable, at most 60 characters), never used as a path."""
    name = re.sub(r"[^\w .,()+@=-]", "_", (filename or "").strip())[:60]
    where = field if index is None else f"{field} {index}"
    return f"{where} ({name})" if name else where


def _check_duration(path: Path, label: str, max_seconds: float) -> None:
    """413 when ``path`` holds more than ``max_seconds`` of audio, found by decoding at most that
    much plus one block (a header can understate or omit the length, so it is not trusted).
    A file soundfile cannot read passes: :func:`clsvc.audio.load_wav` then says what is wrong."""
    try:
        with sf.SoundFile(str(path)) as f:
            rate, channels, claimed = int(f.samplerate), int(f.channels), int(f.frames)
            if rate <= 0 or channels <= 0:
                return
            limit = int(max_seconds * rate)
            # One reusable block of at most _SCAN_SAMPLES samples, whatever the channel count.
            buf = np.empty((max(1, min(_SCAN_SAMPLES // channels, limit + 1)), channels), dtype=np.float32)
            frames = 0
            while frames <= limit:
                n = len(f.read(len(buf), dtype="float32", always_2d=True, out=buf))
                if n == 0:
                    return
                frames += n
    except Exception:  # libsndfile raises several types for damaged files; load_wav words them
        return
    known = f" ({claimed / rate:.1f} s)" if limit < claimed < (1 << 62) else ""
    raise ServeError(413, f"{label}: more than {max_seconds:g} s of audio{known}, this server takes at most "
                          f"{max_seconds:g} s per file (--max-seconds); send a shorter clip")


def _decode(vc: Converter, path: Path, label: str, max_seconds: float, min_seconds: float) -> np.ndarray:
    """The upload at ``path`` as mono float32 at the model's rate, read like ``clsvc convert``
    reads files; 413 when too long, 422 when unreadable, empty, silent or too short."""
    _check_duration(path, label, max_seconds)
    try:
        wav = load_wav(path, vc.mel_cfg)
    except ClsvcError as e:  # its message names the server's temp file: name the upload instead
        raise ServeError(422, str(e).replace(str(path), label)) from None
    seconds = len(wav) / vc.sample_rate
    if seconds > max_seconds:  # (resampling can add a sample or two)
        raise ServeError(413, f"{label}: {seconds:.1f} s of audio, this server takes at most {max_seconds:g} s "
                              "per file (--max-seconds); send a shorter clip")
    if seconds < min_seconds:
        raise ServeError(422, f"{label}: only {seconds:.2f} s of audio, at least {min_seconds:.2f} s are needed; "
                              "send a longer recording")
    return wav


def _wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """A waveform in [-1, 1] as the bytes of a 16-bit PCM mono WAV file."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _save_uploads(uploads: Sequence[UploadFile], folder: Path) -> list[Path]:
    """Copy each upload into ``folder`` under a name of the server's choosing (runs in a thread)."""
    paths = []
    for i, up in enumerate(uploads):
        path = folder / ("source" if i == 0 else f"reference-{i}")
        up.file.seek(0)
        with open(path, "wb") as out:
            shutil.copyfileobj(up.file, out, _COPY_BYTES)
        paths.append(path)
    return paths


@dataclass
class _Job:
    """One conversion: the uploads' paths and labels (source first), and the target speaker's name
    (None: the references give the voice)."""

    vc: Converter
    paths: list[Path]
    labels: list[str]
    speaker: str | None
    max_seconds: float
    min_seconds: float

    def __call__(self, stop: threading.Event) -> tuple[bytes, float]:
        """Decode, convert, vocode and encode, checking ``stop`` between the stages: the WAV file's
        bytes and the seconds it took."""
        t0 = time.perf_counter()

        def checkpoint() -> None:
            if stop.is_set():
                raise _Stopped

        vc = self.vc
        wavs = []
        for path, label in zip(self.paths, self.labels, strict=True):
            wavs.append(_decode(vc, path, label, self.max_seconds, self.min_seconds))
            checkpoint()
        # The stages of Converter.convert, run one by one so that a timed-out job stops between them.
        try:
            if self.speaker is not None:
                voice = vc.speaker_embedding(self.speaker)
            else:
                voice = vc.voice([vc.reference(w) for w in wavs[1:]])
            checkpoint()
            mel = vc.convert_mel(vc.reference(wavs[0]), voice)
        except ClsvcError as e:  # checked before admission; kept so that a model's own refusal is a 422
            raise ServeError(422, str(e)) from None
        checkpoint()
        return _wav_bytes(vc.vocode(mel), vc.sample_rate), time.perf_counter() - t0


# ------------------------------------------------------------------------- the app


def _featured_speakers(vc: Converter) -> list[str]:
    """The speakers a shipped model's card names (e.g. bdl, slt, cathy), listed first."""
    from ..pretrained import card, is_shipped, shipped

    name = str(vc.checkpoint)
    try:
        found = is_shipped(name) if Path(name).is_file() else (name if shipped(name, "vc") is not None else None)
        wanted = card(found).get("speakers", []) if found else []
    except ClsvcError:  # not a shipped model after all, or its card is unreadable: no featured names
        return []
    return [s for s in wanted if s in vc.speakers]


def _form_type_error(content_type: str | None) -> ServeError | None:
    """415 unless the body is declared ``multipart/form-data``."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        return None
    got = f"Content-Type {kind}" if kind else "no Content-Type"
    return ServeError(415, f"got {got}; send multipart/form-data with the file field 'source' and the text field "
                           "'speaker' or file field(s) 'reference' (e.g. curl -F source=@in.wav -F speaker=NAME)")


def _field_hint(field: str) -> str:
    return {
        "source": "send one audio file (wav, flac, ogg) as the multipart file field 'source'",
        "speaker": "send a name from GET /v1/speakers as the text field 'speaker'",
        "reference": "send reference audio as file field(s) 'reference'",
    }.get(field, "see /docs for the fields")


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line: ``field: problem; fix`` per field."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "header", "path")]
        field = loc[0] if loc else "request"
        kind, msg, ctx = err.get("type"), str(err.get("msg", "invalid")), err.get("ctx") or {}
        if kind == "too_long" and "actual_length" in ctx:  # more reference files than MAX_REFERENCES
            got, most = ctx["actual_length"], ctx.get("max_length")
            parts.append(f"{field}: {got} files, at most {most} are taken; send fewer")
            continue
        if kind == "missing":
            problem = "missing"
        elif "Expected UploadFile" in msg:
            problem = "sent as a text value, not a file"
        else:
            problem = msg.removeprefix("Value error, ").rstrip(".")
        parts.append(f"{field}: {problem}; {_field_hint(field)}")
    text = "; ".join(dict.fromkeys(parts)) or "the request is not valid; see /docs"
    return " ".join(text.split())  # one line whatever the messages hold


def create_app(converter: Converter, limits: ServeLimits | None = None, *, model_name: str | None = None,
               tmp_dir: str | Path | None = None) -> FastAPI:
    """The ASGI app serving ``converter`` (shared by all requests) within ``limits``.

    ``model_name``: the name ``/healthz`` and ``/v1/speakers`` report (default: the checkpoint's
    file name, e.g. ``arctic``); ``tmp_dir``: where the per-request upload folders are made
    (default: the system's temp folder). ``app.state.pool`` is the :class:`ConversionPool`.
    """
    limits = limits or ServeLimits()
    vc = converter
    name = model_name or Path(str(vc.checkpoint)).name
    pool = ConversionPool(limits.workers, limits.queue)
    min_seconds = max(limits.min_seconds, MIN_FRAMES * vc.mel_cfg.hop_length / vc.sample_rate)
    # A model with no speaker table converts into no named speaker, whatever names it carries.
    names = list(vc.speakers) if getattr(vc, "speaker_table", None) is not None else []
    featured = _featured_speakers(vc) if names else []
    speakers = featured + [s for s in names if s not in featured]
    known = set(speakers)
    body_cap = limits.max_upload_bytes + FORM_OVERHEAD_BYTES
    tmp_root = str(tmp_dir) if tmp_dir is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()

    app = FastAPI(
        title="clsvc serve",
        version=_version(),
        description="Voice conversion with a ClsVC model: POST a source clip and a target voice (a speaker's name "
                    "or reference clips) to /v1/convert, get the converted speech as WAV. Every error is JSON "
                    '{"error": "..."} naming the field and the fix.',
        lifespan=lifespan,
        responses={500: _error("A bug in the server (the traceback is in its log).")},
    )
    app.state.pool = pool

    # ---- errors: one JSON shape for all of them

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, ServeError):
            message = exc.message
        elif exc.status_code == 404:
            message = f"{request.method} {request.url.path}: no such page or endpoint; the API is {_ENDPOINTS}"
        elif exc.status_code == 405:
            message = f"{request.method} {request.url.path}: method not allowed; the API is {_ENDPOINTS}"
        elif exc.status_code == 400:
            message = (f"the multipart/form-data body cannot be parsed ({exc.detail}); send a well-formed form, "
                       "e.g. curl -F source=@in.wav -F speaker=NAME")
        else:
            message = str(exc.detail)
        return JSONResponse({"error": " ".join(message.split())}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, 422)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, __: Exception) -> JSONResponse:
        # Starlette logs the traceback once after this answer (and re-raises to the server).
        return JSONResponse({"error": "internal error"}, 500)

    # ---- read-only endpoints

    @app.get("/healthz", response_model=Health, summary="Liveness and load")
    async def healthz() -> Health:
        return Health(status="ok", model=name, busy=pool.in_flight)

    @app.get("/v1/speakers", response_model=Speakers, summary="The voices and limits of this server")
    async def list_speakers() -> Speakers:
        return Speakers(model=name, speakers=speakers, one_shot=bool(vc.one_shot), sample_rate=int(vc.sample_rate),
                        max_seconds=float(limits.max_seconds), min_seconds=round(min_seconds, 3),
                        max_upload_bytes=int(limits.max_upload_bytes))

    # ---- conversion

    class UploadRoute(APIRoute):
        """Checks made before FastAPI reads the body: the content type (415), the declared length
        (413), a full pool (503); then the body is read through a counter that stops at the cap."""

        def get_route_handler(self) -> Callable[[Request], Any]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                wrong_type = _form_type_error(request.headers.get("content-type"))
                if wrong_type is not None:
                    raise wrong_type
                declared = request.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > body_cap:
                    raise _too_large(int(declared))
                if pool.full():
                    raise pool.busy_error()
                return await handler(Request(request.scope, _capped(request.receive)))

            return guarded

    def _too_large(size: int | None) -> ServeError:
        got = f" ({size:,} bytes)" if size is not None else ""
        return ServeError(413, f"the upload{got} is over this server's limit of {limits.max_upload_bytes:,} bytes of "
                               "audio (--max-upload-mb); send shorter clips or compress them (FLAC, OGG)")

    def _capped(receive: Receive) -> Receive:
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > body_cap:  # stop reading: raised through the form parser, answered as 413
                    raise _too_large(None)
            return message

        return capped

    async def convert(
        request: Request,
        source: Annotated[UploadFile, File(description="The speech to convert: one audio file (wav, flac, ogg, ...).")],
        # Optional fields without a null alternative: a form field is either sent or not.
        reference: Annotated[list[UploadFile], File(
            default_factory=list, max_length=MAX_REFERENCES,
            description=f"Target voice from 1 to {MAX_REFERENCES} clips of it (one-shot models only). Give this "
                        "or 'speaker', not both.")],
        speaker: Annotated[str, Form(description="Target voice: a name from GET /v1/speakers. "
                                                 "Give this or 'reference', not both.")] = "",
    ) -> Response:
        form = await request.form()  # already read by FastAPI (cached): only counted here
        for field in ("source", "speaker"):
            if len([v for v in form.getlist(field) if v != "" and not _empty_input(v)]) > 1:
                raise ServeError(422, f"{field}: given more than once; send one {field} field")
        if _empty_input(source):
            raise ServeError(422, f"source: no file was sent; {_field_hint('source')}")
        refs = [r for r in reference if not _empty_input(r)]  # a browser's empty file input
        if speaker and refs:
            raise ServeError(422, "speaker and reference: both given; send either the text field 'speaker' or "
                                  "reference file(s), not both")
        if not speaker and not refs:
            raise ServeError(422, "speaker / reference: the target voice is missing; send the text field 'speaker' "
                                  "(a name from GET /v1/speakers) or reference file(s) 'reference'")
        if speaker and speaker not in known:
            shown = ", ".join(speakers[:12]) + (f" ... ({len(speakers)} in all, GET /v1/speakers lists them)"
                                                 if len(speakers) > 12 else "")
            listing = (f"speakers of {name}: {shown}" if speakers
                       else f"{name} has no named speakers; send reference audio")
            raise ServeError(422, f"speaker: unknown speaker {speaker[:60]!r}; {listing}")
        if refs and not vc.one_shot:
            raise ServeError(422, f"reference: {name} converts only into its training speakers (no one-shot voices); "
                                  "send the text field 'speaker' with a name from GET /v1/speakers")
        if len(refs) > MAX_REFERENCES:
            raise ServeError(422, f"reference: {len(refs)} files, at most {MAX_REFERENCES} are taken; send fewer")
        uploads = [source, *refs]
        labels = [_label("source", source.filename)]
        labels += [_label("reference", r.filename, i + 1 if len(refs) > 1 else None) for i, r in enumerate(refs)]
        total = sum(_size(u) for u in uploads)
        if total > limits.max_upload_bytes:
            raise _too_large(total)
        for up, label in zip(uploads, labels, strict=True):
            if _size(up) == 0:
                raise ServeError(422, f"{label}: the file is empty; send a recording with speech")

        pool.admit()
        folder: Path | None = None
        stop = threading.Event()
        fut: concurrent.futures.Future[tuple[bytes, float]] | None = None
        waiter: asyncio.Future[tuple[bytes, float]] | None = None
        try:
            folder = Path(tempfile.mkdtemp(prefix="clsvc-serve-", dir=tmp_root))
            paths = await anyio.to_thread.run_sync(_save_uploads, uploads, folder)
            fut = pool.submit(_Job(vc, paths, labels, speaker or None, limits.max_seconds, min_seconds), stop)
            waiter = asyncio.wrap_future(fut)
            done, _ = await asyncio.wait({waiter}, timeout=limits.timeout_s)
            if not done:
                # A queued job is cancelled and never runs; a running one stops at its next stage boundary
                # and its result is dropped.
                queued = fut.cancel()
                if not queued:
                    stop.set()
                log.warning("clsvc serve: a conversion took longer than %g s (--timeout); %s", limits.timeout_s,
                            "it was still queued and will not run" if queued else "it stops at its next stage")
                raise ServeError(504, f"the conversion took longer than {limits.timeout_s:g} s (--timeout) and was "
                                      "stopped; send a shorter clip or retry when the server is less busy")
            data, seconds = fut.result()
        except (ServeError, ClsvcError):
            raise
        except (_Stopped, concurrent.futures.CancelledError):  # the server is shutting down (pool.shutdown)
            raise ServeError(503, "the server is shutting down; retry in a moment", {"Retry-After": "5"}) from None
        except Exception:
            log.exception("clsvc serve: conversion failed")  # the one place the traceback is logged
            return JSONResponse({"error": "internal error"}, 500)
        finally:
            if fut is None:
                pool.release()  # never submitted: the slot is still this request's
            elif not fut.done() and not fut.cancel():  # the request was cancelled (client gone, shutdown)
                stop.set()
            if waiter is not None:
                waiter.cancel()  # nobody awaits it any more (and a late exception is not logged as unretrieved)
            if folder is not None:
                # Synchronous on purpose: a few unlinks, and it must happen even while the task is cancelled.
                shutil.rmtree(folder, ignore_errors=True)
        return Response(data, media_type="audio/wav", headers={
            "Content-Disposition": 'attachment; filename="converted.wav"',
            "X-Clsvc-Seconds": f"{seconds:.3f}",
        })

    app.router.add_api_route(
        "/v1/convert", convert, methods=["POST"], response_class=Response, responses=_CONVERT_RESPONSES,
        summary="Convert speech into another voice", route_class_override=UploadRoute,
        description="multipart/form-data: 'source' (one audio file) and either 'speaker' (a name from "
                    "GET /v1/speakers) or one or more 'reference' files (one-shot). Answers audio/wav.",
    )

    @app.exception_handler(ClsvcError)
    async def clsvc_error(_: Request, exc: ClsvcError) -> JSONResponse:
        # A user error raised by the library outside the job (its message names the input and the fix).
        return JSONResponse({"error": " ".join(str(exc).split())}, 422)

    # ---- the page

    index = STATIC_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        if not index.is_file():
            raise ServeError(404, f"the web page is not installed ({index} is missing); the API works: {_ENDPOINTS}")
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})

    if STATIC_DIR.is_dir():  # (written separately: the server starts without it)
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _empty_input(value: object) -> bool:
    """A browser's empty file input: a part with an empty file name and no bytes."""
    return isinstance(value, UploadFile) and not value.filename and _size(value) == 0


def _size(upload: UploadFile) -> int:
    """Bytes of an upload (Starlette counts them as it spools the part)."""
    if upload.size is not None:
        return int(upload.size)
    pos = upload.file.tell()
    upload.file.seek(0, 2)
    size = upload.file.tell()
    upload.file.seek(pos)
    return size


def _version() -> str:
    from .. import __version__

    return __version__


def load_app(checkpoint: str | Path = "arctic", limits: ServeLimits | None = None, *, device: str = "cpu",
             vocoder: str | Path = DEFAULT_VOCODER, tmp_dir: str | Path | None = None) -> FastAPI:
    """Load ``checkpoint`` (a file or a shipped model's name) once and return :func:`create_app`'s app."""
    from ..inference import load

    vc = load(checkpoint, device=device, vocoder=vocoder)
    return create_app(vc, limits, tmp_dir=tmp_dir)


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: a free port), so that a port in use is one
    ClsvcError line before anything is served (uvicorn would log and exit)."""
    import socket

    if not 0 <= port <= 65535:
        raise ClsvcError(f"--port {port}: not a TCP port; give 1..65535 (or 0: any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ClsvcError(f"--host {host}: not an address of this machine ({e.strerror}); use 127.0.0.1 (this "
                         "machine only) or 0.0.0.0 (every interface)") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ClsvcError(f"{host}:{port}: cannot listen ({e.strerror}); pass another --port or stop the program "
                         "using it") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run_server(app: FastAPI, sock: socket.socket, on_ready: Callable[[], None] | None = None,
               log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn on the bound ``sock`` until Ctrl-C / SIGTERM; ``on_ready`` is
    called once the socket accepts connections."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None:
                on_ready()

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    Server(config).run(sockets=[sock])
