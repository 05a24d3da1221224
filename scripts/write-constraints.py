"""Write constraints.txt: the exact version of every package pepnet, its `test` and `torchrec` extras and
TorchRec itself pull in, as installed in the active environment (CI installs with ``pip install -c constraints.txt``).

    . .venv/bin/activate && python scripts/write-constraints.py      # after a tested upgrade
"""
from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOTS = ["pepnet[test,onnx,torchrec,lint]", "torchrec"]  # torchrec: installed with --no-deps by scripts/install-torchrec.sh
HEADER = """# Exact versions CI tests with (.ci/run: pip install -c constraints.txt -e ".[test]").
# pyproject.toml declares the compatible ranges; this file only makes CI reproducible.
# Regenerate from a tested environment: python scripts/write-constraints.py
"""


def closure(roots: list[str]) -> dict[str, str]:
    """Installed name -> public version (local labels such as +cpu dropped) of every requirement reachable from
    ``roots``, markers evaluated for this interpreter; requirements that are not installed are skipped."""
    found: dict[str, str] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        if key in found:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue
        found[key] = Version(dist.version).public
        for spec in dist.requires or []:
            sub = Requirement(spec)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                todo.append(sub)
    found.pop("pepnet", None)
    return found


def main() -> None:
    pins = closure(ROOTS)
    text = HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    out = Path(__file__).resolve().parents[1] / "constraints.txt"
    out.write_text(text)
    sys.stdout.write(f"wrote {len(pins)} pins to {out}\n")


if __name__ == "__main__":
    main()
