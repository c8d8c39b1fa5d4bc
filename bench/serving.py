"""Model server benchmark: latency of one row and throughput with 8 clients, beside a naive
Flask endpoint calling Keras ``model.predict`` on the same model, in the same run.

    .venv/bin/python bench/serving.py            # writes bench/results/serving.json

Needs ``wrk`` (``apt-get install -y wrk``), a compiled load generator, so the client does
not eat the servers' CPU. Both servers run under gunicorn with the same worker count on
127.0.0.1; the model server follows ``serving.json`` in a private fake-gcs-server, exactly
as in the local cloud. The model is a Keras model with the trainer's shape: raw inputs →
Normalization / StringLookup(one_hot) → Dense → sigmoid, exported with the trainer's
serving signature (raw features + passthrough key → probabilities, class_ids, classes).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ROW = {"age": 42.0, "city": "lyon", "income": 52000.0, "segment": "b", "key": "bench-1"}
BODY = json.dumps({"instances": [ROW]})
CITIES = ["paris", "lyon", "nice", "lille"]
SEGMENTS = ["a", "b", "c"]


# -- the model ------------------------------------------------------------------------------


def build_model() -> Any:
    import keras

    inputs = {
        "age": keras.Input(shape=(), dtype="float32", name="age"),
        "income": keras.Input(shape=(), dtype="float32", name="income"),
        "city": keras.Input(shape=(), dtype="string", name="city"),
        "segment": keras.Input(shape=(), dtype="string", name="segment"),
    }
    age = keras.layers.Normalization(mean=40.0, variance=144.0)(
        keras.layers.Reshape((1,))(inputs["age"])
    )
    income = keras.layers.Normalization(mean=50000.0, variance=1e8)(
        keras.layers.Reshape((1,))(inputs["income"])
    )
    city = keras.layers.StringLookup(vocabulary=CITIES, output_mode="one_hot")(inputs["city"])
    segment = keras.layers.StringLookup(vocabulary=SEGMENTS, output_mode="one_hot")(
        inputs["segment"]
    )
    hidden = keras.layers.Dense(64, activation="relu")(
        keras.layers.Concatenate()([age, income, city, segment])
    )
    hidden = keras.layers.Dense(32, activation="relu")(hidden)
    output = keras.layers.Dense(1, activation="sigmoid")(hidden)
    return keras.Model(inputs, output)


def export(model: Any, directory: Path) -> None:
    """The trainer's serving signature: raw features + key in; probabilities, ids, key out."""
    import keras
    import tensorflow as tf

    specs = {
        name: tf.TensorSpec(
            (None,), tf.string if name in ("city", "segment") else tf.float32, name=name
        )
        for name in ("age", "income", "city", "segment")
    }

    @tf.function(input_signature=[specs, tf.TensorSpec((None,), tf.string, name="key")])
    def serve(features: dict[str, Any], key: Any) -> dict[str, Any]:
        positive = tf.reshape(model(features, training=False), [-1])
        class_ids = tf.cast(positive >= 0.5, tf.int64)
        return {
            "probabilities": tf.stack([1.0 - positive, positive], axis=1),
            "class_ids": class_ids,
            "classes": tf.gather(tf.constant(["no", "yes"]), class_ids),
            "key": tf.identity(key),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve)
    archive.write_out(str(directory), verbose=False)


# -- the naive endpoint ---------------------------------------------------------------------


def naive_app(weights: str) -> Any:
    """Flask + Keras ``model.predict`` per request, the model built lazily in the worker."""
    import flask
    import numpy as np

    app = flask.Flask("naive")
    holder: dict[str, Any] = {}

    @app.post("/v1/models/bench:predict")
    def predict() -> Any:
        if "model" not in holder:
            model = build_model()
            model.load_weights(weights)
            holder["model"] = model
        instances = flask.request.get_json()["instances"]
        columns = {
            name: np.asarray(
                [row[name] for row in instances],
                dtype=object if name in ("city", "segment") else np.float32,
            )
            for name in ("age", "income", "city", "segment")
        }
        positive = holder["model"].predict(columns, verbose=0).reshape(-1)
        return {"predictions": [{"probabilities": [1 - float(p), float(p)]} for p in positive]}

    return app


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http(url: str, timeout: float = 120.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s")


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


# -- measurements ---------------------------------------------------------------------------


def sequential_latency(port: int, path: str, requests_count: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    timings = []
    for index in range(requests_count + 50):
        started = time.perf_counter()
        connection.request("POST", path, BODY, headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status} from {path}")
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port)
        if index >= 50:  # warm-up not counted
            timings.append((time.perf_counter() - started) * 1000)
    connection.close()
    timings.sort()
    return {
        "requests": len(timings),
        "p50_ms": round(statistics.median(timings), 3),
        "p99_ms": round(timings[int(0.99 * (len(timings) - 1))], 3),
        "mean_ms": round(statistics.fmean(timings), 3),
    }


def wrk_throughput(port: int, path: str, seconds: int, work: Path) -> dict[str, float]:
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(BODY)}\n"
    )
    command = [
        "wrk",
        "-t2",
        "-c8",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_s": round(rate, 1),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "none",
        "command": " ".join([*command[:-3], "post.lua", command[-1]]),
    }


