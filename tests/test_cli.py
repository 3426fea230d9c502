"""The command line: one error path (the kit's errors as one line and a documented exit code), flags that
override a checkpoint's settings only when given, and `mattingkit train` / `python -m mattingkit train`
(what `accelerate launch -m mattingkit train` runs) being one command."""
from __future__ import annotations

import os
import subprocess
import sys
import types
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
    monkeypatch.setattr(infer, "predictor_for",
                        lambda source, device="cpu": (types.SimpleNamespace(mattingkit_cfg=saved), {"checkpoint": "c"}))
    monkeypatch.setattr(infer, "predict_folder",
                        lambda model, images, out, **kw: seen.append(kw["infer_cfg"]) or infer.PredictReport(out))
    assert cli.main(["predict", "c.pt", str(tmp_path), str(tmp_path / "o")]) == 0
    assert cli.main(["predict", "c.pt", str(tmp_path), str(tmp_path / "o"), "--no-tta", "--no-rgba"]) == 0
    assert isinstance(seen[0], InferConfig)
    assert (seen[0].tta_flip, seen[0].two_pass, seen[0].write_rgba) == (True, True, True)   # the config's
    assert (seen[1].tta_flip, seen[1].two_pass, seen[1].write_rgba) == (False, True, False)  # given flags win


def test_accelerate_launch_form_of_the_train_command(tmp_path):
    """``accelerate launch -m mattingkit train ARGS`` runs ``python -m mattingkit train ARGS`` in each process:
    the command the help names parses the train arguments."""
    res = _run("mattingkit", "train", "--help", cwd=tmp_path)
    assert res.returncode == 0 and "--run-dir" in res.stdout
    top = _run("mattingkit", "--help", cwd=tmp_path)
    assert "accelerate launch -m mattingkit train ARGS" in " ".join(top.stdout.split())


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


# ------------------------------------------------------------------------------------------------
# evaluate: nothing evaluated -> exit 1 with the reason; each problem once; no trimap not given
# ------------------------------------------------------------------------------------------------
def test_evaluate_with_every_prediction_the_wrong_size_exits_1_and_says_why_once(tmp_path):
    import numpy as np

    from mattingkit.io import write_png

    for i in range(2):
        write_png(tmp_path / "gt" / f"{i:04d}.png", np.zeros((16, 16), np.float32))
        write_png(tmp_path / "pred" / f"{i:04d}.png", np.zeros((8, 8), np.float32))
    res = _run("mattingkit", "evaluate", "pred", "gt", cwd=tmp_path)
    assert res.returncode == 1, res
    assert "nan" not in res.stdout and "size mismatch" in res.stdout
    assert res.stdout.count("0000:") == 1 and res.stdout.count("0001:") == 1   # each problem once
    assert "trimap" not in (res.stdout + res.stderr).lower()                     # none was given
    assert "Warning" not in res.stderr
    assert res.stderr.strip() == "mattingkit evaluate: nothing was evaluated (2 problem(s) above)"
    write_png(tmp_path / "pred" / "0000.png", np.zeros((16, 16), np.float32))   # one now evaluates
    one = _run("mattingkit", "evaluate", "pred", "gt", cwd=tmp_path)
    assert one.returncode == 1 and one.stdout.startswith("images") and "1 problem(s)" in one.stdout
    assert "1 of 2 evaluated" in one.stdout and "Warning" not in one.stderr   # a wrong size still fails
    write_png(tmp_path / "pred" / "0001.png", np.zeros((16, 16), np.float32))
    ok = _run("mattingkit", "evaluate", "pred", "gt", cwd=tmp_path)
    assert ok.returncode == 0 and "problem" not in ok.stdout and "evaluated" not in ok.stdout


