"""`llmsafespace` (also `python -m hooks`): the desired state of sandboxes, offline.

  render -f FILE_OR_DIR ...   each parent's status and desired children, YAML (default) or JSON
  validate -f FILE_OR_DIR ... CRD schema + CEL, then the hooks' own verdicts; exit 1 on any error
  diff OLD NEW                what a spec edit changes in the desired children (exit 1 when it does)
  conformance URL|--command   does a runtime image keep docs/runtime-contract.md? (conformance/)
  exec SANDBOX -- CMD...      run a command in a sandbox through the gateway (the SDK, sdk/)
  run SANDBOX -c CODE         run code in a sandbox; --runtime R instead of SANDBOX: a sandbox just for it

Every answer comes from the hooks of hooks/server/routes.py, called through the simulated Metacontroller
(hooks/offline/render.py, hooks/offline/simulate.py). docs/render.md has the details and a golden-testing recipe.
Exit codes: 0 fine; 1 errors (render, validate) or differences (diff); 2 unusable input for diff
and bad command lines."""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TextIO

import yaml

from .. import constants as C
from .. import drift
from ..server import jsonio
from ..config import ENV_PREFIX, Config
from ..meta import fmt_time
from .render import DEFAULT_NAMESPACE, InputError, Key, Rendered, describe, load, render

# A fixed default clock: the same files always render to the same bytes (golden files in CI).
DEFAULT_NOW = "2025-01-01T00:00:00Z"
# The chart's `config:` values (chart/values.yaml) -> the variable its Deployment sets from each.
VALUES_ENV: dict[str, str] = {
    "highSecurityRuntimeClass": "HIGH_SECURITY_RUNTIME_CLASS",
    "imageRegistryAllowlist": "IMAGE_REGISTRY_ALLOWLIST",
    "warmPodWaitSeconds": "WARM_POD_WAIT_SECONDS",
    "childCreateGraceSeconds": "CHILD_CREATE_GRACE_SECONDS",
    "defaultLifetimeSeconds": "DEFAULT_LIFETIME_SECONDS",
    "maxTerminationGraceSeconds": "MAX_TERMINATION_GRACE_SECONDS",
    "userNamespaces": "USER_NAMESPACES",
    "networkPolicyFlavour": "NETWORK_POLICY_FLAVOUR",
    "apiNamespace": "API_NAMESPACE",
    "dnsNamespace": "DNS_NAMESPACE",
    "dnsPodLabels": "DNS_POD_LABELS",
    "nodeLocalDnsAddresses": "NODE_LOCAL_DNS_ADDRESSES",
    "nodeLocalDnsPort": "NODE_LOCAL_DNS_PORT",
    "retainStorageClass": "RETAIN_STORAGE_CLASS",
}
# Values of the chart's config that are not hook settings (the HTTP layer's, gunicorn's).
VALUES_IGNORED = ("maxRequestBytes", "logLevel")


class UsageError(Exception):
    """A bad option value (clock, configuration, parent name)."""


# ---------------------------------------------------------------------------------------------
# Options shared by the commands


def parse_now(raw: str) -> datetime:
    if raw == "now":
        return datetime.now(timezone.utc).replace(microsecond=0)
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--now {raw!r}: not an RFC 3339 time such as {DEFAULT_NOW} (or 'now')") from None
    if value.tzinfo is None:
        raise UsageError(f"--now {raw!r}: give a time zone, e.g. {DEFAULT_NOW}")
    return value.astimezone(timezone.utc)


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_env_text(v) for v in value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={_env_text(v)}" for k, v in sorted(value.items()))
    return str(value)


