"""Downloads (mattingkit.kaggle and mattingkit.data.download): credential discovery, error mapping, secrecy, and the real client against a fake server.

No network is used: the end-to-end test drives the installed ``kaggle`` client (unpatched) against
the fake Kaggle of ``tests/kaggle_fake_server.py`` on 127.0.0.1 in a fresh interpreter; the offline tests make real
connections to a closed loopback port.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests
from kaggle_fake_server import closed_port

from mattingkit import kaggle as kg
from mattingkit.data import download as dl
from mattingkit.data.archive import MARKER_NAME

REPO = Path(__file__).resolve().parents[1]

FAKE = {  # fake credentials, one per supported form; the tests check none of them ever leaks
    "token_env": "TOKENENV_q8w7e6r5t4y3u2i1",
    "token_file": "TOKENFILE_a1s2d3f4g5h6j7k8",
    "key_env": "KEYENV_z9x8c7v6b5n4m3l2",
    "key_json": "KEYJSON_p0o9i8u7y6t5r4e3",
}


def all_files_text(root: Path, skip: set[Path] = frozenset()) -> str:
    parts = []
    for p in root.rglob("*"):
        if p.is_file() and p not in skip:
            parts.append(p.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def assert_no_secret(text: str, where: str) -> None:
    for name, value in FAKE.items():
        assert value not in text, f"credential {name} leaked into {where}"


# ------------------------------------------------------------------------------------------
# find_credentials: every supported form, reporting the source only
# ------------------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    (h / ".kaggle").mkdir(parents=True)
    return h


def test_find_credentials_each_form(home: Path, tmp_path: Path):
    cases = []
    cases.append(({"KAGGLE_API_TOKEN": FAKE["token_env"]}, "KAGGLE_API_TOKEN environment variable",
                  "access_token"))
    tokfile = tmp_path / "tok.txt"
    tokfile.write_text(FAKE["token_file"])
    cases.append(({"KAGGLE_API_TOKEN": str(tokfile)}, "KAGGLE_API_TOKEN environment variable (token file)",
                  "access_token"))
    cases.append(({"KAGGLE_USERNAME": "me", "KAGGLE_KEY": FAKE["key_env"]},
                  "KAGGLE_USERNAME/KAGGLE_KEY environment variables", "legacy_key"))
    for environ, source, kind in cases:
        info = kg.find_credentials(environ, home=home)
        assert (info.source, info.kind, info.found) == (source, kind, True)
        for text in (str(info), repr(info)):
            assert_no_secret(text, "CredentialInfo")

    (home / ".kaggle" / "access_token").write_text(FAKE["token_file"] + "\n")
    info = kg.find_credentials({}, home=home)
    assert (info.source, info.kind) == ("~/.kaggle/access_token file", "access_token")
    # the env var wins over the file, as in the kaggle client
    assert kg.find_credentials({"KAGGLE_API_TOKEN": FAKE["token_env"]}, home=home).source.startswith(
        "KAGGLE_API_TOKEN")
    (home / ".kaggle" / "access_token").unlink()

    kj = home / ".kaggle" / "kaggle.json"
    kj.write_text(json.dumps({"username": "me", "key": FAKE["key_json"]}))
    info = kg.find_credentials({}, home=home)
    assert info.kind == "legacy_key" and "kaggle.json" in info.source and str(kj) in info.source
    assert_no_secret(repr(info), "CredentialInfo")

    # KAGGLE_CONFIG_DIR moves kaggle.json
    kj.unlink()
    cfgdir = tmp_path / "cfg"
    cfgdir.mkdir()
    (cfgdir / "kaggle.json").write_text(json.dumps({"username": "me", "key": FAKE["key_json"]}))
    assert kg.find_credentials({}, home=home).found is False
    assert str(cfgdir) in kg.find_credentials({"KAGGLE_CONFIG_DIR": str(cfgdir)}, home=home).source


def test_find_credentials_absent_or_unusable(home: Path):
    assert not kg.find_credentials({}, home=home).found
    half = kg.find_credentials({"KAGGLE_USERNAME": "me"}, home=home)
    assert not half.found and "both" in half.note
    (home / ".kaggle" / "kaggle.json").write_text("{not json")
    bad = kg.find_credentials({}, home=home)
    assert not bad.found and "not valid JSON" in bad.note
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "me"}))
    assert "lacks" in kg.find_credentials({}, home=home).note


def test_xdg_config_kaggle_json(tmp_path: Path):
    h = tmp_path / "h"
    (h / ".config" / "kaggle").mkdir(parents=True)  # no ~/.kaggle: the client falls back to XDG
    (h / ".config" / "kaggle" / "kaggle.json").write_text(json.dumps({"username": "u", "key": FAKE["key_json"]}))
    if sys.platform.startswith("linux"):
        assert kg.find_credentials({}, home=h).kind == "legacy_key"


def test_secret_values_cover_every_form(home: Path):
    (home / ".kaggle" / "access_token").write_text(FAKE["token_file"])
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "me", "key": FAKE["key_json"]}))
    environ = {"KAGGLE_API_TOKEN": FAKE["token_env"], "KAGGLE_KEY": FAKE["key_env"]}
    secrets = kg.secret_values(environ, home=home)
    for v in FAKE.values():
        assert v in secrets
    text = " ".join(f"<{v}>" for v in FAKE.values())
    red = kg.redact(text, secrets)
    assert_no_secret(red, "redacted text")
    assert red.count("***") == 4


def test_redact_authorization_headers():
    text = "{'Authorization': 'Basic dXNlcjprZXk=', 'X': 1} Authorization: Bearer abc.DEF-123"
    out = kg.redact(text, [])
    assert "dXNlcjprZXk" not in out and "abc.DEF-123" not in out
    assert out.count("***") == 2


# ------------------------------------------------------------------------------------------
# status -> message mapping (pure)
# ------------------------------------------------------------------------------------------
def test_explain_http_error_messages():
    kind, msg = kg.explain_http_error(403, "ecom-comp", "competition", "KAGGLE_API_TOKEN environment variable")
    assert kind == "rules" and "https://www.kaggle.com/competitions/ecom-comp/rules" in msg
    kind, msg = kg.explain_http_error(401, "ecom-comp", source="kaggle.json (/x/kaggle.json)")
    assert kind == "auth" and "kaggle.json (/x/kaggle.json)" in msg and "settings/api" in msg
    assert kg.explain_http_error(403, "o/d", "dataset")[0] == "forbidden"
    kind, msg = kg.explain_http_error(404, "o/d", "dataset")
    assert kind == "not_found" and "https://www.kaggle.com/datasets/o/d" in msg
    assert kg.explain_http_error(429, "x")[0] == "rate_limited"
    assert kg.explain_http_error(503, "x")[0] == "server"
    assert kg.explain_http_error(418, "x")[0] == "other"


def _http_error(status: int, text: str) -> requests.HTTPError:
    resp = requests.Response()
    resp.status_code = status
    resp._content = text.encode()
    return requests.HTTPError(text, response=resp)


def test_explain_exception_redacts_and_maps():
    info = kg.CredentialInfo("KAGGLE_API_TOKEN environment variable", "access_token")
    secret = FAKE["token_env"]
    err = kg.explain_exception(_http_error(401, f"bad token {secret}"), "c", "competition", info, [secret])
    assert err.kind == "auth" and secret not in str(err) and "KAGGLE_API_TOKEN" in str(err)
    err = kg.explain_exception(_http_error(403, "rules"), "c", "competition", info, [secret])
    assert err.kind == "rules"
    err = kg.explain_exception(requests.ConnectionError(f"Failed to resolve host {secret}"), "c",
                               "competition", info, [secret])
    assert err.kind == "offline" and "mattingkit demo-data" in str(err) and secret not in str(err)
    err = kg.explain_exception(RuntimeError(f"boom {secret}"), "c", "competition", info, [secret])
    assert err.kind == "other" and secret not in str(err)


# ------------------------------------------------------------------------------------------
# in-process: no credentials, and a real connection failure (offline), checked with caplog
# ------------------------------------------------------------------------------------------
def test_no_credentials_is_clear_and_touches_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for k in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(dl.DownloadError) as ei:
        kg.download_competition("some-comp", tmp_path / "data" / "comp")
    assert ei.value.kind == "no_credentials"
    assert "KAGGLE_API_TOKEN" in str(ei.value) and "mattingkit demo-data" in str(ei.value)
    assert not (tmp_path / "data").exists()


def test_load_colab_secrets_outside_colab_sets_nothing(monkeypatch):
    # google.colab is absent here: the helper must be a no-op
    if "google.colab" in sys.modules:
        pytest.skip("running on Colab")
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    assert kg.load_colab_secrets() == []
    assert "KAGGLE_API_TOKEN" not in os.environ


def test_colab_hint_when_on_colab(tmp_path: Path):
    msg = kg.no_credentials_message(kg.CredentialInfo(), {"COLAB_RELEASE_TAG": "x"})
    assert "Colab secrets" in msg and "papermill" in msg


def test_offline_real_connection_failure(tmp_path: Path, monkeypatch, caplog, capsys):
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "me", "key": FAKE["key_json"]}))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE["token_env"])
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", FAKE["key_env"])
    proxy = f"http://127.0.0.1:{closed_port()}"  # every request goes to a closed loopback port
    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(k, proxy)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    caplog.set_level(logging.DEBUG)
    dest = tmp_path / "data" / "comp"
    with pytest.raises(dl.DownloadError) as ei:
        kg.download_competition("some-comp", dest, quiet=False)
    err = ei.value
    assert err.kind == "offline", str(err)
    assert "mattingkit demo-data" in str(err) and "make demo" in str(err)
    out = capsys.readouterr()
    for text, where in ((str(err), "message"), (caplog.text, "log records"), (out.out + out.err, "output"),
                        (all_files_text(tmp_path, {home / ".kaggle" / "kaggle.json"}), "files")):
        assert_no_secret(text, where)
    for rec in caplog.records:
        assert_no_secret(rec.getMessage(), "a log record")
    assert not dest.exists()  # nothing half-written
    downloads = tmp_path / "data" / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []


# ------------------------------------------------------------------------------------------
# end-to-end: the real kaggle client against a fake Kaggle on 127.0.0.1
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_kaggle_run(tmp_path_factory) -> dict:
    pytest.importorskip("kaggle")
    work = tmp_path_factory.mktemp("kaggle_e2e")
    home = work / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(HOME=str(home), FAKE_SECRETS=json.dumps(FAKE), PYTHONPATH=str(REPO),
               MATTINGKIT_DATA_ROOT=str(work / "data"))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--fake-kaggle", str(work)],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS "))
    return {"results": json.loads(line[len("RESULTS "):]), "stdout": proc.stdout, "stderr": proc.stderr,
            "work": work, "home": home}


def test_e2e_error_kinds_and_messages(fake_kaggle_run):
    r = fake_kaggle_run["results"]
    assert r["no_credentials"]["kind"] == "no_credentials" and r["no_credentials"]["requests"] == []
    rules = r["rules_403"]
    assert rules["kind"] == "rules"
    assert "https://www.kaggle.com/competitions/ecom-test/rules" in rules["message"]
    assert "KAGGLE_USERNAME/KAGGLE_KEY environment variables" in rules["message"]  # names the source
    tok = r["token_401"]
    assert tok["kind"] == "auth" and "KAGGLE_API_TOKEN environment variable" in tok["message"]
    kj = r["kaggle_json_401"]
    assert kj["kind"] == "auth" and "kaggle.json" in kj["message"]
    off = r["offline"]
    assert off["kind"] == "offline" and "mattingkit demo-data" in off["message"] and off["requests"] == []


def test_e2e_success_extracts_and_second_call_is_offline_noop(fake_kaggle_run):
    r = fake_kaggle_run["results"]
    ok = r["success_competition"]
    assert ok["ok"], ok
    assert ok["requests"][-1].endswith("/files/ecom-test.zip")  # the zip was really fetched
    assert {"train_dataset/images/0001.jpg", "train_dataset/masks/0001.png", MARKER_NAME} <= set(ok["files"])
    again = r["success_again"]
    assert again["ok"] and again["requests"] == []  # idempotent: no network at all
    ds = r["success_dataset"]
    assert ds["ok"] and ds["requests"][0].endswith("/DownloadDataset")
    work = fake_kaggle_run["work"]
    downloads = work / "data" / "downloads"
    assert [p.name for p in downloads.iterdir()] == []  # no partial folders, archives removed
    # the downloaded competition is scannable by the layouts module
    from mattingkit.data.layouts import scan_competition

    rows = scan_competition(work / "data" / "ecom")
    assert rows["id"].tolist() == ["0001"]


def test_e2e_no_credential_anywhere(fake_kaggle_run):
    run = fake_kaggle_run
    assert_no_secret(run["stdout"], "stdout")
    assert_no_secret(run["stderr"], "stderr (DEBUG logs of every logger)")
    for name, res in run["results"].items():
        assert_no_secret(json.dumps(res), f"scenario {name}")
    creds = {run["home"] / ".kaggle" / "kaggle.json", run["home"] / ".kaggle" / "access_token"}
    assert_no_secret(all_files_text(run["work"], creds), "files written")


def test_e2e_submit_success_prints_public_score(fake_kaggle_run):
    r = fake_kaggle_run["results"]
    ok = r["submit_ok"]
    assert ok["ok"] and ok["status"] == "complete" and ok["score"] == "0.04321" and ok["ref"] == 777, ok
    assert ok["uploaded"] == "filename,image_utf\n0001,abc\n" and ok["description"] == "resnet18 demo"
    assert "scored 0.04321" in ok["printed"] and "Successfully submitted" in ok["printed"]
    paths = [p.rsplit("/", 1)[-1] for p in ok["requests"]]
    assert paths[-4:] == ["StartSubmissionUpload", "blob-1", "CreateSubmission", "ListSubmissions"]
    pend = r["submit_pending_then_complete"]
    assert pend["ok"] and pend["status"] == "complete" and pend["score"] == "0.04321"
    assert [p.rsplit("/", 1)[-1] for p in pend["requests"]].count("ListSubmissions") == 3
    assert "waiting for the score" in pend["printed"]
    still = r["submit_still_pending"]
    assert still["ok"] and still["status"] == "pending" and still["score"] is None
    assert "still being scored" in still["text"] and "competitions/ecom-test/submissions" in still["text"]


def test_e2e_submit_errors_are_clear(fake_kaggle_run):
    r = fake_kaggle_run["results"]
    rej = r["submit_rejected_at_upload"]
    assert (rej["ok"], rej["kind"], rej["type"], rej["exit_code"]) == (False, "rejected", "SubmitError", 1)
    assert "Submission must have 2 columns: filename, image_utf (got 3)" in rej["message"]
    err = r["submit_scoring_error"]
    assert err["kind"] == "rejected" and "Submission has 3 rows, expected 4 (0004 is missing)" in err["message"]
    rules = r["submit_rules"]
    assert rules["kind"] == "rules" and "competitions/ecom-test/rules" in rules["message"]
    assert rules["exit_code"] == 3
    off = r["submit_offline"]
    assert off["kind"] == "offline" and "submit" in off["message"] and off["requests"] == []


def test_submit_needs_an_existing_csv_and_credentials(tmp_path: Path, monkeypatch):
    from mattingkit.errors import InputDataError, UsageError

    with pytest.raises(InputDataError, match="not found or empty"):
        kg.submit_to_kaggle(tmp_path / "nope.csv", "comp", "m")
    csv = tmp_path / "s.csv"
    csv.write_text("filename,image_utf\n")
    with pytest.raises(UsageError):
        kg.submit_to_kaggle(csv, "owner/dataset", "m")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for k in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(kg.SubmitError) as ei:
        kg.submit_to_kaggle(csv, "comp", "m")
    assert ei.value.kind == "no_credentials" and ei.value.exit_code == 3
    assert "demo" not in str(ei.value) and "CSV is unchanged" in str(ei.value)   # demo data cannot be submitted


# ------------------------------------------------------------------------------------------
# attached inputs / existing copies: no download
# ------------------------------------------------------------------------------------------
def test_ensure_dataset_uses_attached_input_in_place(tmp_path: Path):
    inputs = tmp_path / "kaggle_input"
    (inputs / "aim-500" / "original").mkdir(parents=True)
    (inputs / "competitions" / "ecom-comp").mkdir(parents=True)
    roots = sorted(p for p in inputs.iterdir())
    assert kg.ensure_dataset("someone/aim-500", tmp_path / "data" / "aim500", roots=roots) == inputs / "aim-500"
    got = kg.ensure_dataset("ecom-comp", tmp_path / "data" / "ecom", competition=True, roots=roots)
    assert got == inputs / "competitions" / "ecom-comp"
    assert not (tmp_path / "data").exists()


def test_ensure_dataset_existing_local_copy(tmp_path: Path, monkeypatch):
    for k in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(k, raising=False)
    dest = tmp_path / "data" / "aim500"
    dest.mkdir(parents=True)
    (dest / "x.png").write_bytes(b"x")
    assert kg.ensure_dataset("o/aim-500", dest, roots=[]) == dest


def test_existing_archive_is_extracted_without_network(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for k in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(k, raising=False)
    downloads = tmp_path / "data" / "downloads"
    downloads.mkdir(parents=True)
    with zipfile.ZipFile(downloads / "comp.zip", "w") as z:
        z.writestr("train_dataset/images/0001.jpg", "x")
    out = kg.download_competition("comp", tmp_path / "data" / "comp", keep_archive=True)
    assert (out / "train_dataset" / "images" / "0001.jpg").exists()
    assert (downloads / "comp.zip").exists()


def test_parse_dataset_spec_and_config(tmp_path: Path):
    assert kg.parse_dataset_spec("a/b") == ("a/b", "b")
    assert kg.parse_dataset_spec("a/b:c") == ("a/b", "c")
    for bad in ("ab", "a/b/c", "/b", "a/"):
        with pytest.raises(ValueError):
            kg.parse_dataset_spec(bad)
    from mattingkit.config import load_config

    cfg = load_config("default", {"data.kaggle_datasets": ["o/aim-500:aim500"], "run.data_root": str(tmp_path)})
    (tmp_path / "aim500").mkdir()
    (tmp_path / "aim500" / "f.txt").write_text("present")
    assert kg.ensure_config_data(cfg) == {"o/aim-500": tmp_path / "aim500"}  # present: no download


# ------------------------------------------------------------------------------------------
# alphamatting.com: a local fake site on 127.0.0.1 serving zips built from ../shared's photos
# ------------------------------------------------------------------------------------------
ALPHAMATTING_DEV = REPO.parent / "shared" / "data" / "alphamatting_dev"


def _alphamatting_sources(tmp: Path, shared: Path = ALPHAMATTING_DEV) -> dict[str, dict[str, bytes]]:
    """``{"image"|"alpha"|"Trimap1"|"Trimap2": {filename: bytes}}`` from ../shared (5 real photos), or
    from the demo generator when ../shared is absent. Trimap2 differs from Trimap1 (a wider band)."""
    import numpy as np

    from mattingkit.io import png_bytes, read_alpha
    from mattingkit.trimap import trimap_band

    out: dict[str, dict[str, bytes]] = {"image": {}, "alpha": {}, "Trimap1": {}, "Trimap2": {}}
    if (shared / "image").is_dir():
        for p in sorted((shared / "image").glob("*.png")):
            out["image"][p.name] = p.read_bytes()
            out["alpha"][p.name] = (shared / "alpha" / p.name).read_bytes()
            out["Trimap1"][p.name] = (shared / "trimap" / p.name).read_bytes()
    else:
        from mattingkit.data.synthetic import make_demo_data

        info = make_demo_data(tmp / "demo", n_aim=5, n_backgrounds=1, n_comp_train=1, n_comp_test=1)
        aim = Path(info["root"]) / "aim500"
        for i, p in enumerate(sorted((aim / "original").glob("*.jpg"))[:5], 1):
            name = f"GT{i:02d}"
            out["image"][f"{name}.jpg"] = p.read_bytes()
            out["alpha"][f"{name}.png"] = (aim / "mask" / f"{p.stem}.png").read_bytes()
            out["Trimap1"][f"{name}.png"] = (aim / "trimap" / f"{p.stem}.png").read_bytes()
    for name, data in out["alpha"].items():
        src = tmp / "alpha_tmp.png"
        src.write_bytes(data)
        out["Trimap2"][name] = png_bytes(np.asarray(trimap_band(read_alpha(src), 25), np.float32))
    return out


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def alphamatting_site(tmp_path_factory):
    """A fake www.alphamatting.com/datasets/zip/ on 127.0.0.1; ``site["zips"]`` may be replaced per test."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    tmp = tmp_path_factory.mktemp("am_src")
    src = _alphamatting_sources(tmp)
    zips = {
        "input_training_lowres.zip": _zip_bytes(src["image"]),
        "gt_training_lowres.zip": _zip_bytes(src["alpha"]),
        "trimap_training_lowres.zip": _zip_bytes({f"{s}/{n}": b for s in ("Trimap1", "Trimap2")
                                                  for n, b in src[s].items()}),
    }
    site = {"zips": dict(zips), "requests": [], "src": src}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            site["requests"].append(self.path)
            name = self.path.rsplit("/", 1)[-1]
            body = site["zips"].get(name) if self.path.startswith("/datasets/zip/") else None
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/zip" if body is not None else "text/html")
            body = body if body is not None else b"<html>not here</html>"
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site["url"] = f"http://127.0.0.1:{server.server_port}/datasets/zip/"
    site["original"] = zips
    yield site
    server.shutdown()
    server.server_close()


