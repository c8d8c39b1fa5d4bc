"""Conformance of predict request bodies: one row per body, with its written-down verdict,
sent to the real model server (Flask app + ModelServer + a loaded SavedModel) on every
predict route. The same table is in docs/serving.md ("Request rules").

The rules are TF Serving's JSON rules (which Vertex AI's prebuilt TensorFlow container
applies too) plus Vertex AI's 1.5 MB request limit; a bad body is a JSON 400 naming the
instance and field, never a 5xx, and no message tells the caller to send null.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from cascade.serving.request_rules import MAX_BODY_BYTES
from tests.unit.serving.saved_models import export_typed_model, serving_one_version

NOW = datetime(2026, 11, 27, tzinfo=UTC)
ROW = {"age": 30.5, "count": 2, "city": "paris", "key": "k-1"}
SCORE = 30.5 + 2 + len("paris")


def body(**changes: Any) -> bytes:
    """One instance: ROW with ``changes`` (None values stay as JSON null)."""
    return json.dumps({"instances": [{**ROW, **changes}]}).encode()


def without(name: str) -> bytes:
    return json.dumps({"instances": [{k: v for k, v in ROW.items() if k != name}]}).encode()


def raw(document: Any) -> bytes:
    return json.dumps(document).encode()


def oversized() -> bytes:
    filler = "x" * (MAX_BODY_BYTES + 10)
    return raw({"instances": [{**ROW, "city": filler}]})


def just_under_the_limit() -> bytes:
    plain = body()
    return body(city="x" * (MAX_BODY_BYTES - len(plain) - 10))


def deeply_nested(depth: int) -> bytes:
    return b'{"instances": [{"age": ' + b"[" * depth + b"]" * depth + b"}]}"


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    status: int
    says: str  # in the error message (400) / "" for 200
    score: float | None = None  # the prediction's score (200)


CASES = [
    Case("a valid row", body(), 200, "", SCORE),
    Case("missing field", without("count"), 400, "instance 0: missing input 'count'"),
    Case("missing key", without("key"), 400, "instance 0: missing input 'key'"),
    Case("extra field", body(income=5), 400, "instance 0: unknown field 'income'"),
    Case("null float", body(age=None), 400, "write a missing value as NaN"),
    Case("null string", body(city=None), 400, 'write a missing value as ""'),
    Case("null int", body(count=None), 400, "input 'count' (DT_INT64) must be an integer"),
    Case("NaN float", body(age=float("nan")), 200, "", 2 + 5),
    Case("Infinity float", body(age=float("inf")), 200, "", 2 + 5),
    Case("-Infinity float", body(age=float("-inf")), 200, "", 2 + 5),
    Case("empty string", body(city=""), 200, "", 30.5 + 2),
    Case("int into a float input", body(age=30), 200, "", 30 + 2 + 5),
    Case("1.0 into an int input", body(count=1.0), 400, "must be an integer (1, not 1.0)"),
    Case("int beyond int64", body(count=2**63), 400, "input 'count' (DT_INT64) must be within"),
    Case("float beyond float32", body(age=1e39), 400, "input 'age' (DT_FLOAT) must be within"),
    Case("string into a float input", body(age="30"), 400, "input 'age' (DT_FLOAT) must be"),
    Case("number into a string input", body(city=7), 400, "input 'city' (DT_STRING) must be"),
    Case("bool into a float input", body(age=True), 400, "got a boolean true"),
    Case("number as the key", body(key=7), 400, "input 'key' (DT_STRING) must be"),
    Case("b64 string", body(city={"b64": "cGFyaXM="}), 200, "", SCORE),
    Case("bad b64", body(city={"b64": "not base64!"}), 400, 'valid base64 in {"b64": ...}'),
    Case("array value", body(age=[1.0]), 400, "got an array"),
    Case("empty instances", raw({"instances": []}), 400, '"instances" must be a non-empty'),
    Case("instances not a list", raw({"instances": ROW}), 400, '"instances" must be'),
    Case("non-object instance", raw({"instances": [[30.5, 2]]}), 400, "instance 0 must be"),
    Case("wrong top-level key", raw({"rows": [ROW]}), 400, "unknown top-level field 'rows'"),
    Case("columnar inputs", raw({"inputs": {"age": [1.0]}}), 400, 'columnar "inputs"'),
    Case("top-level array", raw([ROW]), 400, "must be a JSON object"),
    Case("parameters object", raw({"instances": [ROW], "parameters": {}}), 200, "", SCORE),
    Case("parameters not an object", raw({"instances": [ROW], "parameters": 1}), 400, "param"),
    Case("other signature", raw({"instances": [ROW], "signature_name": "x"}), 400, "signature"),
    Case("not JSON", b"{nope", 400, "not valid JSON"),
    Case("not UTF-8", b'{"instances": [{"city": "\xff"}]}', 400, "not valid JSON"),
    Case("body over 1.5 MB", oversized(), 400, "Request payload size exceeds the limit: 1572864"),
    Case("body just under 1.5 MB", just_under_the_limit(), 200, ""),
    Case("nesting depth 10,000", deeply_nested(10_000), 400, "deeper than 32 levels"),
    Case("nesting depth 33", deeply_nested(30), 400, "deeper than 32 levels"),
]
ROUTES = {
    "tf-serving": "/v1/models/typed:predict",
    "tf-serving-version": "/v1/models/typed/versions/1:predict",
    "vertex-api": "/v1/projects/p/locations/europe-west4/endpoints/typed:predict",
    "vertex-container-default": "/v1/endpoints/typed/deployedModels/1:predict",
    "aip-predict-route": "/predict",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("conformance")
    model = export_typed_model(root / "typed")
    with serving_one_version(model, "typed", root, model_name="typed") as served:
        yield served


def _message(route: str, answer: Any) -> str:
    error = answer["error"]
    if route == "vertex-api":  # Google's error shape on the public API
        assert error["status"] == "INVALID_ARGUMENT"
        return str(error["message"])
    return str(error)


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_request_body_verdict(client: Client, case: Case, route: str) -> None:
    response = client.post(
        ROUTES[route], data=case.body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == case.status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    answer = json.loads(response.get_data())
    if case.status == 200:
        [prediction] = answer["predictions"]
        assert prediction["key"] == json.loads(case.body)["instances"][0]["key"]
        if case.score is not None:
            assert prediction["score"] == pytest.approx(case.score)
    else:
        message = _message(route, answer)
        assert case.says in message
        assert "send null" not in message


def test_verdicts_are_documented() -> None:
    """Every case is a row of docs/serving.md's table, with the same verdict."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "serving.md").read_text()
    for case in CASES:
        verdict = "200" if case.status == 200 else "400"
        assert f"| {case.name} |" in doc, case.name
        row = next(line for line in doc.splitlines() if line.startswith(f"| {case.name} |"))
        assert f"| {verdict} " in row, row


def test_chunked_body_over_the_limit_is_refused(client: Client) -> None:
    """Without a Content-Length the server still stops at the limit."""
    response = client.post(
        ROUTES["tf-serving"],
        input_stream=io.BytesIO(oversized()),
        headers={"Transfer-Encoding": "chunked"},
    )

    assert response.status_code == 400
    assert "exceeds the limit" in response.get_json()["error"]
