"""environment.yml, pyproject.toml and requirements.lock must not drift apart."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def _pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = data["optional-dependencies"]
    return data["dependencies"] + extras["dev"] + extras["cluster"], data["requires-python"]


def _conda():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    return env, [d for d in deps if isinstance(d, str)], [p for p in pip if not p.startswith("-e")]


def test_environment_yml_matches_pyproject():
    reqs, _ = _pyproject()
    env, conda, pip = _conda()
    assert env["channels"] == ["conda-forge", "nodefaults"]
    assert "python=3.11" in conda and "pip" in conda
    assert sorted(pip) == sorted(reqs), "environment.yml pip section differs from pyproject.toml"


def test_exact_torch_pins_everywhere():
    reqs, requires_python = _pyproject()
    assert "torch==2.14.1" in reqs and "torchvision==0.29.1" in reqs
    assert requires_python == ">=3.11"
    lock = {(_name(l), l.strip()) for l in (ROOT / "requirements.lock").read_text().splitlines()
            if l.strip() and not l.startswith("#")}
    locked = dict(lock)
    assert locked["torch"] == "torch==2.14.1" and locked["torchvision"] == "torchvision==0.29.1"
    missing = {_name(r) for r in reqs} - set(locked)
    assert not missing, f"requirements.lock lacks {sorted(missing)}"
    assert all("==" in line for line in locked.values()), "every lock line must be an exact pin"
