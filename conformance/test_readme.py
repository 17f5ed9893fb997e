"""The README's walk-through runs as written: its `sh` blocks, in order, in one
shell on a fresh scratch directory with a fresh home, against the servers the
blocks start themselves. A command that fails fails the test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT, clean_env, on_postgres

BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def sh_blocks() -> list[str]:
    return BLOCK.findall((REPO_ROOT / "README.md").read_text())


@pytest.mark.skipif(on_postgres(), reason="the walk-through runs on the embedded default")
def test_the_readme_walkthrough_runs_as_written(tmp_path):
    blocks = sh_blocks()
    assert len(blocks) >= 4, "the README's sh blocks were not found"
    for tool in ("jq", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (.ci/run installs it)")
    script = "\n".join([
        "set -euo pipefail",
        "export TESSERA_LOG=warn",
        # Whatever the blocks start in the background stops with the script.
        "trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT",
        f"cd {shlex_quote(str(REPO_ROOT))}",
        *(f"# --- block {i + 1}\n{b}" for i, b in enumerate(blocks)),
    ])
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env({"HOME": str(home), "TMPDIR": str(tmp_path),
                     # The AWS CLI of the suite's venv, as a user's own would be on PATH.
                     "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    # The Rust toolchain stays where it is installed.
    real_home = Path.home()
    env.setdefault("RUSTUP_HOME", os.environ.get("RUSTUP_HOME", str(real_home / ".rustup")))
    env.setdefault("CARGO_HOME", os.environ.get("CARGO_HOME", str(real_home / ".cargo")))
    for k in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_PROFILE"):
        env.pop(k, None)
    (tmp_path / "walkthrough.sh").write_text(script)
    cp = subprocess.run(["bash", str(tmp_path / "walkthrough.sh")], capture_output=True, text=True, env=env,
                        timeout=600, stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, f"the README's walk-through failed (exit {cp.returncode})\n" \
                               f"--- stdout\n{cp.stdout[-4000:]}\n--- stderr\n{cp.stderr[-4000:]}"
    # Each block ran to its end: the renewal reached the agent, the backup was checked.
    assert "Backup written and checked." in cp.stdout


def shlex_quote(s: str) -> str:
    import shlex
    return shlex.quote(s)
