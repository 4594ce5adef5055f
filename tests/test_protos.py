"""The contract: generated code matches protos/, protos are buf-lint clean."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _differences(left: Path, right: Path) -> list[str]:
    cmp = filecmp.dircmp(left, right, ignore=["__pycache__"])
    out = [str(left / n) for n in cmp.left_only + cmp.right_only + cmp.diff_files]
    for sub in cmp.common_dirs:
        out += _differences(left / sub, right / sub)
    return out


def test_generated_code_is_not_stale(tmp_path):
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "gen_protos.py"),
            "--out",
            str(tmp_path / "genproto"),
        ],
        check=True,
        timeout=120,
    )
    stale = _differences(ROOT / "genproto", tmp_path / "genproto")
    assert not stale, f"genproto/ is stale; run `make protos` and commit: {stale}"


def test_protos_are_buf_lint_clean():
    buf = shutil.which("buf", path=str(BIN)) or shutil.which("buf")
    assert buf, "buf is missing: it comes with the buf-bin package of the dev extra"
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
