"""Hostile inputs: every case of the generated corpus gets a correct result or a specific 4xx.

Three levels, each over the same corpus (:mod:`hostile_corpus`):

1. the pipeline in this process, family by family (fast, precise reports);
2. a real backend subprocess, with its memory measured from /proc before,
   between and after two passes over the whole corpus: flat, and with a peak
   that shows no bomb was ever decoded;
3. the HTTP API subprocess in front of it: the same answers as HTTP statuses
   and JSON error bodies that carry no internals, and the API's memory flat.

WTC_TEST_LONG=1 makes the corpus several times larger.
"""

from __future__ import annotations

import http.client
import io
import json
import time
import urllib.parse
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hostile_corpus import FAMILIES, LIMITS, UNSTORABLE_MODES, Case, corpus, judge_result, mode_image
from hostile_stack import MIB, assert_public_error, send, status_of
from PIL import Image

from watercolor import errors
from watercolor.config import load_settings
from watercolor.params import parse_params
from watercolor.processing import imageio
from watercolor.processing.engine import Engine
from watercolor.processing.pipeline import Pipeline
from watercolor.protocol import FrameType

#: How much a backend's or the API's resident memory may grow over a second pass of the corpus.
FLAT_GROWTH_KIB = 48 * MIB
#: A backend's peak memory over the whole corpus: its base, plus for each of its two slots an
#: output at the pixel cap in float32 RGB, a few copies deep (40 bytes a pixel). One of the
#: gigapixel bombs in the corpus, decoded, would need tens of gigabytes.
BACKEND_PEAK_KIB = 400 * MIB + 2 * LIMITS["max_output_pixels"] * 40 // 1024


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    settings = load_settings({}, threads=1, **LIMITS)
    return Pipeline(settings, Engine.from_settings(settings))


def _outcome_in_pipeline(pipeline: Pipeline, case: Case) -> str | None:
    """None when the pipeline's answer to ``case`` is acceptable; else a line saying what happened."""
    try:
        params = parse_params(case.params, default_model="lanczos", max_scale=8)
        output = pipeline.run(case.data, params)
    except errors.WatercolorError as exc:
        if exc.code in case.expect and exc.status < 500:
            return None
        return f"{case.id}: {exc.code} ({exc.message}), expected {sorted(case.expect)}"
    except Exception as exc:  # noqa: BLE001 - an unexpected exception is exactly the finding
        return f"{case.id}: unexpected {exc!r}"
    if "ok" not in case.expect:
        return f"{case.id}: a result, expected {sorted(case.expect)}"
    problem = judge_result(case, output.data, (output.input_width, output.input_height))
    return f"{case.id}: {problem}" if problem else None


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_each_family_gets_results_or_specific_4xx_from_the_pipeline(pipeline, kind, long_run):
    cases = FAMILIES[kind](long_run)
    problems = [p for p in (_outcome_in_pipeline(pipeline, c) for c in cases) if p]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mode", UNSTORABLE_MODES)
def test_modes_no_file_stores_still_convert(mode):
    """HSV, La and RGBa only exist in memory; the conversion still handles them."""
    image = mode_image(mode)
    pixels = imageio.to_pixels(image)
    assert pixels.colour.shape == (image.height, image.width, 3)
    assert pixels.colour.dtype == np.float32 and 0 <= pixels.colour.min() <= pixels.colour.max() <= 1
    back = imageio.to_image(pixels.colour, pixels.alpha, grey=pixels.grey, deep=pixels.deep)
    assert back.size == image.size
    assert (pixels.alpha is not None) == (mode != "HSV")


# --- a live backend --------------------------------------------------------------------------------


def _outcome_at_backend(address, case: Case) -> str | None:
    try:
        reply = send(address, case.data, case.params)
    except Exception as exc:  # noqa: BLE001 - a dropped connection is a finding
        return f"{case.id}: no answer from the backend: {exc!r}"
    if reply.type is FrameType.ERROR:
        code = reply.header.get("code")
        if code in case.expect and status_of(code) < 500:
            return None
        return f"{case.id}: {code} ({reply.header.get('message')}), expected {sorted(case.expect)}"
    if reply.type is not FrameType.RESULT:
        return f"{case.id}: {reply.type.name} {reply.header}"
    if "ok" not in case.expect:
        return f"{case.id}: a result, expected {sorted(case.expect)}"
    size = None
    if case.size is None:
        scale = float(case.params.get("scale", 2))
        size = (round(reply.header["width"] / scale), round(reply.header["height"] / scale))
    problem = judge_result(case, reply.payload, size)
    return f"{case.id}: {problem}" if problem else None


def _pass(address, cases: list[Case]) -> list[str]:
    with ThreadPoolExecutor(max_workers=3) as pool:  # concurrent, like a real API would send them
        return [p for p in pool.map(lambda c: _outcome_at_backend(address, c), cases) if p]


def test_the_corpus_leaves_a_live_backend_up_with_flat_memory(hostile_backend, long_run):
    cases = corpus(long_run)
    first = _pass(hostile_backend.address, cases)
    assert not first, "\n".join(first)
    between = hostile_backend.memory()
    second = _pass(hostile_backend.address, cases)
    after = hostile_backend.memory()
    assert not second, "\n".join(second)

    assert hostile_backend.alive()
    end = time.monotonic() + 10  # an error reply lingers briefly before its place is given back
    while (pong := hostile_backend.ping()).header["running"] or pong.header["waiting"]:
        assert time.monotonic() < end, f"places still held after the corpus: {pong.header}"
        time.sleep(0.05)
    growth = after["VmRSS"] - between["VmRSS"]
    print(f"backend over {len(cases)} hostile inputs: RSS {between['VmRSS'] // 1024} -> "
          f"{after['VmRSS'] // 1024} MiB, peak {after['VmHWM'] // 1024} MiB")
    assert growth < FLAT_GROWTH_KIB, f"RSS grew by {growth // 1024} MiB over the second pass"
    assert after["VmHWM"] < BACKEND_PEAK_KIB, f"peak RSS {after['VmHWM'] // 1024} MiB"


