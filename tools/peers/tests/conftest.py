"""The torch side's tests read what Caffe computed (caffe_side.py, run with pytrim's venv):
the folder in PEERS_FIXTURES, or one made for the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))  # the torch side's modules (twin, finetune, prune, latency)


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """index.json of the Caffe side's files (written first when PEERS_FIXTURES names none)."""
    folder = Path(os.environ["PEERS_FIXTURES"]) if os.environ.get("PEERS_FIXTURES") else None
    if folder is None or not (folder / "index.json").is_file():
        folder = folder or tmp_path_factory.mktemp("caffe-side")
        python = ROOT / ".venv/bin/python"
        subprocess.run([str(python), str(HERE / "caffe_side.py"), str(folder)], check=True, cwd=ROOT)
    return json.loads((folder / "index.json").read_text())
