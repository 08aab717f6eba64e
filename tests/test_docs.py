"""Every python code block in README.md and docs/*.md runs, so the docs cannot rot.

The blocks of one page run in order in one fresh interpreter (later blocks may use names from
earlier ones), with the page's folder copied nowhere: the working directory is a temporary folder,
so blocks that write files write there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.name)
def test_code_blocks_run(page, tmp_path):
    code = "\n\n".join(_blocks(page))
    script = tmp_path / f"{page.stem}_blocks.py"
    script.write_text(code)
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env=env)
    assert res.returncode == 0, f"{page.name} code blocks failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def test_api_page_lists_every_public_name():
    import sketchcore

    page = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name in sketchcore.__all__ if f"`{name}" not in page]
    assert not missing, f"docs/api.md does not mention {missing}"
