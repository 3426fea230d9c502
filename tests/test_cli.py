"""The command line: one error path (the kit's errors as one line and a documented exit code), flags that
override a checkpoint's settings only when given, and `mattingkit train` / `python -m mattingkit.train`
being one command."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mattingkit import cli
from mattingkit.config import InferConfig, load_config
from mattingkit.errors import InputNotFoundError, MattingKitError, UsageError

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_missing_checkpoint_is_one_line_and_the_documented_exit_code(tmp_path):
    (tmp_path / "in").mkdir()
    res = _run("mattingkit", "predict", "missing.pt", "in", "out", cwd=tmp_path)
    assert res.returncode == InputNotFoundError.exit_code == 4
    assert res.stderr.splitlines() == ["mattingkit predict: missing.pt: checkpoint not found"]
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_help_documents_the_exit_codes():
    text = cli.build_parser().format_help()
    assert "exit codes:" in text
    for code in cli.EXIT_CODES:
        assert f"  {code}  " in text
    for cls in (UsageError, InputNotFoundError):
        assert cls.exit_code in cli.EXIT_CODES


def test_main_maps_every_kit_error_once(monkeypatch, capsys):
    def boom(args):
        raise UsageError("first line\nsecond line")

    monkeypatch.setattr(cli, "cmd_config", boom)   # build_parser binds the module's function
    assert cli.main(["config"]) == 2
    assert capsys.readouterr().err == "mattingkit config: first line | second line\n"


def test_config_error_is_one_line(capsys):
    assert cli.main(["config", "--set", "train.no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mattingkit config: ") and err.count("\n") == 1


def test_predict_flags_override_the_checkpoint_settings_only_when_given(monkeypatch, tmp_path):
    from mattingkit import infer

    saved = load_config("demo", ["infer.tta_flip=true", "infer.two_pass=true", "infer.write_rgba=true"])
    seen = []
    monkeypatch.setattr(infer, "load_model", lambda path, device="cpu": (object(), saved))
    monkeypatch.setattr(infer, "predict_folder",
                        lambda model, images, out, **kw: seen.append(kw["infer_cfg"]) or infer.PredictReport(out))
    assert cli.main(["predict", "c.pt", str(tmp_path), str(tmp_path / "o")]) == 0
    assert cli.main(["predict", "c.pt", str(tmp_path), str(tmp_path / "o"), "--no-tta", "--no-rgba"]) == 0
    assert isinstance(seen[0], InferConfig)
    assert (seen[0].tta_flip, seen[0].two_pass, seen[0].write_rgba) == (True, True, True)   # the config's
    assert (seen[1].tta_flip, seen[1].two_pass, seen[1].write_rgba) == (False, True, False)  # given flags win


def test_python_m_mattingkit_train_is_the_train_command(tmp_path):
    a = _run("mattingkit.train", "--help", cwd=tmp_path)
    b = _run("mattingkit", "train", "--help", cwd=tmp_path)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout and "--run-dir" in a.stdout


def test_every_kit_error_has_an_exit_code_in_the_table():
    import mattingkit.checkpoint  # noqa: F401 - registers their subclasses
    import mattingkit.config  # noqa: F401
    import mattingkit.submission  # noqa: F401

    def subclasses(c):
        for s in c.__subclasses__():
            yield s
            yield from subclasses(s)

    assert {c.exit_code for c in subclasses(MattingKitError)} <= set(cli.EXIT_CODES)


@pytest.mark.parametrize("argv", [["run", "--notebooks", "09"], ["run", "--param", "x"]])
def test_usage_errors_of_run_exit_2(argv, capsys, tmp_path):
    assert cli.main(argv + ["--runs-root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("mattingkit run: ")
