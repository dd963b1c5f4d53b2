"""Install npm's yaml-language-server into a temporary folder and run the editor tests
(tests/test_editor.py) against it: completion of every step key, the schema's own
messages, YAML 1.2 booleans.

    python bench/editor_check.py            # needs node and npm; exits 0 when they pass

Prints why and exits 0 without running anything when node or npm is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("skipped: node and npm are needed to install yaml-language-server")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        install = ["npm", "install", "--no-audit", "--no-fund", "--prefix", folder]
        done = subprocess.run([*install, "yaml-language-server"], check=False, timeout=600)
        if done.returncode != 0:
            print("npm install yaml-language-server failed", file=sys.stderr)
            return 1
        server = Path(folder) / "node_modules" / ".bin" / "yaml-language-server"
        env = {**os.environ, "FLOWRUNNER_YLS": str(server)}
        test = [sys.executable, "-m", "pytest", "-q", "-rs", str(REPO / "tests" / "test_editor.py")]
        return subprocess.run(test, env=env, check=False, timeout=600).returncode


if __name__ == "__main__":
    sys.exit(main())