def values_env(path: str) -> dict[str, str]:
    """The LLMSS_* variables the chart's Deployment would set from a values file's `config:`."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--values {path}: {exc}") from None
    config = values.get("config") if isinstance(values, Mapping) else None
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise UsageError(f"--values {path}: config must be a mapping (chart/values.yaml)")
    out = {}
    for key, value in config.items():
        if key in VALUES_IGNORED:
            continue
        if key not in VALUES_ENV:
            raise UsageError(f"--values {path}: config.{key} is not a setting of the chart (known: {', '.join(sorted(VALUES_ENV))})")
        if key == "dnsPodLabels" and not value:
            continue  # the chart's default {k8s-app: kube-dns}, also the hooks'
        out[ENV_PREFIX + VALUES_ENV[key]] = _env_text(value)
    return out


def make_config(values: Sequence[str], settings: Sequence[str], environ: Mapping[str, str]) -> Config:
    """The hooks' configuration as the server builds it from its environment (LLMSS_* variables):
    the process's, then each values file's config, then each --set."""
    env = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    for path in values:
        env.update(values_env(path))
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith(ENV_PREFIX):
            raise UsageError(f"--set {item!r}: expected {ENV_PREFIX}NAME=value (the server's variables, hooks/config.py)")
        env[key] = value
    try:
        return Config.from_env(env)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def parse_parent(raw: str, namespace: str) -> Key:
    """KIND/NAME (namespace from -n) or KIND/NAMESPACE/NAME; KIND case-insensitive."""
    parts = raw.split("/")
    kinds = {k.lower(): k for k in (C.KIND_SANDBOX, C.KIND_PROFILE, C.KIND_RUNTIME, C.KIND_WARMPOOL, C.KIND_WARMPOD, "Namespace")}
    kind = kinds.get(parts[0].lower())
    if kind is None or len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"--parent {raw!r}: expected KIND/NAME or KIND/NAMESPACE/NAME, KIND one of {', '.join(sorted(kinds.values()))}")
    if kind in (C.KIND_RUNTIME, "Namespace"):
        if len(parts) == 3:
            raise UsageError(f"--parent {raw!r}: {kind} is cluster-scoped (KIND/NAME)")
        return kind, "", parts[1]
    return (kind, parts[1], parts[2]) if len(parts) == 3 else (kind, namespace, parts[1])


def _add_input(parser: argparse.ArgumentParser, files: bool = True) -> None:
    if files:
        parser.add_argument("-f", "--filename", action="append", required=True, metavar="FILE_OR_DIR",
                            help="YAML/JSON documents: files, directories (their .yaml/.yml/.json files), - for stdin; repeatable")
    parser.add_argument("-R", "--recursive", action="store_true", help="read directories recursively")
    parser.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE,
                        help=f"namespace of documents that name none (default {DEFAULT_NAMESPACE})")
    parser.add_argument("--now", default=DEFAULT_NOW,
                        help=f"the clock (RFC 3339), also every object's creation time; 'now' for the wall clock (default {DEFAULT_NOW})")
    parser.add_argument("--values", action="append", default=[], metavar="FILE",
                        help="a Helm values file of the chart: its config: section configures the hooks")
    parser.add_argument("--set", action="append", default=[], dest="settings", metavar="LLMSS_NAME=VALUE",
                        help="a hook setting, as the server's environment variable (after the environment and --values)")
    parser.add_argument("--rounds", type=int, default=0, metavar="N",
                        help="after the controllers settle, N rounds of 2 s in which each pod moves one step "
                             "Pending -> Running -> Ready (about 4 to see a sandbox Running)")


# ---------------------------------------------------------------------------------------------
# Output


def _yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, allow_unicode=True, width=4096)


def objects(rendered: Sequence[Rendered]) -> list[tuple[str, dict[str, Any]]]:
    """(comment, object) in output order: each parent as the cluster would show it, then the
    children its controller desires, exactly as the hook answered them."""
    out: list[tuple[str, dict[str, Any]]] = []
    for item in rendered:
        call = f"{item.exchange.path} at {fmt_time(item.exchange.now)}"
        out.append((f"{describe(item.key)}: as stored after {call}", item.parent))
        for child in item.children:
            out.append((f"desired by {describe(item.key)} ({item.exchange.path})", child))
    return out


def write_objects(rendered: Sequence[Rendered], output: str, out: TextIO) -> None:
    pairs = objects(rendered)
    if output == "json":
        out.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": [o for _, o in pairs]},
                             indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return
    for comment, obj in pairs:
        out.write(f"---\n# {comment}\n{_yaml(obj)}")


def write_hook_calls(rendered: Sequence[Rendered], out: TextIO) -> None:
    """One JSON line per parent: its last hook call, the response in the server's own bytes."""
    for item in rendered:
        call = item.exchange
        line = b'{"now":' + jsonio.dumps(fmt_time(call.now)) + b',"path":' + jsonio.dumps(call.path) + \
            b',"request":' + jsonio.dumps(call.request) + b',"response":' + jsonio.dumps(call.response) + b"}"
        out.write(line.decode("utf-8") + "\n")


# ---------------------------------------------------------------------------------------------
# Commands


