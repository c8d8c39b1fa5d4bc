"""The infra/ checks CI runs: terraform fmt and checkov (skipped where the tool is absent)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
CHECKOV = REPO_ROOT / ".venv-infra" / "bin" / "checkov"
CHECKOV_CONFIG = INFRA_DIR / ".checkov.yaml"

pytestmark = pytest.mark.infra


def _skip_with_reason(reason: str) -> None:
    print(f"SKIPPED: {reason}")
    pytest.skip(reason)


def test_terraform_fmt_check_passes() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        _skip_with_reason("terraform is not installed; CI runs `terraform fmt -check`")
    assert terraform is not None

    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(INFRA_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_on_infra() -> None:
    if not CHECKOV.is_file():
        _skip_with_reason(
            f"{CHECKOV.relative_to(REPO_ROOT)} is absent; create it with `python3.11 -m venv "
            ".venv-infra && .venv-infra/bin/pip install -r infra/requirements-checkov.txt`"
        )

    result = subprocess.run(
        [str(CHECKOV), "--config-file", str(CHECKOV_CONFIG)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert re.search(r"Passed checks: [1-9]\d*, Failed checks: 0", result.stdout), result.stdout


def test_every_skipped_checkov_rule_is_explained_in_the_readme() -> None:
    config = yaml.safe_load(CHECKOV_CONFIG.read_text(encoding="utf-8"))
    readme = (INFRA_DIR / "README.md").read_text(encoding="utf-8")

    skipped = [str(check) for check in config.get("skip-check", [])]

    for check in skipped:
        lines = [line for line in readme.splitlines() if check in line]
        assert lines, f"{check} is skipped but not listed in infra/README.md"
        assert any(len(line.split(check, 1)[1].strip(" |:-")) > 20 for line in lines), (
            f"{check} is listed without a reason"
        )
