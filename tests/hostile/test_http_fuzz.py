"""HTTP fuzzing: schemathesis drives the live API from its own OpenAPI document.

A real ``watercolor api`` (gunicorn) subprocess in front of a real backend,
with a job store in a temporary directory. Every operation of
``/openapi.json`` gets generated requests, valid and invalid; each answer
must not be a 5xx, must have a status, content type, headers and body that
the document declares, and an error body must carry no internals.

One built-in check is left out: ``positive_data_acceptance`` ("a
schema-valid request is accepted"). Two rules of the API cannot be said in
OpenAPI 3.0 and make schema-valid requests fail on purpose: a model option
such as ``denoise`` is refused for a model that has no such option (422), and
a parameter given both in the query and in a multipart form is refused
(400). Both are documented in the operations' descriptions.

WTC_TEST_LONG=1 runs ten times the examples, and once more with API keys on.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hostile_stack import ApiService, assert_public_error
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from watercolor.api.openapi import openapi_document
from watercolor.config import load_settings

FAST_EXAMPLES = 20
API_KEY = "schemathesis-key-0123456789"
#: Every operation the document describes (it is built from the settings, no server needed), with
#: the modes that apply: an operation that takes no input cannot be sent invalid input.
_PATHS = openapi_document(load_settings({}))["paths"]
CASES = [(path, method.upper(), mode) for path, item in _PATHS.items() for method, operation in item.items()
         for mode in GenerationMode
         if mode is GenerationMode.POSITIVE or operation.get("parameters") or operation.get("requestBody")
         or "{" in path]


@pytest.fixture(scope="module")
def fuzzed_api(hostile_backend, hostile_logs, tmp_path_factory) -> Iterator[ApiService]:
    data_dir = tmp_path_factory.mktemp("jobs")
    api = ApiService(hostile_logs, [hostile_backend.label], api_workers=8, api_deadline=60,
                     data_dir=data_dir, max_input_pixels=4_000_000, max_output_pixels=16_000_000)
    api.start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_api):
    return schemathesis.openapi.from_url(f"{fuzzed_api.url}/openapi.json")


def _content_type(response) -> str:
    value = response.headers.get("Content-Type") or response.headers.get("content-type") or ""
    return value[0] if isinstance(value, list) else value


def fuzz(schema, path: str, method: str, mode: GenerationMode, examples: int,
         headers: dict[str, str] | None = None) -> None:
    operation = schema[path][method]

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(mode))
    def run(case):
        response = case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance],
                                          timeout=60)
        if response.status_code >= 400 and path != "/metrics":
            assert_public_error(response.status_code, response.content, _content_type(response))

    run()


@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=[f"{m} {p} {g.value}" for p, m, g in CASES])
def test_no_5xx_and_every_answer_as_documented(api_schema, path, method, mode, long_run):
    fuzz(api_schema, path, method, mode, FAST_EXAMPLES * (10 if long_run else 1))


@pytest.fixture(scope="module")
def keyed_api(hostile_backend, hostile_logs, tmp_path_factory) -> Iterator[ApiService]:
    api = ApiService(hostile_logs, [hostile_backend.label], api_workers=8, api_deadline=60,
                     data_dir=tmp_path_factory.mktemp("keyed-jobs"), api_keys=API_KEY)
    api.start()
    yield api
    api.stop()


@pytest.mark.slow
@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "without-key"])
def test_with_api_keys_every_answer_is_still_as_documented(keyed_api, with_key):
    """The document with keys on lists 401 for the protected operations; with the key, all as above."""
    schema = schemathesis.openapi.from_url(f"{keyed_api.url}/openapi.json")
    headers = {"Authorization": f"Bearer {API_KEY}"} if with_key else None
    for path, method, mode in CASES:
        fuzz(schema, path, method, mode, FAST_EXAMPLES, headers=headers)
