"""What pepnet declares: compatible ranges in pyproject.toml, CI's exact versions in constraints.txt."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_runtime_dependencies_are_ranges_not_pins():
    """Installing into an environment that already has torch / numpy / polars must not force other versions:
    every runtime dependency has a lower bound and none is pinned exactly."""
    for spec in _project()["dependencies"]:
        req = Requirement(spec)
        ops = {s.operator for s in req.specifier}
        assert ">=" in ops and not ops & {"==", "===", "~="}, spec


def test_constraints_pin_every_declared_dependency_inside_its_range():
    """CI installs with -c constraints.txt: each dependency (extras included) has one exact version there, and
    that version satisfies the range pyproject.toml declares (the lower bound is what CI tests)."""
    project, pins = _project(), _pins()
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    for spec in specs:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name == canonicalize_name(project["name"]):  # an extra that pulls in another extra (test: onnx)
            assert req.extras <= set(project["optional-dependencies"]), spec
            continue
        assert name in pins, f"{req.name} is not in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (spec, str(pins[name]))
    for spec in project["dependencies"]:  # each lower bound is the version CI tests
        req = Requirement(spec)
        lower = next(Version(s.version) for s in req.specifier if s.operator == ">=")
        assert lower == pins[canonicalize_name(req.name)], spec


def test_test_output_is_plain_text(tmp_path):
    """fbgemm_gpu's import-time warnings carry ANSI colour codes; the suite's warning filters keep them out."""
    pytest.importorskip("torchrec")
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_import():\n    import torchrec  # noqa: F401  (imports fbgemm_gpu)\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
           "--rootdir", str(ROOT), str(probe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr
