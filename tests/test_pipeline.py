"""The notebook steps of :mod:`mattingkit.pipeline` called directly (no papermill): the doctor report of
01, the Drive-space line of 03, the real-set evaluation of 04 (model vs closed-form vs trimap-as-alpha),
the Kaggle cell of 05, the titled figures every step writes, and the run-at-a-glance table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mattingkit import pipeline, run, viz
from mattingkit.io import read_alpha, read_image, read_trimap, write_png

REPO = Path(__file__).resolve().parents[1]
ALPHAMATTING_DEV = REPO.parent / "shared" / "data" / "alphamatting_dev"


@pytest.fixture(scope="module")
def figures():
    """Every Figure the pipeline saves, by file name (the real save still happens)."""
    seen: dict[str, object] = {}
    real = viz.save_figure
    mp = pytest.MonkeyPatch()

    def capture(fig, path, *args, **kwargs):
        seen[Path(path).name] = fig
        return real(fig, path, *args, close=False)

    mp.setattr(viz, "save_figure", capture)
    yield seen
    mp.undo()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, figures):
    """A smoke demo run through 01 -> 03 (12 training steps), in a temp folder."""
    synthetic = pytest.importorskip("mattingkit.data.synthetic")
    tmp = tmp_path_factory.mktemp("pipe")
    synthetic.make_demo_data(tmp / "data" / "demo", seed=0)
    ctx = run.prepare_run("demo", [f"run.data_root={tmp / 'data'}", "run.device=cpu"], "pipe", tmp / "runs",
                          smoke=True)
    pipeline.prepare_data(ctx, n_preview=2, download=False)
    pipeline.trimap_previews(ctx, n_samples=2)
    pipeline.train_model(ctx)
    return ctx


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_doctor_report_first_in_01(trained, capsys):
    rep = pipeline.doctor_report(trained, probe=False)
    out = capsys.readouterr().out
    assert out.startswith("mattingkit doctor:") and "device" in out and "AMP" in out
    assert run.read_metrics(trained.run_dir)[pipeline.NB_DATA]["doctor_ok"] == rep["ok"]


def test_drive_space_printed_in_03(trained, capsys):
    need = pipeline.drive_space(trained)
    out = capsys.readouterr().out
    assert need["steady_bytes"] > 0 and str(trained.run_dir) in out
    assert need["message"] not in out and "trash" not in out   # the Drive warning: only on Colab with Drive


def test_data_and_trimap_figures_have_titles_and_column_headers(trained, figures):
    fig = figures["data_samples.png"]
    assert fig._suptitle.get_text().startswith("Data samples")
    assert _titles(fig)[:3] == ["image", "ground truth", "trimap"]
    assert fig.axes[0].get_ylabel()                                  # the item id
    fig = figures["trimap_previews.png"]
    heads = [t for t in _titles(fig) if t]
    assert heads[0] == "image" and any(h.startswith("erode_dilate (") and "% unknown" in h for h in heads)
    assert {"band", "from_mask"} <= {h.split(" ")[0] for h in heads}
    assert "Trimap methods" in fig._suptitle.get_text()
    for name in ("data_samples.png", "trimap_previews.png"):
        assert trained.path(name).read_bytes()[:4] == b"\x89PNG"


def test_curves_one_panel_per_validation_metric(trained, figures):
    fig = viz.plot_history(trained.path(run.HISTORY_FILE), trained.path("curves.png"))
    titles = _titles(fig)
    val = [r for r in run.read_history(trained.path(run.HISTORY_FILE)) if r.get("phase") == "val"]
    assert val and titles[:3] == ["training losses", "learning rate", "discriminator"]  # smoke run has a GAN
    titles = titles[:2] + titles[3:]
    names = {"sad": "SAD", "mse": "MSE", "grad": "Grad", "conn": "Conn", "competition_mse": "competition MSE"}
    metrics = [k for k in names if k in val[-1]]
    assert titles[2:] == [f"validation {names[k]}" for k in metrics] and len(metrics) >= 2
    assert all(ax.get_ylabel() and ax.get_xlabel() == "step" for ax in fig.axes)
    assert fig.axes[0].get_yscale() == "log" and "log scale" in fig.axes[0].get_ylabel()


def test_comparison_figure_columns(trained, figures):
    res = pipeline.run_inference(trained, limit=2, n_preview=2)
    fig = figures["comparison.png"]
    assert _titles(fig)[:5] == ["image", "trimap", "ground truth", "prediction", "|error| (white: >= 0.5)"]
    assert "SAD" in fig._suptitle.get_text() and res["comparison"] == str(trained.path("comparison.png"))


def _demo_alphamatting(ctx, dest: Path, n: int = 2) -> Path:
    """A small alphamatting-layout folder (image/, alpha/, trimap/) from the demo's validation items."""
    from mattingkit.trimap import config_trimaps

    df = run.load_manifest(ctx.cfg, ctx.run_dir)
    for i, r in enumerate(df[df["alpha"] != ""].iloc[:n].to_dict("records")):
        stem = f"GT{i + 1:02d}"
        a = read_alpha(r["alpha"])
        tri = read_trimap(r["trimap"]) if r.get("trimap") else config_trimaps(a, ctx.cfg.trimap, seed=i)[
            ctx.cfg.trimap.method]
        write_png(dest / "image" / f"{stem}.png", read_image(r["image"]))
        write_png(dest / "alpha" / f"{stem}.png", a)
        write_png(dest / "trimap" / f"{stem}.png", tri)
    return dest


