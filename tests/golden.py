"""Golden files of desired state: tests/golden/<controller>/<case>.json = {"request", "response"}.

A test recomputes the response from the stored request and compares. With LLMSS_UPDATE_GOLDEN=1
the files are rewritten instead (then review `git diff tests/golden` like a code diff)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE = os.environ.get("LLMSS_UPDATE_GOLDEN") == "1"


def _text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check_golden(path: str | Path, request: Any, response: Any) -> None:
    """Compare (or, with LLMSS_UPDATE_GOLDEN=1, write) one golden file. `path` is relative to
    tests/golden/ unless absolute."""
    file = Path(path) if Path(path).is_absolute() else GOLDEN_DIR / path
    wanted = _text({"request": request, "response": response})
    if UPDATE or not file.exists():
        if not UPDATE:
            raise AssertionError(f"golden file {file} is missing; run with LLMSS_UPDATE_GOLDEN=1 to create it")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(wanted, encoding="utf-8")
        return
    stored = json.loads(file.read_text(encoding="utf-8"))
    if stored["request"] != json.loads(json.dumps(request)):
        raise AssertionError(f"{file}: the stored request differs from the test's; regenerate with LLMSS_UPDATE_GOLDEN=1")
    got = json.loads(_text(response))
    assert got == stored["response"], (
        f"{file}: response differs from the golden file; if the change is intended, "
        f"regenerate with LLMSS_UPDATE_GOLDEN=1 and review the diff"
    )
