"""build.sh and deploy.sh against stand-in docker, minikube and kubectl commands.

The stand-ins are small executables put first on PATH that log every call
(argv and the DOCKER_HOST they saw) to a file and answer like the real
commands would; the tests check the exact order of what the scripts asked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from deploytools import ROOT

STANDIN = r'''#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps({{"cmd": name, "args": args, "docker_host": os.environ.get("DOCKER_HOST")}}) + "\n")
if name == "minikube":
    while args and args[0].startswith("--profile"):
        args = args[2:] if args[0] == "--profile" else args[1:]
    if args[:1] == ["status"]:
        sys.exit(int(os.environ.get("STANDIN_MINIKUBE_STATUS", "0")))
    if args[:1] == ["docker-env"]:
        print('export DOCKER_TLS_VERIFY="1"')
        print('export DOCKER_HOST="tcp://minikube.invalid:2376"')
        print('export MINIKUBE_ACTIVE_DOCKERD="minikube"')
    if args[:1] == ["ip"]:
        print("192.0.2.10")
elif name == "kubectl":
    if "get" in args and "service" in args:
        print("30500", end="")
elif name == "docker":
    if args[:1] == ["info"]:
        sys.exit(int(os.environ.get("STANDIN_DOCKER_INFO", "0")))
elif name == "build":
    pass
'''

MANIFESTS_DELETED_FIRST = ["--filename=wtc-process_deployment.yml", "--filename=wtc-api_deployment.yml"]
SERVICES = ["--filename=wtc-process_service.yml", "--filename=wtc-api_service.yml"]
POLICIES = ["--filename=wtc-process_networkpolicy.yml"]
KUBECTL = ["kubectl", "--context", "minikube"]
MINIKUBE = ["minikube", "--profile", "minikube"]


@pytest.fixture
def standins(tmp_path: Path) -> dict[str, str]:
    """PATH with stand-in kubectl, minikube, docker and a build command; returns the environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kubectl", "minikube", "docker", "build"):
        exe = bin_dir / name
        exe.write_text(STANDIN.format(python=sys.executable))
        exe.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "MINIKUBE_", "WTC_"))}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", STANDIN_LOG=str(tmp_path / "calls.jsonl"),
               WTC_BUILD_COMMAND=str(bin_dir / "build"))
    return env