@pytest.fixture
def am_site(alphamatting_site, monkeypatch):
    alphamatting_site["zips"] = dict(alphamatting_site["original"])
    alphamatting_site["requests"].clear()
    for k in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return alphamatting_site


def test_alphamatting_download_scans_and_is_idempotent(am_site, tmp_path: Path):
    from mattingkit.data.layouts import scan_alphamatting

    dest = tmp_path / "data" / "alphamatting"
    out = dl.download_alphamatting(dest, base_url=am_site["url"])
    assert out == dest
    assert sorted(am_site["requests"]) == sorted(f"/datasets/zip/{n}" for n in dl.ALPHAMATTING_ZIPS.values())
    rows = scan_alphamatting(dest)
    assert len(rows) == 5 and rows["id"].tolist() == [f"GT{i:02d}" for i in range(1, 6)]
    assert all(rows["trimap"].map(lambda p: Path(p).parent.name == "trimap"))
    first = Path(rows["trimap"][0])
    assert first.read_bytes() == am_site["src"]["Trimap1"][first.name]  # Trimap1 is the default
    assert json.loads((dest / "alphamatting.json").read_text())["trimap_set"] == "Trimap1"
    downloads = tmp_path / "data" / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []  # zips + partial folders gone
    # second call: no network at all, same folder
    am_site["requests"].clear()
    assert dl.download_alphamatting(dest, base_url=am_site["url"]) == dest
    assert am_site["requests"] == []
    # switching the trimap set re-arranges from the kept sets, still without network
    dl.download_alphamatting(dest, base_url=am_site["url"], trimap_set="trimap2")
    assert am_site["requests"] == []
    assert first.read_bytes() == am_site["src"]["Trimap2"][first.name]


