"""The dependency direction of DESIGN.md: the core never imports the analyzers."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANALYZER_IMPORT = re.compile(r"^\s*(from|import)\s+(probes|circuits)\b", re.MULTILINE)


def test_interp_core_imports_neither_probes_nor_circuits():
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "interp").rglob("*.py")
        if "cli" not in path.relative_to(ROOT / "interp").parts
        and ANALYZER_IMPORT.search(path.read_text())
    ]
    assert offenders == []


def test_importing_interp_is_light():
    import subprocess
    import sys

    code = "import sys, interp; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