def calls(env: dict[str, str]) -> list[dict]:
    path = Path(env["STANDIN_LOG"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def argvs(env: dict[str, str]) -> list[list[str]]:
    return [[c["cmd"], *c["args"]] for c in calls(env)]


def run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / script), *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_deploy_order(standins):
    done = run("deploy.sh", env=standins)
    assert done.returncode == 0, done.stderr
    assert argvs(standins) == [
        [*MINIKUBE, "status"],
        [*MINIKUBE, "docker-env", "--shell", "bash"],
        ["build"],
        [*KUBECTL, "delete", "--ignore-not-found", "--wait=true", "--cascade=foreground",
         *MANIFESTS_DELETED_FIRST],
        [*KUBECTL, "delete", "--ignore-not-found", "--wait=true", *SERVICES, *POLICIES],
        [*KUBECTL, "apply", *SERVICES],
        [*KUBECTL, "apply", *POLICIES],
        [*KUBECTL, "apply", "--filename=wtc-process_deployment.yml", "--filename=wtc-api_deployment.yml"],
        [*KUBECTL, "rollout", "status", "deployment/wtc-process", "--timeout=300s"],
        [*KUBECTL, "rollout", "status", "deployment/wtc-api", "--timeout=300s"],
        [*KUBECTL, "get", "service", "wtc-api", "--output", "jsonpath={.spec.ports[0].nodePort}"],
        [*MINIKUBE, "ip"],
    ]
    # The build ran against minikube's Docker daemon, after `eval "$(minikube docker-env)"`.
    build = next(c for c in calls(standins) if c["cmd"] == "build")
    assert build["docker_host"] == "tcp://minikube.invalid:2376"
    # The last line of stdout is the API's URL.
    assert done.stdout.strip().splitlines()[-1] == "http://192.0.2.10:30500"
    # It says what it does.
    assert "==> " in done.stderr and "+ kubectl" in done.stderr


def test_deploy_creates_services_before_deployments_and_deletes_everything_first(standins):
    assert run("deploy.sh", env=standins).returncode == 0
    sequence = argvs(standins)
    verbs = [(a[3], " ".join(a)) for a in sequence if a[0] == "kubectl"]
    last_delete = max(i for i, (verb, _) in enumerate(verbs) if verb == "delete")
    first_apply = min(i for i, (verb, _) in enumerate(verbs) if verb == "apply")
    assert last_delete < first_apply
    service_apply = next(i for i, (v, line) in enumerate(verbs) if v == "apply" and "_service" in line)
    deployment_apply = next(i for i, (v, line) in enumerate(verbs) if v == "apply" and "_deployment" in line)
    assert service_apply < deployment_apply
    # Every manifest in the project is deleted and applied.
    manifests = {p.name for p in ROOT.glob("wtc-*.yml")}
    def files(verb: str) -> set[str]:
        return {m for v, line in verbs if v == verb for m in re.findall(r"wtc-\S+\.yml", line)}

    deleted, applied = files("delete"), files("apply")
    assert deleted == applied == manifests


def test_deploy_k_only_destroys(standins):
    done = run("deploy.sh", "-k", env=standins)
    assert done.returncode == 0, done.stderr
    assert argvs(standins) == [
        [*MINIKUBE, "status"],
        [*KUBECTL, "delete", "--ignore-not-found", "--wait=true", "--cascade=foreground",
         *MANIFESTS_DELETED_FIRST],
        [*KUBECTL, "delete", "--ignore-not-found", "--wait=true", *SERVICES, *POLICIES],
    ]


def test_deploy_n_builds_without_the_cache(standins):
    assert run("deploy.sh", "-n", env=standins).returncode == 0
    assert ["build", "-n"] in argvs(standins)


def test_deploy_stops_when_minikube_is_not_running(standins):
    standins["STANDIN_MINIKUBE_STATUS"] = "7"
    done = run("deploy.sh", env=standins)
    assert done.returncode != 0
    assert "minikube start --driver=docker" in done.stderr
    assert "Traceback" not in done.stderr
    assert argvs(standins) == [[*MINIKUBE, "status"]]  # nothing built, nothing deleted


def test_deploy_acts_on_the_chosen_minikube_profile_only(standins):
    standins["MINIKUBE_PROFILE"] = "wtc"
    assert run("deploy.sh", "-k", env=standins).returncode == 0
    for argv in argvs(standins):
        if argv[0] == "kubectl":
            assert argv[1:3] == ["--context", "wtc"]
        else:
            assert argv[1:3] == ["--profile", "wtc"]


def test_deploy_rejects_unknown_options(standins):
    done = run("deploy.sh", "-x", env=standins)
    assert done.returncode != 0 and "-x" in done.stderr
    assert argvs(standins) == []


def getopts_letters(script: str) -> set[str]:
    spec = re.search(r'getopts "([^"]+)"', (ROOT / script).read_text()).group(1)
    return set(spec.replace(":", ""))


@pytest.mark.parametrize("script", ["build.sh", "deploy.sh"])
def test_help_explains_every_option(script, standins):
    done = run(script, "-h", env=standins)
    assert done.returncode == 0
    letters = getopts_letters(script)
    assert "h" in letters
    for letter in letters:
        assert re.search(rf"^\s+-{letter}\b", done.stdout, re.M), f"-{letter} is not explained"
    assert argvs(standins) == []  # help touches nothing


def test_build_help_documents_its_variables(standins):
    text = run("build.sh", "-h", env=standins).stdout
    for variable in ("WTC_BASE_IMAGE", "WTC_CA_BUNDLE", "WTC_WHEELHOUSE", "WTC_DEBIAN_MIRROR", "PYTHON",
                     "WTC_DOCKER"):
        assert variable in text
    for variable in re.findall(r"\$\{(WTC_[A-Z_]+):-", (ROOT / "build.sh").read_text()):
        assert variable in text, f"{variable} is read by build.sh but not documented"


def test_build_says_one_sentence_when_docker_does_not_answer(standins):
    standins["STANDIN_DOCKER_INFO"] = "1"
    done = run("build.sh", env=standins)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Docker" in lines[0], done.stderr
    assert argvs(standins) == [["docker", "buildx", "version"], ["docker", "info"]]


def test_build_says_one_sentence_when_docker_is_missing(standins, tmp_path):
    standins["WTC_DOCKER"] = str(tmp_path / "no-such-docker")
    done = run("build.sh", env=standins)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not installed" in lines[0], done.stderr


@pytest.mark.parametrize("args, message", [
    (["-w", "/nonexistent/wheelhouse"], "is not a folder"),
    (["-c", "/nonexistent/ca.pem"], "cannot be read"),
    (["-b"], "needs a value"),
    (["extra"], "unexpected argument"),
], ids=["missing-wheelhouse", "missing-ca-bundle", "option-without-value", "stray-argument"])
def test_build_refuses_bad_options_before_touching_docker(standins, args, message):
    done = run("build.sh", *args, env=standins)
    assert done.returncode != 0
    assert message in done.stderr
    assert argvs(standins) == []