def test_alphamatting_trimap2_via_env_url(am_site, tmp_path: Path, monkeypatch):
    from mattingkit.config import load_config
    from mattingkit.data.layouts import scan_alphamatting

    monkeypatch.setenv(dl.ALPHAMATTING_URL_ENV, am_site["url"])
    cfg = load_config("default", {"data.trimap_set": "Trimap2"})
    dest = dl.download_alphamatting(tmp_path / "am", trimap_set=cfg.data.trimap_set, keep_archives=True)
    rows = scan_alphamatting(dest)
    assert len(rows) == 5
    for tri in rows["trimap"]:
        assert Path(tri).read_bytes() == am_site["src"]["Trimap2"][Path(tri).name]
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == sorted(dl.ALPHAMATTING_ZIPS.values())
    with pytest.raises(ValueError, match="Trimap1, Trimap2"):
        dl.download_alphamatting(tmp_path / "x", trimap_set="Trimap3")


def test_alphamatting_offline_is_clear_and_immediate(tmp_path: Path, monkeypatch):
    import time

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    url = f"http://127.0.0.1:{closed_port()}/datasets/zip/"
    t0 = time.monotonic()
    with pytest.raises(dl.DownloadError) as ei:
        dl.download_alphamatting(tmp_path / "data" / "am", base_url=url)
    assert time.monotonic() - t0 < 10
    err = ei.value
    assert err.kind == "offline" and err.exit_code == 3
    assert "no network connection" in str(err) and "input_training_lowres.zip" in str(err)
    assert dl.ALPHAMATTING_URL_ENV in str(err) and "mattingkit demo-data" in str(err)
    assert not (tmp_path / "data" / "am").exists()
    downloads = tmp_path / "data" / "downloads"
    assert f"by hand into {downloads} " in str(err)                     # the folder, by its path
    assert not downloads.exists() or list(downloads.iterdir()) == []  # no partial file left


