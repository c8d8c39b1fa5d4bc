"""Cold start and installed size of each packaged function, against the whole install.

Packages the functions as CI does (`cascade package-functions --pins requirements.txt`),
installs each dependency group's generated requirements.txt into a clean venv from the
package index, and measures in one run:

- **installed size**: the venv's site-packages less a bare venv's (pip, setuptools), in
  MB (10^6 bytes), for each group, for the whole-package install (.venv: the lock,
  dev tools included) and for a bare functions-framework;
- **cold start**: from starting `functions-framework --target X --source main.py --host
  127.0.0.1 --port N` to the first answered request (2xx or 4xx), polling the port
  every 5 ms: each function run from its packaged folder in its group's venv, the same
  function from functions/<step>/ with .venv, and a bare "hello" function in a venv
  with only functions-framework. Rounds alternate the three, medians are reported.

The request is what the function's trigger sends: a storage or Pub/Sub CloudEvent (binary
mode) dated 2000-01-01, which the adapter builds its context for and then drops as stale
(200, no cloud call), or an HTTP POST of ``{}`` (400). The emulator hosts point at a
closed local port; nothing is contacted.

    .venv/bin/python bench/cold_start.py [--repeats 5]   # writes bench/results/cold_start.json
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cascade.cli.packaging import RepositoryLayout, package_functions, read_pins
from cascade.core.topology import FunctionSpec, HttpTrigger, StorageTrigger, load_topology

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "cold_start.json"
LOCK = REPO_ROOT / "requirements.txt"
STALE_TIME = "2000-01-01T00:00:00Z"
CLOSED_PORT = "127.0.0.1:9"  # discard: nothing listens here
START_TIMEOUT_S = 120.0
POLL_S = 0.005
HELLO = """\
import functions_framework


@functions_framework.cloud_event
def hello(event):
    return None