def _common(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[datetime, Config, Optional[set[Key]]]:
    now = parse_now(args.now)
    config = make_config(args.values, args.settings, environ)
    if args.rounds < 0:
        raise UsageError("--rounds must not be negative")
    only = {parse_parent(p, args.namespace) for p in getattr(args, "parent", None) or []} or None
    return now, config, only


def cmd_render(args: argparse.Namespace, out: TextIO, err: TextIO, environ: Mapping[str, str]) -> int:
    now, config, only = _common(args, environ)
    rendered = render(load(args.filename, args.namespace, args.recursive), now, config, args.rounds, only)
    if args.hook_calls:
        write_hook_calls(rendered, out)
    else:
        write_objects(rendered, args.output, out)
    return 0


def verdicts(rendered: Sequence[Rendered]) -> list[str]:
    """What the controllers would report as wrong, in their own words: Validated=False or
    Available=False conditions, a Failed phase, a tenant namespace's hardening errors."""
    out = []
    for item in rendered:
        status = item.parent.get("status") or {}
        conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
        refused = [c for c in conditions if c.get("type") in (C.CONDITION_VALIDATED, C.CONDITION_AVAILABLE) and c.get("status") == "False"]
        for cond in refused:
            out.append(f"{describe(item.key)}: {cond['type']}=False {cond.get('reason')}: {cond.get('message', '')}")
        if status.get("phase") == C.PHASE_FAILED and not refused:  # a refused spec is why it failed: said above
            ready = next((c for c in conditions if c.get("type") == C.CONDITION_READY), {})
            out.append(f"{describe(item.key)}: phase Failed: {ready.get('reason', '')}: {ready.get('message', '')}")
        errors = (item.parent["metadata"].get("annotations") or {}).get(C.ANNOTATION_HARDENING_ERRORS)
        if errors:
            out.append(f"{describe(item.key)}: {C.ANNOTATION_HARDENING_ERRORS}: {errors}")
    return out


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO, environ: Mapping[str, str]) -> int:
    now, config, _ = _common(args, environ)
    docs = load(args.filename, args.namespace, args.recursive)  # schema and CEL: raises InputError
    rendered = render(docs, now, config, args.rounds)
    problems = verdicts(rendered)
    for problem in problems:
        err.write(f"error: {problem}\n")
    if problems:
        return 1
    out.write(f"ok: {len(docs)} documents, {len(rendered)} parents valid\n")
    return 0


def _diff_text(old: Any, new: Any, old_label: str, new_label: str) -> str:
    lines = difflib.unified_diff(_yaml(old).splitlines(keepends=True) if old is not None else [],
                                 _yaml(new).splitlines(keepends=True) if new is not None else [],
                                 fromfile=old_label, tofile=new_label)
    return "".join(lines)


def changes(old: Sequence[Rendered], new: Sequence[Rendered]) -> list[str]:
    """Blocks of text, one per changed object: parents (status), desired children (a unified
    diff), with the pod settings that only a replacement applies (OnDelete children)."""
    blocks: list[str] = []
    old_by, new_by = {r.key: r for r in old}, {r.key: r for r in new}
    for key in sorted(set(old_by) | set(new_by), key=lambda k: (k[0], k[1], k[2])):
        a, b = old_by.get(key), new_by.get(key)
        if a is None or b is None:
            blocks.append(f"{describe(key)}: only in {'NEW' if a is None else 'OLD'}\n")
            continue
        status = _diff_text(a.parent.get("status"), b.parent.get("status"), f"OLD {describe(key)} status", f"NEW {describe(key)} status")
        if status:
            blocks.append(status)
        ident: Callable[[dict[str, Any]], tuple[str, str, str]] = lambda c: (c["kind"], c["metadata"].get("namespace", ""), c["metadata"]["name"])
        old_children, new_children = {ident(c): c for c in a.children}, {ident(c): c for c in b.children}
        for child in sorted(set(old_children) | set(new_children)):
            before, after = old_children.get(child), new_children.get(child)
            if before == after:
                continue
            label = f"{child[0]} {child[2]} (desired by {describe(key)})"
            text = _diff_text(before, after, f"OLD {label}", f"NEW {label}")
            strategy = b.controller.strategy.get(child[0])
            if before is not None and after is not None and strategy == "OnDelete":
                text += _on_delete_note(key, child[0], before, after)
            elif before is None:
                text = f"# added: {label}\n" + text
            elif after is None:
                text = f"# removed: {label} (Metacontroller deletes it)\n" + text
            blocks.append(text)
    return blocks


