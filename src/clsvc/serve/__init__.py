"""``clsvc serve``: voice conversion over HTTP (a FastAPI app run by uvicorn) with a web page.

The app (:func:`create_app`) holds one loaded :class:`~clsvc.inference.Converter`, shared by all
requests, and converts in a bounded pool of worker threads; :class:`ServeLimits` sets the upload,
duration, pool and timeout limits. :mod:`clsvc.serve.app` documents the API (also served as
OpenAPI at ``/openapi.json``).

This package needs the ``serve`` extra (``pip install 'clsvc[serve]'``: FastAPI, uvicorn and
python-multipart). Without it, importing it raises :class:`MissingExtra`, which is both an
ImportError (so ``pytest.importorskip`` and optional imports work) and a
:class:`~clsvc.errors.ClsvcError` (so ``clsvc serve`` prints one line saying what to install).
"""

from __future__ import annotations

import importlib.util

from ..errors import ClsvcError


class MissingExtra(ClsvcError, ImportError):
    """The ``serve`` extra is not installed (FastAPI, uvicorn or python-multipart is missing)."""


def _missing() -> list[str]:
    """The distributions of the ``serve`` extra that cannot be imported."""
    # python-multipart is imported as `python_multipart` from 0.0.13 on, as `multipart` before.
    wanted = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",), "python-multipart": ("python_multipart", "multipart")}
    return [dist for dist, modules in wanted.items()
            if not any(importlib.util.find_spec(m) is not None for m in modules)]


if _missing():
    raise MissingExtra(f"clsvc serve needs {', '.join(_missing())}, which are not installed; "
                       "pip install 'clsvc[serve]'")

from .app import ServeError, ServeLimits, create_app, load_app, run_server  # noqa: E402

__all__ = ["MissingExtra", "ServeError", "ServeLimits", "create_app", "load_app", "run_server"]