def test_evaluate_refuses_photos_as_predictions_and_missing_predictions_unless_allowed(tmp_path):
    """issue 24: photos passed as predictions printed SAD 24.29 and exit 0 (submit refused the same files);
    a missing prediction passed silently."""
    import numpy as np

    from mattingkit.io import write_png

    rng = np.random.default_rng(0)
    for i in range(5):
        alpha = np.zeros((16, 16), np.float32)
        alpha[4:12, 4:12] = 1
        write_png(tmp_path / "alpha" / f"{i}.png", alpha)
        write_png(tmp_path / "image" / f"{i}.png", rng.uniform(0, 1, (16, 16, 3)).astype(np.float32))
        if i < 4:
            write_png(tmp_path / "pred" / f"{i}.png", alpha)
    photos = _run("mattingkit", "evaluate", "image", "alpha", cwd=tmp_path)
    assert photos.returncode == 1 and "is a colour image" in photos.stdout and "SAD" not in photos.stdout.upper()
    missing = _run("mattingkit", "evaluate", "pred", "alpha", cwd=tmp_path)
    assert missing.returncode == 1, missing
    assert "4 of 5 evaluated" in missing.stdout and "no prediction with this stem" in missing.stdout
    assert "--allow-missing" in missing.stderr and missing.stderr.count("\n") == 1
    allowed = _run("mattingkit", "evaluate", "pred", "alpha", "--allow-missing", cwd=tmp_path)
    assert allowed.returncode == 0 and "4 of 5 evaluated" in allowed.stdout


# ------------------------------------------------------------------------------------------------
# predict --method: classical baselines without a checkpoint; --force
# ------------------------------------------------------------------------------------------------
def _photo_and_trimap(root: Path) -> None:
    import numpy as np

    from mattingkit.io import write_png

    tri = np.zeros((24, 24), np.float32)
    tri[6:18, 6:18] = 0.5
    tri[9:15, 9:15] = 1
    write_png(root / "img" / "a.png", np.repeat(tri[..., None], 3, 2))
    write_png(root / "tri" / "a.png", tri)


def test_predict_method_needs_trimaps_and_writes_without_a_checkpoint(tmp_path, capsys):
    _photo_and_trimap(tmp_path)
    img, out = str(tmp_path / "img"), str(tmp_path / "out")
    assert cli.main(["predict", "--method", "trimap", img, out]) == 2
    assert "--trimaps" in capsys.readouterr().err and not Path(out).exists()
    with pytest.raises(SystemExit):
        cli.main(["predict", "--method", "closed_fom", img, out, "--trimaps", str(tmp_path / "tri")])
    assert cli.main(["predict", "--method", "trimap", img, out, "--trimaps", str(tmp_path / "tri")]) == 0
    assert (tmp_path / "out" / "a.png").exists()
    assert cli.main(["predict", "--method", "trimap", "c.pt", img, out, "--trimaps", "t"]) == 2


def test_predict_force_reaches_predict_folder(monkeypatch, tmp_path):
    from mattingkit import infer

    seen = []

    def fake(model, images, out, force=False, **kw):
        seen.append(force)
        return infer.PredictReport(out)

    monkeypatch.setattr(infer, "predictor_for",
                        lambda source, device="cpu": (types.SimpleNamespace(mattingkit_cfg=None), {"checkpoint": "c"}))
    monkeypatch.setattr(infer, "predict_folder", fake)
    assert cli.main(["predict", "c.pt", str(tmp_path), str(tmp_path / "o"), "--force"]) == 0
    assert cli.main(["predict", "c.pt", str(tmp_path), str(tmp_path / "o")]) == 0
    assert seen == [True, False]


def test_train_force_reaches_the_trainer(monkeypatch, tmp_path):
    import mattingkit.train as train_pkg

    got = []
    monkeypatch.setattr(train_pkg, "train_and_report", lambda cfg, run_dir=None, fresh=False, force=False:
                        got.append(force) or {})
    assert cli.main(["train", "--run-dir", str(tmp_path / "r"), "--force"]) == 0
    assert got == [True]