def test_alphamatting_zip_slip_rejected_and_404(am_site, tmp_path: Path):
    am_site["zips"]["gt_training_lowres.zip"] = _zip_bytes({"../../evil.png": b"x", "GT01.png": b"y"})
    dest = tmp_path / "data" / "am"
    with pytest.raises(dl.DownloadError) as ei:
        dl.download_alphamatting(dest, base_url=am_site["url"])
    assert ei.value.kind == "bad_archive" and "evil.png" in str(ei.value)
    assert not dest.exists() and not list(tmp_path.rglob("evil.png"))
    assert not (tmp_path / "data" / "downloads" / "gt_training_lowres.zip").exists()  # deleted
    del am_site["zips"]["gt_training_lowres.zip"]
    with pytest.raises(dl.DownloadError) as ei:
        dl.download_alphamatting(dest, base_url=am_site["url"])
    assert ei.value.kind == "not_found" and "HTTP 404" in str(ei.value)


# ------------------------------------------------------------------------------------------
# The fake Kaggle (run in a fresh interpreter: python tests/test_download.py --fake-kaggle WORKDIR)
# ------------------------------------------------------------------------------------------
def run_fake_kaggle(work: str) -> None:
    """Start a fake Kaggle API on 127.0.0.1 and drive the real kaggle client through mattingkit's code.

    The kaggle package fixes its endpoint (KAGGLE_API_ENVIRONMENT=LOCALHOST -> http://localhost) and
    config folder at import time, so this runs in a fresh interpreter. Requests reach the server as
    an HTTP proxy (HTTP_PROXY), which is how ``requests`` routes plain-http URLs; no kaggle code is
    patched or mocked. Prints one ``RESULTS {json}`` line with every scenario's outcome.
    """
    import contextlib
    import io
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kaggle_fake_server import USER, FakeKaggle

    WORK = Path(work)
    HOME = Path(os.environ["HOME"])
    os.environ["KAGGLE_API_ENVIRONMENT"] = "LOCALHOST"
    for k in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(k, None)

    # Fake credentials, one per supported form (none of them is real).
    SECRETS = json.loads(os.environ["FAKE_SECRETS"])

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, force=True)

    def make_zip() -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("train_dataset/images/0001.jpg", b"\xff\xd8fakejpeg\xff\xd9")
            z.writestr("train_dataset/masks/0001.png", b"fakepng")
            z.writestr("sample_submission.csv", "filename,image_utf\n0001,\n")
        return buf.getvalue()

    fake = FakeKaggle(tokens=(SECRETS["token_env"], SECRETS["token_file"]),
                      keys=(SECRETS["key_env"], SECRETS["key_json"]))
    fake.files = {"ecom-test.zip": make_zip(), "aim-demo.zip": make_zip()}
    fake.__enter__()
    PROXY = fake.proxy

    def set_creds(form: str | None) -> None:
        for k in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
            os.environ.pop(k, None)
        shutil.rmtree(HOME / ".kaggle", ignore_errors=True)
        (HOME / ".kaggle").mkdir()
        if form == "token_env":
            os.environ["KAGGLE_API_TOKEN"] = SECRETS["token_env"]
        elif form == "token_file":
            (HOME / ".kaggle" / "access_token").write_text(SECRETS["token_file"])
        elif form == "key_env":
            os.environ["KAGGLE_USERNAME"] = USER
            os.environ["KAGGLE_KEY"] = SECRETS["key_env"]
        elif form == "key_json":
            (HOME / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": USER, "key": SECRETS["key_json"]}))

    SCENARIOS = [
        # name, credential form, server mode, proxy, call
        ("no_credentials", None, "", PROXY, "competition"),
        ("rules_403", "key_env", "rules_403", PROXY, "competition"),
        ("token_401", "token_env", "token_401", PROXY, "competition"),
        ("kaggle_json_401", "key_json", "key_401", PROXY, "competition"),
        ("offline", "key_env", "", f"http://127.0.0.1:{closed_port()}", "competition"),
        ("success_competition", "token_file", "", PROXY, "competition"),
        ("success_again", "token_file", "", PROXY, "competition"),
        ("success_dataset", "key_json", "", PROXY, "dataset"),
        ("submit_ok", "token_env", "", PROXY, "submit"),
        ("submit_pending_then_complete", "key_json", "pending2", PROXY, "submit"),
        ("submit_rejected_at_upload", "key_env", "reject_400", PROXY, "submit"),
        ("submit_scoring_error", "token_file", "score_error", PROXY, "submit"),
        ("submit_rules", "key_env", "rules_403", PROXY, "submit"),
        ("submit_still_pending", "token_env", "pending_forever", PROXY, "submit"),
        ("submit_offline", "key_json", "", f"http://127.0.0.1:{closed_port()}", "submit"),
    ]
    csv_path = WORK / "submission.csv"
    csv_path.write_text("filename,image_utf\n0001,abc\n")
    results = {}
    for name, form, mode, proxy, call in SCENARIOS:
        set_creds(form)
        os.environ["HTTP_PROXY"] = os.environ["http_proxy"] = proxy
        fake.reset(mode)
        out = {"source": kg.find_credentials().source}
        printed = io.StringIO()
        try:
            if call == "competition":
                path = kg.download_competition("ecom-test", WORK / "data" / "ecom", quiet=False)
            elif call == "submit":
                timeout = 0.3 if mode == "pending_forever" else 30
                with contextlib.redirect_stdout(printed):
                    res = kg.submit_to_kaggle(csv_path, "ecom-test", "resnet18 demo", timeout_s=timeout,
                                              interval_s=0.05)
                out.update(ok=True, status=res.status, score=res.public_score, ref=res.ref, text=str(res),
                           uploaded=(fake.submissions[-1]["data"] if fake.submissions else b"").decode(),
                           description=fake.submissions[-1]["description"] if fake.submissions else None)
            else:
                path = kg.download_dataset("owner/aim-demo", WORK / "data" / "aim", quiet=False)
            if call != "submit":
                out.update(ok=True, path=str(path),
                           files=sorted(str(p.relative_to(path)) for p in path.rglob("*")))
        except dl.DownloadError as e:
            out.update(ok=False, kind=e.kind, message=str(e), exit_code=e.exit_code,
                       type=type(e).__name__)
        out["printed"] = printed.getvalue()
        out["requests"] = [r["path"] for r in fake.requests]
        results[name] = out
        print(f"scenario {name}: {json.dumps(out)}", file=sys.stderr)

    print("RESULTS " + json.dumps(results))
    fake.__exit__(None, None, None)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--fake-kaggle":
    run_fake_kaggle(sys.argv[2])
