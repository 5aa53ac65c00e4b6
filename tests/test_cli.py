"""`llmsafespace render | validate | diff` (hooks/offline/cli.py): the server's own answers for the same
requests, byte for byte; output Kubernetes and our CRDs accept; honest errors."""
from __future__ import annotations

import io
import json
import pkgutil
import subprocess
import sys
import tomllib
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hooks.offline import cli
from hooks.server import jsonio
from hooks.server.app import create_app
from hooks.config import Config
from tests.crdutil import validate_cr

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
K8S_VERSION = "1.33"
CONTEXT = [str(EXAMPLES / n) for n in ("runtimeenvironment-python.yaml", "sandboxprofile-data-science.yaml", "warmpool-python.yaml")]
EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
RTE = str(EXAMPLES / "runtimeenvironment-python.yaml")
MINIMAL = str(EXAMPLES / "sandbox-minimal.yaml")


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out, err, environ or {})
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def hook_calls(*files: str, extra: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    args = ["render", "--hook-calls", *extra]
    for f in files:
        args += ["-f", f]
    code, out, err = run(*args)
    assert code == 0, err
    return [(line, json.loads(line)) for line in out.splitlines()]


def server_answer(call: dict[str, Any]) -> bytes:
    now = datetime.fromisoformat(call["now"].replace("Z", "+00:00"))
    client = create_app(Config(), clock=lambda: now, env={}).test_client()
    answer = client.post(call["path"], data=jsonio.dumps(call["request"]), content_type="application/json")
    assert answer.status_code == 200, answer.data
    return answer.data


@pytest.mark.parametrize("name", EXAMPLE_FILES)
@pytest.mark.parametrize("rounds", ["0", "6"])
def test_every_example_is_the_servers_answer_byte_for_byte(name: str, rounds: str) -> None:
    """Each example with the objects it refers to: every parent's last hook call, sent to the HTTP
    server, gets the very bytes the CLI printed (one code path)."""
    calls = hook_calls(str(EXAMPLES / name), *(c for c in CONTEXT if not c.endswith(name)), extra=("--rounds", rounds))
    assert calls
    for line, call in calls:
        served = server_answer(call)
        assert b'"response":' + served + b"}" == line.encode()[line.encode().index(b'"response":'):]


def test_render_of_the_examples_directory_prints_every_parent_and_its_children() -> None:
    code, out, err = run("render", "-f", str(EXAMPLES))
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    parents = {(d["kind"], d["metadata"]["name"]) for d in docs if "status" in d or d["kind"] == "Namespace"}
    for path in EXAMPLES.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        assert (doc["kind"], doc["metadata"]["name"]) in parents, path.name
    calls = [c for _, c in hook_calls(str(EXAMPLES))]
    # The YAML is exactly the hook answers: every desired child, and each parent's status.
    children = [d for d in docs if d.get("metadata", {}).get("uid") is None]
    answered = [c for call in calls for c in call["response"].get("children") or call["response"].get("attachments") or []]
    assert sorted(map(jsonio.dumps, children)) == sorted(map(jsonio.dumps, answered))
    statuses = {(d["kind"], d["metadata"]["name"]): d.get("status") for d in docs if d.get("metadata", {}).get("uid")}
    for call in calls:
        parent = call["request"].get("parent") or call["request"]["object"]
        if "status" in call["response"]:
            status = dict(statuses[(parent["kind"], parent["metadata"]["name"])])
            status.pop("observedGeneration")  # Metacontroller's addition
            assert status == call["response"]["status"]


def test_render_output_is_valid_kubernetes() -> None:
    code, out, err = run("render", "-f", str(EXAMPLES), "--rounds", "6", "-o", "json")
    assert code == 0, err
    items = json.loads(out)["items"]
    kinds = set()
    for obj in items:
        kinds.add(obj["kind"])
        if obj["apiVersion"].startswith("llmsafespace.dev/"):
            validate_cr(obj)  # spec and status fit our CRDs
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert {"Pod", "Service", "NetworkPolicy", "PersistentVolumeClaim", "ResourceQuota", "WarmPod", "Sandbox"} <= kinds


def test_render_is_deterministic_and_parents_do_not_depend_on_unrelated_files() -> None:
    alone = run("render", "-f", MINIMAL, "-f", RTE)[1]
    assert alone == run("render", "-f", MINIMAL, "-f", RTE)[1]
    with_all = run("render", "-f", str(EXAMPLES), "--parent", "sandbox/demo/minimal", "--parent", "runtimeenvironment/python-3.11")[1]
    assert with_all == alone


def test_rounds_follow_a_sandbox_until_running() -> None:
    def phase(*extra: str) -> str:
        code, out, err = run("render", "-f", MINIMAL, "-f", RTE, "--parent", "Sandbox/demo/minimal", "-o", "json", *extra)
        assert code == 0, err
        return json.loads(out)["items"][0]["status"]["phase"]

    assert phase() == "Creating"
    assert phase("--rounds", "6") == "Running"


def test_an_observed_running_pod_is_the_sandboxs_child(tmp_path: Path) -> None:
    code, out, _ = run("render", "-f", MINIMAL, "-f", RTE, "--rounds", "6", "-o", "json")
    pod = next(o for o in json.loads(out)["items"] if o["kind"] == "Pod")
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "llmsafespace.dev/v1", "kind": "Sandbox", "name": "minimal", "uid": "x", "controller": True}]
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    observed = write(tmp_path, "pod.json", json.dumps(pod))
    code, out, err = run("render", "-f", MINIMAL, "-f", RTE, "-f", observed, "--parent", "Sandbox/demo/minimal", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["items"][0]["status"]["phase"] == "Running"
    pod["metadata"]["ownerReferences"][0]["name"] = "other"
    code, _, err = run("render", "-f", MINIMAL, "-f", RTE, "-f", write(tmp_path, "pod.json", json.dumps(pod)))
    assert code == 1 and "its controller Sandbox other is in none of the files" in err


def test_configuration_from_set_and_from_the_charts_values() -> None:
    high = str(EXAMPLES / "sandbox-high-security.yaml")

    def runtime_class(*extra: str, environ: dict[str, str] | None = None) -> str:
        code, out, err = run("render", "-f", high, "-f", RTE, "-o", "json", *extra, environ=environ)
        assert code == 0, err
        return next(o for o in json.loads(out)["items"] if o["kind"] == "Pod")["spec"]["runtimeClassName"]

    assert runtime_class() == "gvisor"
    assert runtime_class("--set", "LLMSS_HIGH_SECURITY_RUNTIME_CLASS=kata") == "kata"
    assert runtime_class(environ={"LLMSS_HIGH_SECURITY_RUNTIME_CLASS": "env"}) == "env"
    # The chart's own values file: every config key is known, and it configures the defaults.
    assert runtime_class("--values", str(ROOT / "chart" / "values.yaml")) == "gvisor"


def test_validate_accepts_the_examples() -> None:
    code, out, err = run("validate", "-f", str(EXAMPLES))
    assert (code, err) == (0, "") and out.startswith("ok: ")


def test_validate_reports_the_hooks_reasons(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata: {name: x, namespace: demo}\n"
                                      "spec: {runtime: python-3.11, resources: {cpu: 50m}}\n")
    code, _, err = run("validate", "-f", bad, "-f", RTE)
    assert code == 1
    assert "Sandbox demo/x: Validated=False BelowRuntimeMinimum: spec.resources.cpu 50m is below the runtime's minimum 100m" in err


def test_validate_and_render_refuse_what_the_crd_refuses(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata: {name: x}\n"
                                      "spec: {runtime: python-3.11, securityLevel: bogus, surprise: 1}\n")
    for command in ("validate", "render"):
        code, out, err = run(command, "-f", bad, "-f", RTE)
        assert code == 1 and out == ""
        assert "Sandbox x: .spec.securityLevel: 'bogus' is not one of" in err
        assert ".spec.surprise: unknown field" in err


def test_unknown_kinds_and_unreadable_documents(tmp_path: Path) -> None:
    deployment = write(tmp_path, "d.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
    code, out, err = run("render", "-f", deployment)
    assert code == 1 and out == "" and "unknown kind apps/v1 Deployment" in err
    code, _, err = run("render", "-f", str(EXAMPLES / "requests"))  # a hook request, not an object
    assert code == 1 and "not a Kubernetes object" in err
    code, _, err = run("render", "-f", str(tmp_path / "missing.yaml"))
    assert code == 1 and "no such file or directory" in err


def test_missing_related_objects_are_errors() -> None:
    code, out, err = run("render", "-f", MINIMAL)
    assert code == 1 and out == ""
    assert "Sandbox demo/minimal: RuntimeNotFound: no RuntimeEnvironment matches runtime 'python-3.11'" in err
    code, _, err = run("render", "-f", str(EXAMPLES / "sandbox-with-profile.yaml"), "-f", RTE)
    assert code == 1 and "ProfileNotFound" in err


def test_bad_options_exit_2() -> None:
    assert run("render", "-f", MINIMAL, "--now", "yesterday")[0] == 2
    code, _, err = run("render", "-f", MINIMAL, "-f", RTE, "--set", "LLMSS_WARM_POD_WAIT_SECONDS=soon")
    assert code == 2 and "LLMSS_WARM_POD_WAIT_SECONDS: Input should be a valid integer" in err
    code, _, err = run("render", "-f", MINIMAL, "-f", RTE, "--parent", "Sandbox/demo/nope")
    assert code == 1 and "Sandbox demo/nope: no such parent" in err


def test_diff_names_what_a_running_pod_would_not_get(tmp_path: Path) -> None:
    new = write(tmp_path, "new.yaml", (EXAMPLES / "sandbox-minimal.yaml").read_text() + "  resources: {cpu: '1'}\n")
    code, out, err = run("diff", MINIMAL, new, "-f", RTE)
    assert code == 1, err
    assert "-        cpu: 500m\n+        cpu: '1'\n" in out
    assert "# Pod is OnDelete: an existing Pod keeps the OLD version" in out
    assert "#   not applied to a running pod: resources.cpu: 500m -> 1\n" in out
    assert "llmsafespace.dev/replace-pod=<new token>" in out
    assert run("diff", MINIMAL, MINIMAL, "-f", RTE)[:2] == (0, "")
    assert run("diff", MINIMAL, new)[0] == 2  # no runtime: unusable input


def test_python_dash_m_hooks_is_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "hooks", "validate", "-f", MINIMAL, "-f", RTE],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, "ok: 2 documents, 2 parents valid\n"), done.stderr


def test_the_console_script_is_hooks_cli_main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pkgutil.resolve_name(project["project"]["scripts"]["llmsafespace"].replace(":", ".")) is cli.main
    # Every package under hooks/, runtime/ and conformance/ is packaged (a new subpackage must be listed).
    packages = {".".join(p.relative_to(ROOT).parent.parts)
                for top in ("hooks", "runtime", "conformance") for p in (ROOT / top).rglob("__init__.py")}
    packages |= {".".join(p.relative_to(ROOT / "sdk").parent.parts) for p in (ROOT / "sdk").rglob("__init__.py")}
    assert project["tool"]["setuptools"]["package-dir"] == {"llmsafespace": "sdk/llmsafespace"}
    assert packages == set(project["tool"]["setuptools"]["packages"])
    from setuptools.config.pyprojecttoml import read_configuration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # setuptools calls [tool.setuptools] beta
        config = read_configuration(ROOT / "pyproject.toml")  # valid metadata; dependencies are requirements.txt's
    assert "PyYAML==6.0.3" in config["project"]["dependencies"]