@pytest.mark.parametrize("source", ["shared", "demo"])
def test_real_set_table_model_and_baselines(trained, figures, tmp_path, source, capsys):
    if source == "shared":
        if not (ALPHAMATTING_DEV / "image").is_dir():
            pytest.skip("../shared/data/alphamatting_dev is absent")
        root = ALPHAMATTING_DEV
    else:
        root = _demo_alphamatting(trained, tmp_path / "am")
    ctx = run.prepare_run(trained.cfg, [f"data.eval_root={root}"], "pipe", trained.run_dir.parent, save=False)
    vals = pipeline.evaluate_real_set(ctx, limit=2, n_preview=2)
    out = capsys.readouterr().out
    table = pipeline.real_set_table(vals)
    assert list(table.index) == ["model", "closed-form", "trimap-as-alpha"]
    assert list(table.columns) == ["images", "sad", "mse", "grad", "conn"]
    assert (table["images"] == 2).all() and np.isfinite(table[["sad", "mse", "grad", "conn"]].to_numpy()).all()
    assert "closed-form" in out and "lower is better" in out
    # the classical solver beats returning the trimap on real photos (and on the demo's soft edges)
    assert table.loc["closed-form", "sad"] < table.loc["trimap-as-alpha", "sad"]
    # the same official numbers as scoring one folder by hand
    from mattingkit.metrics import evaluate_triples

    rows = pipeline.real_set_rows(ctx, 2)
    d = Path(vals["folders"]["closed_form"])
    hand = evaluate_triples([(r["id"], d / f"{r['id']}.png", r["alpha"], r["trimap"])
                             for r in rows.to_dict("records")], warn=False).attrs["mean"]["sad"]
    assert table.loc["closed-form", "sad"] == pytest.approx(hand, rel=1e-3)
    stored = run.read_metrics(ctx.run_dir)[pipeline.NB_INFER]["real_set"]
    assert stored["table"]["closed_form"]["sad"] == table.loc["closed-form", "sad"] and stored["images"] == 2
    per_image = pd.read_csv(ctx.path("metrics_real.csv"), dtype={"image": str})
    assert len(per_image) == 6 and set(per_image["method"]) == set(table.index)
    fig = figures["real_comparison.png"]
    heads = _titles(fig)[:7]                                          # the top row's headers
    assert heads[:3] == ["image", "trimap", "ground truth"] and heads[-1] == "|error| of model"
    assert [h.split("\n")[0] for h in heads[3:6]] == ["model", "closed-form", "trimap-as-alpha"]
    assert all("SAD" in h for h in heads[3:6]) and "Real photos" in fig._suptitle.get_text()
    # cached per producer: a second call writes nothing new
    src = json.loads((d / "_source.json").read_text())
    assert src["method"] == "closed_form"
    mtimes = {p: p.stat().st_mtime_ns for p in d.glob("*.png")}
    pipeline.evaluate_real_set(ctx, limit=2, n_preview=1, methods=("closed_form",))
    assert {p: p.stat().st_mtime_ns for p in d.glob("*.png")} == mtimes


