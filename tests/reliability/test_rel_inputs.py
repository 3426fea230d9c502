"""The bad-inputs corpus (tests/reliability/relcorpus.py) through every consumer of image files:
mattingkit.io, layouts.validate (+ manifest / problems CSV), infer.predict_folder with a small real
model, metrics.evaluate_folder and the submission builder.

Each consumer must either handle an item correctly (valid but unusual input: 16-bit, RGBA, gray,
palette, CMYK, EXIF-rotated, a non-UTF-8 file name) or give a clear error naming the file, and a
folder run must go past a bad item and report it at the end.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from relcorpus import NON_UTF8, H, W, _alpha, make_corpus
from relkit import subprocess_env

from mattingkit import io as mio
from mattingkit.data import layouts
from mattingkit.data.manifest import read_manifest, write_manifest

pytestmark = pytest.mark.reliability

VALID = {"good", "png16", "rgba", "gray", "palette", "cmyk", "exif", NON_UTF8}
READERS = {"image": mio.read_image, "alpha": mio.read_alpha, "trimap": mio.read_trimap}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, make_corpus(root)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small real model (U²-Net-P, random init) saved as a checkpoint and loaded the way notebook 04
    does (infer.load_model)."""
    from mattingkit import checkpoint as ckpt
    from mattingkit.config import load_config
    from mattingkit.infer import load_model
    from mattingkit.models import build_model

    cfg = load_config("demo", {"model.name": "u2netp"})
    torch.manual_seed(0)
    state = {"format": ckpt.FORMAT, "format_version": ckpt.FORMAT_VERSION, "step": 0,
             "generator": build_model(cfg.model).state_dict(), "config": cfg.to_dict()}
    path = ckpt.save_checkpoint(state, tmp_path_factory.mktemp("model") / "best.pt")
    return load_model(path)[0]


@pytest.fixture(scope="module")
def predicted(corpus, model, tmp_path_factory):
    """predict_folder over the corpus photos with the corpus trimaps; returns (report, out_dir, stdout)."""
    from mattingkit.infer import predict_folder

    root, items = corpus
    out = tmp_path_factory.mktemp("pred")
    import contextlib
    import io

    buf = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny images: one thread is as fast, and does not spin on a busy machine
    try:
        with contextlib.redirect_stdout(buf):
            rep = predict_folder(model, root / "original", out, trimap_dir=root / "trimap", headless=True)
    finally:
        torch.set_num_threads(threads)
    return rep, out, buf.getvalue()


# --------------------------------------------------------------------------------------------
# mattingkit.io
# --------------------------------------------------------------------------------------------
def test_io_reads_valid_files_and_names_the_bad_ones(corpus):
    root, items = corpus
    problems = []
    for stem, item in items.items():
        for role, path in item.files.items():
            try:
                arr = READERS[role](path)
            except mio.ImageReadError as e:
                if role != item.bad or item.io_error is None:
                    problems.append(f"{stem}/{role}: unexpected error {e}")
                elif str(path) not in str(e) or item.io_error not in str(e):
                    problems.append(f"{stem}/{role}: unclear error {e}")
                continue
            if role == item.bad and item.io_error is not None:
                problems.append(f"{stem}/{role}: read without error")
                continue
            want = (H, W, 3) if role == "image" else (H, W)
            if item.kind == "size mismatch" and role == item.bad:
                want = (20, 30)
            if arr.shape != want or arr.dtype != np.float32 or not (0 <= arr.min() <= arr.max() <= 1):
                problems.append(f"{stem}/{role}: shape {arr.shape} {arr.dtype} range [{arr.min()}, {arr.max()}]")
    assert not problems, "\n".join(problems)
    # the valid-but-unusual files decode to the right values
    a = _alpha()
    np.testing.assert_allclose(mio.read_alpha(items["png16"].files["alpha"]), a, atol=1 / 65535 + 1e-6)
    np.testing.assert_allclose(mio.read_alpha(items["rgba"].files["alpha"]), a, atol=0.5 / 255 + 1e-6)
    tri = mio.read_trimap(items["palette"].files["trimap"])
    assert set(np.unique(tri).tolist()) == {0.0, 0.5, 1.0}
    assert mio.image_size(items["exif"].files["image"]) == (W, H)   # after EXIF, like read_image
    gray = mio.read_image(items["gray"].files["image"])
    assert np.array_equal(gray[..., 0], gray[..., 2])


