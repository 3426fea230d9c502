"""pyproject.toml, environment.yml, the constraints file, README and .ci/run agree with each other."""
import re
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI names
CONDA_TO_PYPI = {"pytorch": "torch", "py-opencv": "opencv-python-headless"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_runtime_dependencies_have_lower_bounds_only():
    for req in _pyproject()["dependencies"]:
        assert ">=" in req and "==" not in req and "<" not in req.replace("<=", "<"), req


def test_environment_yml_lists_the_same_packages():
    proj = _pyproject()
    wanted = {_name(r) for r in proj["dependencies"]}
    for extra in ("lab", "dev"):
        wanted |= {_name(r) for r in proj["optional-dependencies"][extra]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge" and "defaults" not in env["channels"]
    conda = set()
    pip_section = None
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
            continue
        n = _name(dep)
        if n in ("python", "pip"):
            continue
        conda.add(CONDA_TO_PYPI.get(n, n))
    assert conda == wanted, (conda ^ wanted)
    assert pip_section == ["-e .[lab,dev]"]


def test_constraints_pin_torch_and_every_dependency():
    pins = {}
    for line in (REPO / "constraints" / "ci.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    proj = _pyproject()
    for req in proj["dependencies"] + proj["optional-dependencies"]["dev"]:
        assert _name(req) in pins, f"{req} is not pinned in constraints/ci.txt"


def test_readme_commands_and_ci_agree():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    makefile = (REPO / "Makefile").read_text()
    assert "constraints/ci.txt" in makefile and "$(VENV)" in makefile


def test_readme_counts_its_own_data_commands_and_docs_have_no_empty_example():
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- own-data-commands -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln for ln in block.splitlines() if ln.startswith("mattingkit ")]
    words = {"four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
    said = re.search(r"a YAML file, and (\w+) commands", readme).group(1)
    assert words[said] == len(commands), (said, commands)
    for doc in (REPO / "docs").glob("*.md"):
        assert not re.search(r"^Example:\s*\n\s*(#|$)", doc.read_text(), re.M), f"{doc}: an empty Example:"