"""


@dataclass(frozen=True)
class Target:
    """One function to start: where, which entry point, and what to send it."""

    name: str
    source_dir: Path
    entry_point: str
    signature: str
    request: tuple[dict[str, str], bytes]


def request_for(spec: FunctionSpec) -> tuple[dict[str, str], bytes]:
    if isinstance(spec.trigger, HttpTrigger):
        return {"Content-Type": "application/json"}, b"{}"
    headers = {
        "ce-id": "cold-start",
        "ce-specversion": "1.0",
        "ce-time": STALE_TIME,
        "Content-Type": "application/json",
    }
    if isinstance(spec.trigger, StorageTrigger):
        headers |= {
            "ce-source": "//storage.googleapis.com/projects/_/buckets/landing",
            "ce-type": "google.cloud.storage.object.v1.finalized",
            "ce-subject": "objects/bench/cold.csv",
        }
        body = {"bucket": "landing", "name": "bench/cold.csv", "generation": "1", "size": "1"}
        return headers, json.dumps(body).encode()
    headers |= {
        "ce-source": "//pubsub.googleapis.com/projects/bench/topics/bench",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
    }
    body = {
        "message": {
            "data": base64.b64encode(b"{}").decode(),
            "messageId": "1",
            "publishTime": STALE_TIME,
        },
        "subscription": "projects/bench/subscriptions/bench",
    }
    return headers, json.dumps(body).encode()


def child_environment(function: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    return environment | {
        "CASCADE_PROJECT": "cold-start",
        "CASCADE_FUNCTION_NAME": function,
        "STORAGE_EMULATOR_HOST": f"http://{CLOSED_PORT}",
        "PUBSUB_EMULATOR_HOST": CLOSED_PORT,
    }


def build_venv(directory: Path, requirements: Path | None) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(directory)
    if requirements is not None:
        subprocess.run(
            [
                str(directory / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                "--requirement",
                str(requirements),
            ],
            check=True,
            timeout=900,
            env=child_environment("pip"),
        )
    return directory


def site_packages_bytes(venv_dir: Path) -> int:
    (site_packages,) = (venv_dir / "lib").glob("python3*/site-packages")
    return sum(path.stat().st_size for path in site_packages.rglob("*") if path.is_file())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def first_answer_s(venv_dir: Path, target: Target, log: Path) -> float:
    """Seconds from starting functions-framework to the first 2xx/4xx answer."""
    port = free_port()
    headers, body = target.request
    command = [
        str(venv_dir / "bin" / "functions-framework"),
        "--target",
        target.entry_point,
        "--source",
        "main.py",
        "--signature-type",
        target.signature,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("ab") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=target.source_dir,
            env=child_environment(target.name),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = started + START_TIMEOUT_S
            while time.perf_counter() < deadline:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:
                    connection.request("POST", "/", body=body, headers=headers)
                    status = connection.getresponse().status
                except (ConnectionRefusedError, ConnectionResetError, http.client.HTTPException):
                    if process.poll() is not None:
                        raise RuntimeError(f"{target.name} exited; see {log}") from None
                    time.sleep(POLL_S)
                    continue
                finally:
                    connection.close()
                elapsed = time.perf_counter() - started
                if status >= 500:
                    raise RuntimeError(f"{target.name} answered {status}; see {log}")
                return elapsed
            raise RuntimeError(f"{target.name} did not answer in {START_TIMEOUT_S}s; see {log}")
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--only", nargs="*", default=None, help="Function names to measure (default: all)."
    )
    args = parser.parse_args()
    topology = load_topology(REPO_ROOT / "infra" / "topology.yaml")
    specs = [s for s in topology.functions.values() if not args.only or s.name in args.only]

    with tempfile.TemporaryDirectory(prefix="cascade-cold-start-") as tmp:
        root = Path(tmp)
        log = root / "functions.log"
        packages = {
            p.function: p.staging_dir
            for p in package_functions(
                topology,
                RepositoryLayout(root=REPO_ROOT),
                root / "functions",
                pins=read_pins(LOCK),
            )
        }
        hello_dir = root / "hello"
        hello_dir.mkdir()
        (hello_dir / "main.py").write_text(HELLO)
        framework_pin = read_pins(LOCK)["functions-framework"]
        (hello_dir / "requirements.txt").write_text(
            f"-c {LOCK}\nfunctions-framework=={framework_pin}\n"
        )

        print("building venvs ...", flush=True)
        bare = site_packages_bytes(build_venv(root / "venv-bare", None))
        groups = sorted({str(spec.dependencies) for spec in specs})
        venvs = {
            group: build_venv(
                root / f"venv-{group}",
                packages[next(s.name for s in specs if s.dependencies == group)]
                / "requirements.txt",
            )
            for group in groups
        }
        venvs["hello"] = build_venv(root / "venv-hello", hello_dir / "requirements.txt")
        whole = REPO_ROOT / ".venv"
        sizes = {
            name: round((site_packages_bytes(path) - bare) / 1e6, 1)
            for name, path in [*venvs.items(), (".venv", whole)]
        }
        print(json.dumps({"installed_mb": sizes}, indent=2), flush=True)

        hello = Target(
            "hello", hello_dir, "hello", "cloudevent", request_for(topology.functions["train"])
        )
        runs: dict[str, dict[str, list[float]]] = {
            spec.name: {"packaged": [], "whole": []} for spec in specs
        }
        hello_runs: list[float] = []
        for round_number in range(args.repeats):
            hello_runs.append(first_answer_s(venvs["hello"], hello, log))
            for spec in specs:
                request = request_for(spec)
                packaged = Target(
                    spec.name, packages[spec.name], spec.entry_point, spec.signature, request
                )
                source = Target(
                    spec.name,
                    REPO_ROOT / spec.source,
                    spec.entry_point,
                    spec.signature,
                    request,
                )
                runs[spec.name]["packaged"].append(
                    first_answer_s(venvs[str(spec.dependencies)], packaged, log)
                )
                runs[spec.name]["whole"].append(first_answer_s(whole, source, log))
            print(f"round {round_number + 1}/{args.repeats} done", flush=True)

    hello_median = statistics.median(hello_runs)
    function_results: dict[str, dict[str, object]] = {
        name: {
            "dependencies": str(topology.functions[name].dependencies),
            "installed_mb": sizes[str(topology.functions[name].dependencies)],
            **{
                f"{mode}_median_s": round(statistics.median(values), 3)
                for mode, values in modes.items()
            },
            "packaged_vs_hello": round(statistics.median(modes["packaged"]) / hello_median, 2),
            "runs_s": {mode: [round(v, 3) for v in values] for mode, values in modes.items()},
        }
        for name, modes in runs.items()
    }
    results: dict[str, object] = {
        "installed_mb": sizes,
        "hello": {"median_s": round(hello_median, 3), "runs_s": [round(r, 3) for r in hello_runs]},
        "functions": function_results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print("\n| function | group | installed MB | first answer, packaged | .venv | x hello |")
    print("|---|---|---|---|---|---|")
    for name, figures in function_results.items():
        print(
            f"| {name} | {figures['dependencies']} | {figures['installed_mb']} "
            f"| {figures['packaged_median_s']:.2f} s | {figures['whole_median_s']:.2f} s "
            f"| {figures['packaged_vs_hello']} |"
        )
    print(f"| hello | functions-framework | {sizes['hello']} | {hello_median:.2f} s | | 1 |")
    print(f"| (.venv, the whole lock) | | {sizes['.venv']} | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