# -- main -----------------------------------------------------------------------------------


def serve_naive(options: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    class Naive(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"127.0.0.1:{options.port}")
            self.cfg.set("workers", options.workers)
            self.cfg.set("accesslog", None)
            self.cfg.set("timeout", 120)

        def load(self) -> Any:
            return naive_app(options.weights)

    Naive().run()
    return 0


def write_serving_state(gcs_url: str, model_dir: Path) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from cascade.core.paths import DatasetPaths
    from cascade.serving.state import DeployedVersion, ServingState

    client = storage.Client(
        project="bench",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_url},
    )
    bucket = client.create_bucket("cascade-artifacts")
    now = datetime.now(UTC)
    state = ServingState(
        dataset="bench",
        target="local",
        endpoint="bench",
        updated_at=now,
        versions=[
            DeployedVersion(
                version="1",
                run_id="bench",
                state="serving",
                model_uri=str(model_dir),
                deployed_at=now,
            )
        ],
        traffic={"1": 100},
    )
    bucket.blob(DatasetPaths("bench").serving).upload_from_string(state.model_dump_json())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="sequential single-row calls")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per server")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, both servers")
    parser.add_argument("--output", type=Path, default=REPO / "bench/results/serving.json")
    parser.add_argument("--naive-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.naive_server:
        return serve_naive(options)
    if shutil.which("wrk") is None:
        sys.stderr.write("wrk not found: install it with `apt-get install -y wrk` (Debian)\n")
        return 2
    from cascade.localcloud.components import fake_gcs_binary

    work = Path(tempfile.mkdtemp(prefix="cascade-bench-serving-"))
    model = build_model()
    export(model, work / "model")
    model.save_weights(str(work / "model.weights.h5"))
    gcs_port, server_port, naive_port = free_port(), free_port(), free_port()
    gcs_url = f"http://127.0.0.1:{gcs_port}"
    env = {
        **os.environ,
        "STORAGE_EMULATOR_HOST": gcs_url,
        "CASCADE_PROJECT": "bench",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CASCADE_SERVING_PORT": str(server_port),
        "CASCADE_SERVING_WORKERS": str(options.workers),
        "CASCADE_SERVING_CACHE_DIR": str(work / "cache"),
    }
    processes = [
        start(
            [
                str(fake_gcs_binary()),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(gcs_port),
                "-backend",
                "memory",
                "-log-level",
                "error",
                "-public-host",
                f"127.0.0.1:{gcs_port}",
            ],
            env,
            work / "gcs.log",
        )
    ]
    try:
        wait_http(f"{gcs_url}/storage/v1/b")
        write_serving_state(gcs_url, work / "model")
        processes.append(start([sys.executable, "-m", "cascade.serving"], env, work / "server.log"))
        processes.append(
            start(
                [
                    sys.executable,
                    __file__,
                    "--naive-server",
                    "--port",
                    str(naive_port),
                    "--workers",
                    str(options.workers),
                    "--weights",
                    str(work / "model.weights.h5"),
                ],
                env,
                work / "naive.log",
            )
        )
        wait_http(f"http://127.0.0.1:{server_port}/healthz")
        path = "/v1/models/bench:predict"
        results: dict[str, Any] = {}
        for name, port in (("model_server", server_port), ("naive_model_predict", naive_port)):
            count = options.requests if name == "model_server" else max(200, options.requests // 10)
            results[name] = {
                "sequential_one_row": sequential_latency(port, path, count),
                "wrk_8_connections": wrk_throughput(port, path, options.seconds, work),
            }
        fast, naive = results["model_server"], results["naive_model_predict"]
        speedup = fast["wrk_8_connections"]["requests_per_s"] / max(
            naive["wrk_8_connections"]["requests_per_s"], 1e-9
        )
        report = {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average before {os.getloadavg()[0]:.2f}",
            "python": platform.python_version(),
            "workers": options.workers,
            "results": results,
            "throughput_vs_naive": round(speedup, 1),
        }
    finally:
        for process in reversed(processes):
            stop(process)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
