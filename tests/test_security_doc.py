"""SECURITY.md's guarantees each name a test that exists: every row of a `| guarantee | tests |`
table names at least one file under tests/, each file exists, and each `file::name` names a test
function defined in that file (so a renamed or deleted test cannot leave a claim unproven)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF = re.compile(r"`(tests/[\w/.-]+\.py)(?:::(\w+))?`")


def guarantee_rows() -> list[str]:
    rows, in_table = [], False
    for line in (ROOT / "SECURITY.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| guarantee | tests |"):
            in_table = True
            continue
        if in_table and line.startswith("|---"):
            continue
        if in_table and line.startswith("|"):
            rows.append(line)
            continue
        in_table = False
    return rows


def functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.FunctionDef)}


def test_every_guarantee_names_existing_tests() -> None:
    rows = guarantee_rows()
    assert len(rows) >= 20, "the guarantee tables of SECURITY.md were not found"
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        refs = REF.findall(cells[-1])
        assert refs, f"a SECURITY.md guarantee names no test: {cells[0][:100]}"
        for path, name in refs:
            assert (ROOT / path).is_file(), f"SECURITY.md names {path}, which does not exist"
            if name:
                assert name.startswith("test_") and name in functions(ROOT / path), \
                    f"SECURITY.md names {path}::{name}, which is not a test function there"


def test_the_runtime_guarantees_are_there() -> None:
    text = " ".join(guarantee_rows())
    for claim in ("bound to this pod's UID", "at most 60 s", "refuses a replay", "Nothing a sandbox can read",
                  "confined to the writable paths", "refuses to run as root", "Output and load are capped",
                  "whole process group"):
        assert claim in text, claim