# --------------------------------------------------------------------------------------------
# layouts.validate + manifest
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check_pixels", [True, False])
def test_validate_reports_every_bad_item_naming_its_file(corpus, tmp_path, check_pixels):
    root, items = corpus
    rows = layouts.scan("aim500", root)
    assert sorted(rows["id"]) == sorted(items)
    rep = layouts.validate(rows, check_pixels=check_pixels)
    pixel_only = {"trimap_values", "trimap_no_unknown"}  # invisible in the file headers
    expected_bad = {s for s, it in items.items() if it.kind} - (set() if check_pixels else pixel_only)
    assert set(rep.bad_ids) == expected_bad, rep.summary()
    assert set(rep.good_df["id"]) == set(items) - expected_bad
    for stem in expected_bad:
        item = items[stem]
        mine = [p for p in rep.problems if p.id == stem]
        assert [p.kind for p in mine] == [item.kind], (stem, mine)
        assert mine[0].file == str(item.files[item.bad]), (stem, mine)
    good = rep.good_df.set_index("id")
    assert (good["width"] == W).all() and (good["height"] == H).all()    # EXIF applied for "exif"
    # the summary prints on a strict UTF-8 console, and both CSVs round-trip every id and path
    rep.summary().encode("utf-8")
    problems_csv = rep.to_csv(tmp_path / "m.problems.csv")
    back = pd.read_csv(problems_csv, dtype=str, encoding_errors="surrogateescape")
    assert set(back["file"]) == {p.file for p in rep.problems}
    man = write_manifest(rep.good_df, tmp_path / "manifest.csv")
    df = read_manifest(man)
    assert list(df["id"]) == list(rep.good_df["id"])
    assert NON_UTF8 in set(df["id"])
    for p in df["image"]:
        assert Path(p).is_file()


def test_build_manifest_on_the_corpus_writes_both_files(corpus, tmp_path):
    """The notebook-01 path: build_manifest keeps the good items (non-UTF-8 one included) and writes the
    problems CSV beside the manifest."""
    from mattingkit.config import load_config

    root, items = corpus
    cfg = load_config("demo", {"data.root": str(root), "data.layout": "aim500", "run.data_root": str(tmp_path),
                               "data.check_pixels": True})
    df, rep = layouts.build_manifest(cfg, tmp_path / "manifest.csv")
    assert set(df["id"]) == VALID
    assert set(read_manifest(tmp_path / "manifest.csv")["id"]) == VALID
    assert len(pd.read_csv(layouts.problems_path_for(tmp_path / "manifest.csv"), dtype=str,
                           encoding_errors="surrogateescape")) == len(rep.problems) == 9


# --------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------
def test_predict_folder_goes_past_bad_items_and_reports_them(corpus, predicted):
    root, items = corpus
    rep, out, stdout = predicted
    unusable = {"zero_bytes", "trunc_png", "trunc_jpg", "huge_decl", "not_image",   # the photo is broken
                "trimap_mismatch", "trimap_values"}                                  # the trimap is unusable
    assert set(rep.written) == set(items) - unusable, rep.summary()
    failed = {Path(p).stem: reason for p, reason in rep.failed}
    assert set(failed) == unusable
    for stem in unusable:
        item = items[stem]
        assert str(item.files[item.bad]) in failed[stem], (stem, failed[stem])  # names the bad file
        assert f"FAILED {item.files['image']}" in stdout                        # reported at the end
    assert stdout.index("predict_folder ->") < min(stdout.index(f"FAILED {items[s].files['image']}") for s in unusable)
    for stem in rep.written:
        alpha = mio.read_alpha(out / f"{stem}.png")
        assert alpha.shape == (H, W), stem                  # the image's size (after EXIF)
    tri = mio.read_trimap(items["trimap_no_unknown"].files["trimap"])
    assert np.array_equal(mio.read_alpha(out / "trimap_no_unknown.png"), tri)  # all known: alpha = trimap


def test_predict_folder_resumes_and_fails_the_same_items_again(corpus, predicted, model):
    from mattingkit.infer import predict_folder

    root, items = corpus
    rep, out, _ = predicted
    again = predict_folder(model, root / "original", out, trimap_dir=root / "trimap", headless=True, verbose=False)
    assert set(again.skipped) == set(rep.written) and again.written == []
    assert sorted(again.failed) == sorted(rep.failed)


def test_reports_print_on_a_strict_utf8_console(tmp_path):
    """A failing file whose name is not UTF-8: predict_folder's and validate's reports print on a console
    that refuses surrogates (PYTHONIOENCODING=utf-8, as on Colab), naming the file with \\x escapes."""
    name = os.fsdecode(b"bad_\xff")
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    (tmp_path / "im" / f"{name}.png").write_bytes(b"not a png")
    (tmp_path / "gt" / f"{name}.png").write_bytes(mio.png_bytes(_alpha()))
    script = textwrap.dedent("""
        import sys, torch
        from mattingkit.infer import predict_folder
        from mattingkit.data import layouts
        class Gray(torch.nn.Module):
            def forward(self, image, trimap):
                return {"alpha": image.mean(1, keepdim=True)}
        root = sys.argv[1]
        predict_folder(Gray(), root + "/im", root + "/out", headless=True)
        print(layouts.validate(layouts.scan("folder", root)).summary())
        print("END")
    """)
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=300,
                         env=subprocess_env(PYTHONIOENCODING="utf-8:strict"))
    out = res.stdout.decode("utf-8")
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")[-2000:]
    assert "FAILED" in out and "bad_\\xff.png" in out and "END" in out