# --- through the HTTP API ----------------------------------------------------------------------------


def _post(api, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=120)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _query(params: dict) -> str:
    return urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})


def _multipart(case: Case) -> tuple[bytes, str]:
    boundary = "hostile-boundary-7d1f"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"{case.filename}\"\r\nContent-Type: {case.content_type}\r\n\r\n").encode()
    return head + case.data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _outcome_at_api(api, case: Case, multipart: bool = False) -> str | None:
    path = "/v1/upscale?" + _query(case.params)
    body, ctype = _multipart(case) if multipart else (case.data, case.content_type)
    try:
        status, headers, answer = _post(api, path, body, ctype)
    except OSError as exc:
        return f"{case.id}: no HTTP answer: {exc!r}"
    where = f"{case.id}{' (multipart)' if multipart else ''}"
    if status >= 400:
        try:
            document = assert_public_error(status, answer, headers.get("content-type", ""))
        except AssertionError as exc:
            return f"{where}: {exc}"
        code = document["error"]["code"]
        if code in case.expect and status == status_of(code) and status < 500:
            return None
        return f"{where}: {status} {code}, expected {sorted(case.expect)}"
    if "ok" not in case.expect:
        return f"{where}: {status}, expected {sorted(case.expect)}"
    if status != 200:
        return f"{where}: status {status}"
    disposition = headers.get("content-disposition", "")
    if "/" in disposition or ".." in disposition or "\\" in disposition:
        return f"{where}: unsafe result name {disposition!r}"
    size = None
    if case.size is None:
        scale = float(case.params.get("scale", 2))
        size = (round(int(headers["x-watercolor-width"]) / scale),
                round(int(headers["x-watercolor-height"]) / scale))
    problem = judge_result(case, answer, size)
    return f"{where}: {problem}" if problem else None


def test_the_corpus_through_the_http_api(hostile_api, hostile_backend, long_run):
    cases = corpus(long_run)
    before = hostile_api.memory()
    with ThreadPoolExecutor(max_workers=3) as pool:
        problems = [p for p in pool.map(lambda c: _outcome_at_api(hostile_api, c), cases) if p]
        lying = [c for c in cases if c.kind == "lying_name"]
        problems += [p for p in pool.map(lambda c: _outcome_at_api(hostile_api, c, True), lying) if p]
    after = hostile_api.memory()
    assert not problems, "\n".join(problems)
    assert hostile_api.alive() and hostile_backend.alive()
    assert json.loads(hostile_api.get("/readyz")[1])["status"] == "ready"
    growth = after["VmRSS"] - before["VmRSS"]
    print(f"API over {len(cases)} hostile inputs: RSS {before['VmRSS'] // 1024} -> "
          f"{after['VmRSS'] // 1024} MiB, peak {after['VmHWM'] // 1024} MiB")
    assert growth < FLAT_GROWTH_KIB * 2, f"API RSS grew by {growth // 1024} MiB"


def test_a_multipart_batch_of_hostile_files_answers_one_entry_per_file(hostile_api):
    """Good and bad files in one upload: a 207 zip with a result or an error entry for each, in order."""
    picks = [c for c in corpus(False, ("lying_name", "pixel_bomb"))][::3]
    boundary = "hostile-batch-41c9"
    body = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{n}-{c.filename}\"\r\n"
        f"Content-Type: {c.content_type}\r\n\r\n".encode() + c.data + b"\r\n" for n, c in enumerate(picks))
    body += f"--{boundary}--\r\n".encode()
    status, headers, answer = _post(hostile_api, "/v1/upscale?model=lanczos&scale=2", body,
                                    f"multipart/form-data; boundary={boundary}")
    assert status == 207, answer[:300]
    names = zipfile.ZipFile(io.BytesIO(answer)).namelist()
    assert len(names) == len(picks) == int(headers["x-watercolor-images"])
    for name, case in zip(names, picks, strict=True):
        assert "/" not in name and ".." not in name
        assert name.endswith(".error.json") == ("ok" not in case.expect), (name, case.id)
    assert int(headers["x-watercolor-failed"]) == sum("ok" not in c.expect for c in picks)


def test_results_of_every_stored_mode_look_like_their_input(pipeline):
    """A spot check beyond sizes: grey stays grey, and colour is kept, for every stored mode."""
    for case in corpus(False, ("mode",)):
        params = parse_params(case.params, default_model="lanczos", max_scale=8)
        out = Image.open(io.BytesIO(pipeline.run(case.data, params).data))
        source = Image.open(io.BytesIO(case.data))
        grey_in = source.mode in ("1", "L", "LA", "I", "F") or source.mode.startswith("I;16") or (
            source.mode in ("P", "PA") and _grey_palette(source))
        assert (out.mode in ("L", "LA", "I;16", "I")) == grey_in, (case.id, source.mode, out.mode)


def _grey_palette(image: Image.Image) -> bool:
    colours = np.asarray(image.convert("RGB"))
    return bool((colours[..., 0] == colours[..., 1]).all() and (colours[..., 1] == colours[..., 2]).all())