def test_real_set_absent_is_skipped(trained, capsys):
    assert trained.cfg.data.eval_root in (None, "")
    assert pipeline.evaluate_real_set(trained) is None
    assert "no real evaluation set" in capsys.readouterr().out


def test_submission_preview_says_which_model_and_mode_made_it(trained, figures, capsys):
    vals = pipeline.make_submission(trained, n_show=1, copy=False)
    title = figures["submission_preview.png"]._suptitle.get_text()
    # the demo model was trained with trimaps and the test images have none: the documented two passes
    assert vals["two_pass"] and "checkpoint best.pt" in title and "two passes" in title
    assert vals["made_by"] in title and f"predicted by {vals['made_by']}" in capsys.readouterr().out


def test_kaggle_submit_cell(trained, monkeypatch, capsys):
    from mattingkit import kaggle

    csv = trained.path("submission.csv")
    csv.write_text("filename,image_utf\n")
    calls = []

    def fake_submit(path, competition, message, **kw):
        calls.append((Path(path), competition, message))
        return kaggle.SubmissionResult(competition, Path(path).name, message, "complete", public_score="0.0123")

    monkeypatch.setattr(kaggle, "submit_to_kaggle", fake_submit)
    vals = pipeline.kaggle_submit(trained, "some-comp", "run pipe")
    assert calls == [(csv, "some-comp", "run pipe")]
    assert "scored 0.0123" in capsys.readouterr().out and vals["public_score"] == "0.0123"
    assert run.read_metrics(trained.run_dir)[pipeline.NB_SUBMIT]["kaggle"]["status"] == "complete"


def test_summary_table_headlines(trained):
    text = pipeline.summary_table(trained)
    lines = dict(line.split(": ", 1) for line in text.splitlines() if line.startswith("0"))
    m = run.read_metrics(trained.run_dir)
    best = m[pipeline.NB_TRAIN]["best"]
    assert lines[pipeline.NB_TRAIN].startswith(f"best val {best['metric']}=") and f"at step {best['step']}" in text
    assert lines[pipeline.NB_INFER].startswith("SAD=")
    assert f"SAD={float(m[pipeline.NB_INFER]['sad']):.4g}," in lines[pipeline.NB_INFER]
    assert lines[pipeline.NB_DATA].startswith("items=")
    assert "lower is better" in text


def test_run_folder_reports_are_written_through_a_drive_that_fails_3_times(trained, monkeypatch, tmp_path):
    """data_report.md (01), metrics_real.csv (04) and submission_validation.txt (05) are run-folder files
    too: their writes go through the Drive retry (drive.write_text), so a mount that fails 3 times (the
    stand-in Drive of tests/flakydrive.py, here the run folder) does not stop the notebook."""
    from flakydrive import FlakyDrive

    from mattingkit import drive

    monkeypatch.setattr(drive, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    real = run.prepare_run(trained.cfg, [f"data.eval_root={_demo_alphamatting(trained, tmp_path / 'am', n=1)}"],
                           "pipe", trained.run_dir.parent, save=False)
    flaky = FlakyDrive(trained.run_dir, monkeypatch)
    steps = {"data_report.md": lambda: pipeline.prepare_data(trained, n_preview=1, download=False),
             "metrics_real.csv": lambda: pipeline.evaluate_real_set(real, limit=1, n_preview=1),
             "submission_validation.txt": lambda: pipeline.make_submission(trained, n_show=1, copy=False)}
    for name, step in steps.items():
        trained.path(name).unlink(missing_ok=True)
        flaky.failures = 0
        flaky.fail_next(3, only=lambda p, name=name: p.name.startswith(f".{name}.") and p.name.endswith(".tmp"))
        step()
        assert flaky.failures == 3 and trained.path(name).read_text().strip(), name