# ------------------------------------------------------------------------------------------------
# doctor, download alphamatting
# ------------------------------------------------------------------------------------------------
def test_doctor_json_is_one_object(tmp_path):
    import json

    res = _run("mattingkit", "doctor", "--json", "--no-probe", "--config", "demo", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["device"]["type"] == "cpu" and "amp" in rep and "platform" in rep


from test_download import alphamatting_site, am_site  # noqa: E402,F401 - the fake alphamatting.com


def test_download_alphamatting_command(am_site, tmp_path, capsys):  # noqa: F811 - the fixture
    dest = tmp_path / "am"
    rc = cli.main(["download", "alphamatting", "--dest", str(dest), "--url", am_site["url"],
                   "--trimap-set", "Trimap2"])
    assert rc == 0, capsys.readouterr().err
    assert f"alphamatting (Trimap2): {dest}" in capsys.readouterr().out
    first = sorted((dest / "trimap").iterdir())[0]
    assert first.read_bytes() == am_site["src"]["Trimap2"][first.name]
    with pytest.raises(SystemExit):
        cli.main(["download", "alphamatting", "--trimap-set", "Trimap3"])
    assert cli.main(["download", "alphamatting", "--competition", "x"]) == 2


# ------------------------------------------------------------------------------------------------
# submit --kaggle against a local fake Kaggle (the real kaggle client, through HTTP_PROXY)
# ------------------------------------------------------------------------------------------------
KEY = "FAKEKEY_k1l2m3n4o5p6"


@pytest.fixture
def fake_kaggle(tmp_path):
    import importlib.util
    import json

    if importlib.util.find_spec("kaggle") is None:
        pytest.skip("the kaggle client is not installed")
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = {"mode": "", "requests": [], "uploaded": None}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            method = self.path.rsplit("/", 1)[-1]
            state["requests"].append(method)
            if method == "IntrospectToken":
                return self._send(200, {"active": True, "username": "tester"})
            if method == "StartSubmissionUpload":
                state["file_name"] = body.get("fileName")
                return self._send(200, {"token": "blob-token-1", "createUrl": "http://localhost/upload/blob-1"})
            if method == "CreateSubmission":
                if state["mode"] == "reject":
                    return self._send(400, {"code": 400, "message": "Submission must have 2 columns (got 3)"})
                state["description"] = body.get("submissionDescription", "")
                return self._send(200, {"message": "Successfully submitted", "ref": 777})
            if method == "ListSubmissions":
                return self._send(200, {"submissions": [{
                    "ref": 777, "fileName": state.get("file_name"), "description": state.get("description", ""),
                    "status": "COMPLETE", "publicScore": "0.04321", "privateScore": "", "submittedBy": "tester"}]})
            return self._send(404, {"code": 404, "message": "not found"})

        def do_PUT(self):
            state["uploaded"] = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state["requests"].append("PUT")
            return self._send(200, {})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KAGGLE_") and k.lower() not in ("no_proxy", "https_proxy", "all_proxy")}
    env.update(HOME=str(home), KAGGLE_API_ENVIRONMENT="LOCALHOST", KAGGLE_USERNAME="tester", KAGGLE_KEY=KEY,
               HTTP_PROXY=f"http://127.0.0.1:{server.server_port}", PYTHONPATH=str(REPO))
    state["env"] = env
    yield state
    server.shutdown()
    server.server_close()


def _submit(state, *args, cwd):
    return subprocess.run([sys.executable, "-m", "mattingkit", "submit", *args], cwd=cwd, env=state["env"],
                          capture_output=True, text=True, timeout=180)


def test_submit_kaggle_builds_validates_uploads_and_prints_the_score(fake_kaggle, tmp_path):
    import numpy as np

    from mattingkit.io import write_png

    write_png(tmp_path / "alphas" / "0001.png", np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    res = _submit(fake_kaggle, "alphas", "sub.csv", "--size", "8", "--kaggle", "ecom-test", "-m", "demo run",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "scored 0.04321" in res.stdout
    assert fake_kaggle["uploaded"] == (tmp_path / "sub.csv").read_bytes()
    assert fake_kaggle["description"] == "demo run"
    assert KEY not in res.stdout + res.stderr
    # an existing CSV, uploaded as is
    again = _submit(fake_kaggle, "--csv", "sub.csv", "--size", "8", "--kaggle", "ecom-test", "-m", "again",
                    cwd=tmp_path)
    assert again.returncode == 0 and "scored 0.04321" in again.stdout and fake_kaggle["description"] == "again"


def test_submit_kaggle_rejected_shows_kaggles_reason_and_exits_1(fake_kaggle, tmp_path):
    import numpy as np

    from mattingkit.io import write_png
    from mattingkit.submission import build_submission

    write_png(tmp_path / "alphas" / "0001.png", np.zeros((8, 8), np.float32))
    build_submission(tmp_path / "alphas", tmp_path / "sub.csv", size=8, verbose=False)
    fake_kaggle["mode"] = "reject"
    res = _submit(fake_kaggle, "--csv", "sub.csv", "--size", "8", "--kaggle", "ecom-test", "-m", "x", cwd=tmp_path)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Submission must have 2 columns (got 3)" in res.stderr and KEY not in res.stdout + res.stderr


def test_submit_argument_errors(tmp_path, capsys):
    assert cli.main(["submit", "--csv", str(tmp_path / "x.csv")]) == 2
    assert cli.main(["submit", "a", "b", "--kaggle", "comp"]) == 2          # no -m
    assert cli.main(["submit"]) == 2
    assert cli.main(["submit", "--csv", str(tmp_path / "x.csv"), "--kaggle", "c", "-m", "m"]) == 4


def test_every_readme_command_line_parses():
    """README's `mattingkit ...` examples name real commands and flags (argparse accepts each line)."""
    import re
    import shlex

    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [ln for b in blocks for ln in b.splitlines() if re.match(r"\s*(\.venv/bin/)?mattingkit ", ln)]
    assert len(lines) >= 15
    parser = cli.build_parser()
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        if argv == ["--help"]:
            continue
        args = parser.parse_args(argv)
        assert args.func is not None, line


# ------------------------------------------------------------------------------------------------
# issue 24: exit codes and one default; start-up without torch
# ------------------------------------------------------------------------------------------------
def test_doctor_exits_1_when_it_reports_a_problem(capsys):
    assert cli.main(["doctor", "--no-probe", "--set", "run.device=cpu"]) == 0
    assert "PROBLEM" not in capsys.readouterr().out
    assert cli.main(["doctor", "--no-probe", "--set", "run.device=cuda"]) == 1   # no GPU here
    assert "PROBLEM" in capsys.readouterr().out


def test_every_command_defaults_to_the_one_default_config():
    from mattingkit.config import DEFAULT_CONFIG

    parser = cli.build_parser()
    commands = [["config"], ["run"], ["train"], ["doctor"], ["download"], ["manifest", "--out", "m.csv"]]
    assert {parser.parse_args(argv).config for argv in commands} == {DEFAULT_CONFIG}
    assert load_config().run.name == load_config(DEFAULT_CONFIG).run.name


def test_predict_on_an_empty_folder_is_an_input_error_naming_it(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "tri").mkdir()
    code = cli.main(["predict", "--method", "trimap", str(tmp_path / "empty"), str(tmp_path / "out"),
                     "--trimaps", str(tmp_path / "tri")])
    err = capsys.readouterr().err
    assert code == 4 and f"{tmp_path / 'empty'}: no images in this folder" in err and err.count("\n") == 1


_NO_TORCH = """
import sys
import mattingkit.cli as cli
cli.build_parser()
{extra}
heavy = sorted(m for m in ("torch", "torchvision", "cv2") if m in sys.modules)
print(",".join(heavy) or "none")
"""


@pytest.mark.parametrize("extra", ["", "cli.main(['validate', sys.argv[1]])"])
def test_parser_help_and_validate_import_no_torch(tmp_path, extra):
    """`mattingkit --help` took 3-21 s (torch imported at start); the timing lives in
    benchmarks/cli_startup.py, this checks the cause: building the parser (and validate) imports no torch."""
    csv = tmp_path / "s.csv"
    csv.write_text("filename,image_utf\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", _NO_TORCH.format(extra=extra), str(csv)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "none", r.stdout + r.stderr


# ------------------------------------------------------------------------------------------------
# issue 24: words on the command line
# ------------------------------------------------------------------------------------------------
def test_download_without_a_competition_says_which_key_to_set(capsys):
    assert cli.main(["download", "--config", "ecom"]) == 2
    err = capsys.readouterr().err
    assert "data.kaggle_competition" in err and "kaggle.com/competitions/SLUG" in err and "--competition" in err
    assert "nothing to download" not in err and err.count("\n") == 1


def test_messages_name_the_cli_flag_and_warnings_are_one_line(monkeypatch, capsys):
    import warnings

    from mattingkit.errors import RunStateError

    def refuse(args):
        raise RunStateError("out holds 3 predictions by another model; pass force=True (CLI: --force) to start afresh.")

    monkeypatch.setattr(cli, "cmd_config", refuse)
    assert cli.main(["config"]) == RunStateError.exit_code
    err = capsys.readouterr().err
    assert "pass --force to start afresh" in err and "force=True" not in err

    def warn(args):
        warnings.warn("runs/x/best.pt: no best.pt.sha256 sidecar; loading without integrity check", stacklevel=2)
        return 0

    monkeypatch.setattr(cli, "cmd_config", warn)
    assert cli.main(["config"]) == 0
    err = capsys.readouterr().err
    assert err == "mattingkit config: warning: runs/x/best.pt: no best.pt.sha256 sidecar; loading without integrity check\n"