def _on_delete_note(parent: Key, kind: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """Metacontroller never updates an OnDelete child: an existing one keeps the old version."""
    lines = [f"# {kind} is OnDelete: an existing {kind} keeps the OLD version; this change applies only when it is replaced."]
    if kind == "Pod":
        for change in drift.pod_changes(before, after):
            lines.append(f"#   not applied to a running pod: {change}")
        if parent[0] == C.KIND_SANDBOX:
            lines.append(f"#   to apply it: kubectl annotate sandbox {parent[2]} -n {parent[1]} {C.ANNOTATION_REPLACE_POD}=<new token> --overwrite")
    return "\n".join(lines) + "\n"


def cmd_diff(args: argparse.Namespace, out: TextIO, err: TextIO, environ: Mapping[str, str]) -> int:
    now, config, only = _common(args, environ)
    context = list(args.filename or [])
    old = render(load([args.old, *context], args.namespace, args.recursive), now, config, args.rounds, only)
    new = render(load([args.new, *context], args.namespace, args.recursive), now, config, args.rounds, only)
    blocks = changes(old, new)
    out.write("".join(blocks))
    return 1 if blocks else 0


# ---------------------------------------------------------------------------------------------
# Entry point


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="llmsafespace", description="The desired state of LLMSafeSpace sandboxes, offline: "
                                  "the hooks the server runs, called as Metacontroller would call them (docs/render.md).",
                                  epilog="also: llmsafespace conformance (a runtime image), llmsafespace exec / run (code in a "
                                  "sandbox, through the gateway: docs/gateway.md); each has its own --help")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render", help="print each parent's status and desired children")
    _add_input(p)
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    p.add_argument("--parent", action="append", metavar="KIND/[NAMESPACE/]NAME",
                   help="print only this parent (the others still run, as context); repeatable")
    p.add_argument("--hook-calls", action="store_true",
                   help="print each parent's last hook call (path, now, request, response) as one JSON line instead")
    p.set_defaults(run=cmd_render, exit_on_error=1)
    v = sub.add_parser("validate", help="check documents against the CRDs and the hooks; exit 1 on any error")
    _add_input(v)
    v.set_defaults(run=cmd_validate, exit_on_error=1)
    d = sub.add_parser("diff", help="what changes in the desired children from OLD to NEW; exit 1 when something does")
    d.add_argument("old", metavar="OLD", help="file or directory before the edit")
    d.add_argument("new", metavar="NEW", help="file or directory after the edit")
    _add_input(d, files=False)
    d.add_argument("-f", "--filename", action="append", metavar="FILE_OR_DIR",
                   help="context common to OLD and NEW (runtimes, profiles, pools); repeatable")
    d.add_argument("--parent", action="append", metavar="KIND/[NAMESPACE/]NAME", help="compare only this parent; repeatable")
    d.set_defaults(run=cmd_diff, exit_on_error=2)
    return top


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
         environ: Optional[Mapping[str, str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["conformance"]:  # its own package and options (python -m conformance)
        from conformance.__main__ import main as conformance_main
        return conformance_main(argv[1:], out)
    if argv[:1] in (["exec"], ["run"]):  # the SDK's verbs (sdk/llmsafespace/cli.py), imported only here
        try:
            from llmsafespace.cli import main as sandbox_main
        except ImportError as exc:
            err.write(f"error: {exc}; `llmsafespace {argv[0]}` needs the SDK: pip install ./sdk (or pip install -e '.[sdk]')\n")
            return 2
        return sandbox_main(argv[0], argv[1:], out, err)
    args = parser().parse_args(argv)
    try:
        return int(args.run(args, out, err, os.environ if environ is None else environ))
    except (InputError, UsageError) as exc:
        for line in str(exc).splitlines():
            err.write(f"error: {line}\n")
        return 2 if isinstance(exc, UsageError) else int(args.exit_on_error)
    except BrokenPipeError:  # `llmsafespace render ... | head`: the reader stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ImportError as exc:  # jsonschema / cel-python: not needed by the server, so not in its image
        err.write(f"error: {exc}; install the command-line tool's dependencies: pip install -e '.[cli]' "
                  f"(or pip install -r requirements-dev.txt)\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