# --------------------------------------------------------------------------------------------
# metrics.evaluate_folder
# --------------------------------------------------------------------------------------------
def test_evaluate_folder_on_the_predictions(corpus, predicted, tmp_path):
    from mattingkit.metrics import evaluate_folder

    root, items = corpus
    rep, out, _ = predicted
    with pytest.warns(UserWarning, match="problem"):
        df = evaluate_folder(out, root / "mask", root / "trimap", out_csv=tmp_path / "per_image.csv",
                             metrics=("sad", "mse"))
    evaluated = set(df["image"])
    assert NON_UTF8 in evaluated and "good" in evaluated
    errors = {e["image"]: e for e in df.attrs["errors"]}
    assert "size mismatch" in errors["size_mismatch"]["reason"]
    for stem in {Path(p).stem for p, _ in rep.failed}:
        assert stem in errors and "no prediction" in errors[stem]["reason"]
    back = pd.read_csv(tmp_path / "per_image.csv", dtype={"image": str}, encoding_errors="surrogateescape")
    assert set(back["image"]) == evaluated


# --------------------------------------------------------------------------------------------
# submission builder
# --------------------------------------------------------------------------------------------
def test_submission_builder_reports_every_bad_prediction_at_once(corpus, predicted, tmp_path):
    """Predictions folder = good predictions + odd-but-valid files + broken ones: one SubmissionError
    naming every broken file (and the non-UTF-8 name), no CSV; without the broken ones the CSV is
    built (odd formats converted, each matte at its own size) and validates."""
    from mattingkit.submission import SubmissionError, build_submission, validate_submission

    root, items = corpus
    rep, out, _ = predicted
    alpha_dir = tmp_path / "alpha"
    shutil.copytree(out, alpha_dir)
    (alpha_dir / f"{NON_UTF8}.png").unlink()
    odd = {"p16": items["png16"].files["alpha"], "cutout": items["rgba"].files["alpha"],
           "pal": items["palette"].files["trimap"], "small": items["size_mismatch"].files["alpha"]}
    for stem, src in odd.items():
        shutil.copy(src, alpha_dir / f"odd_{stem}{src.suffix}")
    # colour photos (a CMYK JPEG, an EXIF-rotated JPEG) are not alphas (issue 16): named in the error too
    photos = {stem: items[key].files["image"] for stem, key in (("cmyk", "cmyk"), ("exifjpg", "exif"))}
    for stem, src in photos.items():
        shutil.copy(src, alpha_dir / f"photo_{stem}{src.suffix}")
    broken = {stem: items[stem].files["image"] for stem in ("zero_bytes", "trunc_png", "trunc_jpg", "huge_decl",
                                                              "not_image")}
    for src in broken.values():
        shutil.copy(src, alpha_dir / src.name)
    weird = alpha_dir / f"{NON_UTF8}.png"
    shutil.copy(out / "good.png", weird)
    csv = tmp_path / "sub" / "submission.csv"
    with pytest.raises(SubmissionError) as ei:
        build_submission(alpha_dir, csv, size=32, verbose=False)
    msg = str(ei.value)
    msg.encode("utf-8")                                  # printable anywhere
    for stem, src in broken.items():
        assert str(alpha_dir / src.name) in msg, (stem, msg)
    for stem, src in photos.items():
        assert f"{alpha_dir / f'photo_{stem}{src.suffix}'}: is a colour image" in msg, (stem, msg)
    assert "not valid UTF-8" in msg and mio.printable(str(weird)) in msg
    assert not csv.exists() and not list(csv.parent.iterdir())  # no CSV, no temp file
    for src in broken.values():
        (alpha_dir / src.name).unlink()
    for stem, src in photos.items():
        (alpha_dir / f"photo_{stem}{src.suffix}").unlink()
    weird.unlink()
    report = build_submission(alpha_dir, csv, verbose=False)   # no size: each matte keeps its own
    assert report.rows == len(rep.written) - 1 + len(odd)
    assert report.resized == []                           # never stretched (24x32 stays 24x32)
    val = validate_submission(csv)
    assert val.ok, val.summary()
