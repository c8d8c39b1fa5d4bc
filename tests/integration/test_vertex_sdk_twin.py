"""The local cloud's Vertex AI endpoint twin, as a user's process reaches it: the
unmodified SDK, configured only by the environment ``state.json`` lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import LocalCloud
from tests.integration.test_model_server import ROW, deploy
from tests.unit.serving.saved_models import expected_positive

pytestmark = pytest.mark.integration

CLIENT = """
import json, os, sys
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform, aiplatform_v1

api, name, row = os.environ["CASCADE_VERTEX_API_ENDPOINT"], sys.argv[1], json.loads(sys.argv[2])
out = {}
for transport in ("grpc", "rest"):
    client = aiplatform_v1.PredictionServiceClient(
        client_options={"api_endpoint": api}, credentials=AnonymousCredentials(),
        transport=transport)
    answer = client.predict(endpoint=name, instances=[row])
    out[transport] = [answer.deployed_model_id, list(answer.predictions[0]["probabilities"])]
    try:
        client.predict(endpoint=name + "-missing", instances=[row])
    except gexc.NotFound:
        out[transport + "-missing"] = "NotFound"
project, location = name.split("/")[1], name.split("/")[3]
aiplatform.init(project=project, location=location, api_endpoint=api,
                credentials=AnonymousCredentials())
endpoint = aiplatform.Endpoint(name)
out["sdk"] = [endpoint.predict(instances=[row]).deployed_model_id, endpoint.traffic_split]
print(json.dumps(out))
"""


def test_unmodified_sdk_reaches_the_twin(local_cloud: LocalCloud, tmp_path: Path) -> None:
    dataset = f"sdk-{uuid.uuid4().hex[:8]}"
    version = deploy(local_cloud, dataset, 1.0, tmp_path)
    environment = local_cloud.refresh_state().environment
    name = f"projects/{environment['CASCADE_PROJECT']}/locations/"
    name += f"{environment['CASCADE_REGION']}/endpoints/{dataset}"

    result = subprocess.run(
        [sys.executable, "-c", CLIENT, name, json.dumps(ROW)],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    expected = expected_positive(ROW["age"], ROW["city"])
    for transport in ("grpc", "rest"):
        assert out[transport][0] == version
        assert out[transport][1][1] == pytest.approx(expected, abs=1e-6)
        assert out[f"{transport}-missing"] == "NotFound"
    assert out["sdk"] == [version, {version: 100}]
