"""The gateway image (gateway/Dockerfile, context gateway/), tested without a container engine:
the same rules as the hook server's image (tests/test_dockerfile.py), what the chart expects of it
(user, command, port), and the package served from a directory laid out like the image's /app
(only gateway/) with the environment the chart gives the container."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from gateway import signing
from tests.gateway_support import GATEWAY_SA_TOKEN, FakeApiServer, free_port, stop, wait_http
from tests.test_chart import render
from tests.test_chart_gateway import gateway_env, on, pod_of
from tests.test_dockerfile import BUILD_TOOLS, env_of_stage, global_args, stages

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "gateway" / "Dockerfile"
TEXT = DOCKERFILE.read_text(encoding="utf-8")
STAGES = stages(TEXT)
FINAL = STAGES[-1]


def final(word: str) -> list[str]:
    return [rest for w, rest in FINAL if w == word]


def test_same_pinned_base_as_the_hook_server_and_no_build_tools_in_the_final_stage() -> None:
    assert global_args(TEXT)["PYTHON_IMAGE"] == global_args((ROOT / "Dockerfile").read_text(encoding="utf-8"))["PYTHON_IMAGE"]
    assert [s[0][1].split()[-1] for s in STAGES] == ["builder", "runtime"]
    assert not any(BUILD_TOOLS.search(c) for c in final("RUN"))
    assert all(c.startswith("--from=builder ") for c in final("COPY"))


def test_user_command_and_port_are_the_charts() -> None:
    chart = yaml.safe_load((ROOT / "chart" / "values.yaml").read_text(encoding="utf-8"))
    (user,) = final("USER")
    assert user == f"{chart['securityContext']['runAsUser']}:{chart['securityContext']['runAsGroup']}"
    (c,) = pod_of(on())["spec"]["containers"]
    (entrypoint,) = final("ENTRYPOINT")
    assert json.loads(entrypoint) == c["command"] and final("WORKDIR") == [c["workingDir"]] == ["/app"]
    assert final("EXPOSE") == [str(chart["gateway"]["port"])]


def test_build_context_is_the_package_and_its_pinned_requirements() -> None:
    copies = [rest for stage in STAGES for w, rest in stage if w == "COPY" and not rest.startswith("--from=")]
    assert copies == ["requirements.txt .", ". /app/gateway/"]
    ignored = (ROOT / "gateway" / ".dockerignore").read_text(encoding="utf-8")
    assert "Dockerfile" in ignored.split() and "**/__pycache__" in ignored.split()
    for line in (ROOT / "gateway" / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        assert not line or "==" in line, f"unpinned: {line}"


def test_hadolint_finds_nothing() -> None:
    from tests.tooling import tool

    result = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_layout_serves_with_the_charts_environment(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(ROOT / "gateway", app / "gateway", ignore=shutil.ignore_patterns("__pycache__", "Dockerfile", ".dockerignore"))
    pem, public = signing.generate()
    key = tmp_path / "key.pem"
    key.write_bytes(pem)
    port = free_port()
    with FakeApiServer() as api:
        kubeconfig = tmp_path / "kubeconfig"  # outside a cluster: the chart's env plus a kubeconfig
        kubeconfig.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "c",
                                          "clusters": [{"name": "c", "cluster": {"server": api.url}}],
                                          "users": [{"name": "u", "user": {"token": GATEWAY_SA_TOKEN}}],
                                          "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
        env = gateway_env(render(None, "--set", "gateway.enabled=true", "--set", f"runtimeAuth.gatewayPublicKeys={{{public}}}"))
        env.update({**{k: v for k, v in env_of_stage(FINAL).items() if k not in ("PATH",)},
                    "GUNICORN_CMD_ARGS": f"--bind=127.0.0.1:{port}", "WORKERS": "1",
                    "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "TMPDIR": str(tmp_path), "HOME": str(tmp_path),
                    "LLMSS_GATEWAY_SIGNING_KEY_FILE": str(key), "KUBECONFIG": str(kubeconfig),
                    "PATH": os.environ.get("PATH", "")})
        (tmp_path / "metrics").mkdir()
        (entrypoint,) = final("ENTRYPOINT")
        command = json.loads(entrypoint)
        proc = subprocess.Popen([str(Path(sys.executable).parent / command[0]), *command[1:]], cwd=app, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            import urllib.request
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as answer:
                assert answer.status == 200
        finally:
            stop(proc)
        assert proc.stderr is not None and public in proc.stderr.read().decode()  # the key it signs with, logged at start


def test_the_offline_build_takes_its_config_from_this_dockerfile() -> None:
    """`scripts/build-images gateway` (the real node's image, built without Docker) reads USER,
    WORKDIR, EXPOSE, ENV and ENTRYPOINT from this Dockerfile's final stage: one source for the
    command the chart runs too."""
    script = (ROOT / "scripts" / "build-images").read_text(encoding="utf-8")
    reader = script.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    out = subprocess.run([sys.executable, "-", str(DOCKERFILE)], input=reader, capture_output=True, text=True, check=True,
                         timeout=60).stdout.splitlines()
    (c,) = pod_of(on())["spec"]["containers"]
    (entrypoint,) = final("ENTRYPOINT")
    assert [a.split("=", 1)[1] for a in out if a.startswith("--config.entrypoint=")] == c["command"] == json.loads(entrypoint)
    (user,) = final("USER")
    assert {f"--config.user={user}", f"--config.workingdir={c['workingDir']}", "--config.exposedports=8080/tcp"} <= set(out)
    env = dict(a.split("=", 1)[1].split("=", 1) for a in out if a.startswith("--config.env="))
    assert env == {k: v for k, v in env_of_stage(FINAL).items() if k != "PATH"} and env["GUNICORN_CMD_ARGS"]


def test_the_offline_image_is_labelled_with_the_digest_the_e2e_suite_checks() -> None:
    """`scripts/build-images --source-digest` (the label it puts on gateway.tar) is what the e2e
    suite compares with the checkout before it runs the image (a stale image is reported, not run)."""
    from tests.e2e.gateway_node import source_digest

    printed = subprocess.run([str(ROOT / "scripts" / "build-images"), "--source-digest"], capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip()
    assert printed == source_digest() and printed.startswith("sha256:") and len(printed) == 71
