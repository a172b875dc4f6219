"""``clsvc serve`` fuzzed from its own OpenAPI document (schemathesis, property-based).

Schemathesis generates requests for every operation of ``/openapi.json`` (valid and invalid
multipart forms: random bytes as audio, random speaker names, missing and mistyped fields) and
checks each answer against the document: never a 5xx, only documented status codes, content
types, headers and bodies (the JSON error shape included). The app is the real one with the
shipped ``arctic`` model, in-process; few examples and no deadline, so the file runs in seconds
and is deterministic (hypothesis' derandomize).
"""

from __future__ import annotations

import os
import tempfile
import warnings

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402  (hypothesis comes with schemathesis)


def _schema(upload_dir: str):
    import clsvc
    from clsvc.serve import ServeLimits, create_app

    # Small limits: a fuzzed "audio" file never needs to be large to reach every answer.
    app = create_app(clsvc.load("arctic"), ServeLimits(max_upload_bytes=64 * 1024, max_seconds=4.0), tmp_dir=upload_dir)
    # A request the schema calls valid is refused when its bytes are not decodable audio of the right length
    # (413 / 422), which no schema can express: positive data may get those too (anything else fails).
    config = schemathesis.config.SchemathesisConfig.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "413", "422"]}}})
    with warnings.catch_warnings():  # newer Starlette asks for httpx2 instead of httpx; both work
        warnings.simplefilter("ignore")
        return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


# Built at import (schemathesis' lazy `from_fixture` does not work with pytest 9): the model loads in a second.
UPLOADS = tempfile.TemporaryDirectory(prefix="clsvc-fuzz-")
schema = _schema(UPLOADS.name)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        response = case.call_and_validate()
    assert response.status_code < 500, response.text
    assert os.listdir(UPLOADS.name) == []  # every request's upload folder is gone
