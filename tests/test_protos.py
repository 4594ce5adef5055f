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


def _buf() -> str:
    buf = shutil.which("buf", path=str(BIN)) or shutil.which("buf")
    assert buf, "buf is missing: it comes with the buf-bin package of the dev extra"
    return buf


def test_protos_have_no_breaking_change_against_main():
    """Clients built on main's protos keep working with these (FILE rules of buf.yaml)."""
    assert (ROOT / ".git").exists(), "buf breaking compares with main: run the tests in a clone"
    result = subprocess.run([_buf(), "breaking", "--against", ".git#branch=main"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_catches_a_removed_field(tmp_path):
    """The check above is live: a copy of the protos without a field fails it."""
    changed = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", changed / "protos")
    shutil.copy(ROOT / "buf.yaml", changed / "buf.yaml")
    proto = changed / "protos" / "budget" / "v1" / "budget.proto"
    text = proto.read_text()
    assert "  int64 overdraft_nanos = 9;\n" in text
    proto.write_text(text.replace("  int64 overdraft_nanos = 9;\n", ""))
    result = subprocess.run([_buf(), "breaking", "--against", str(ROOT)], cwd=changed,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0
    assert "overdraft_nanos" in result.stdout + result.stderr
