"""The fake Kaggle API on 127.0.0.1: the download, submission, kernel and dataset calls the installed ``kaggle``
client makes (tests/test_download.py, tests/test_kaggle_kernels.py, tests/reliability/test_rel_secrets.py).

The kaggle 2.x client (kagglesdk) posts JSON to ``http://localhost/api/v1/<service>/<Method>`` when
``KAGGLE_API_ENVIRONMENT=LOCALHOST``; ``requests`` routes those plain-http URLs through ``HTTP_PROXY``,
which points here, so no kaggle code is patched. Output files, blob uploads and the kernel page are
plain ``http://localhost/...`` URLs the client GETs / PUTs the same way.

What the client really sends (recorded from kaggle 2.2.4 / kagglesdk 0.1.37 in :attr:`FakeKaggle.requests`;
empty fields are left out of the JSON; tests/test_kaggle_kernels.py asserts these shapes):

- ``POST /api/v1/security.OAuthService/IntrospectToken`` ``{token}`` (access-token credentials only; legacy
  keys go as HTTP Basic auth on every call instead)
- ``POST /api/v1/kernels.KernelsApiService/SaveKernel`` ``{slug, newTitle, text, language, kernelType,
  isPrivate, enableGpu, enableTpu, enableInternet, datasetDataSources, competitionDataSources, machineShape}``
  -> ``{ref, url, versionNumber, error, invalidDatasetSources, ...}``
- ``POST /api/v1/kernels.KernelsApiService/GetKernelSessionStatus`` ``{userName, kernelSlug}`` ->
  ``{status: QUEUED|RUNNING|COMPLETE|ERROR|..., failureMessage}``
- ``POST /api/v1/kernels.KernelsApiService/ListKernelSessionOutput`` ``{userName, kernelSlug, pageSize}``
  -> ``{files: [{fileName, url}], log, nextPageToken}``; each ``url`` is then fetched with a plain GET
- ``POST /api/v1/datasets.DatasetApiService/GetDatasetStatus`` ``{ownerSlug, datasetSlug}`` (404: absent)
- ``POST /api/v1/blobs.BlobApiService/StartBlobUpload`` ``{type: DATASET, name, contentLength,
  lastModifiedEpochSeconds}`` -> ``{token, createUrl}``; then ``PUT createUrl`` with the file's bytes
- ``POST /api/v1/datasets.DatasetApiService/CreateDataset`` ``{ownerSlug, slug, title, licenseName, isPrivate,
  files: [{token}]}`` or ``.../CreateDatasetVersion`` ``{ownerSlug, datasetSlug, body: {versionNotes, files:
  [{token}]}}`` -> ``{ref, url, status, error}``
- downloads: ``competitions.CompetitionApiService/DownloadDataFiles {competitionName}`` and
  ``datasets.DatasetApiService/DownloadDataset {ownerSlug, datasetSlug}`` -> 302 to ``/files/<name>.zip`` (GET)
- submissions (``competitions.CompetitionApiService``): ``StartSubmissionUpload {fileName, contentLength, ...}``
  -> ``{token, createUrl}``, ``PUT createUrl``, ``CreateSubmission {competitionName, blobFileTokens,
  submissionDescription}`` -> ``{message, ref}``, ``ListSubmissions {competitionName, ...}`` -> ``{submissions}``

Use::

    with FakeKaggle() as fk:
        env = fk.client_env(home, token="...")      # for a subprocess running the kaggle client
        fk.kernel_plan("tester/mk-demo", ["RUNNING", "COMPLETE"], outputs={"runs/demo/metrics.json": b"{}"})
"""
from __future__ import annotations

import base64
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

USER = "tester"


def closed_port() -> int:
    """A loopback port nothing listens on: a proxy ``http://127.0.0.1:<port>`` there is Kaggle offline (a real
    refused connection, nothing patched)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@dataclass
class KernelPlan:
    """How the fake runs one kernel: the statuses successive status calls return (the last one
    repeats), the files its output lists, its log, and an optional failure message."""

    statuses: list[str] = field(default_factory=lambda: ["RUNNING", "COMPLETE"])
    outputs: dict[str, bytes] = field(default_factory=dict)
    log: str = ""
    failure: str = ""
    calls: int = 0


class FakeKaggle:
    """The fake server: ``requests`` (every request: method, path, JSON body), ``kernels`` (slug ->
    pushed request bodies, one per version), ``datasets`` (ref -> versions: file name -> bytes)."""

    def __init__(self, tokens: tuple[str, ...] = (), keys: tuple[str, ...] = ()):
        self.tokens, self.keys = set(tokens), set(keys)
        self.requests: list[dict] = []
        self.kernels: dict[str, list[dict]] = {}
        self.plans: dict[str, KernelPlan] = {}
        self.datasets: dict[str, list[dict[str, bytes]]] = {}
        self.blobs: dict[str, dict] = {}
        self.submissions: list[dict] = []
        #: how the fake answers: "" (normally); kernels: "quota", "owner_403"; downloads: "token_401",
        #: "key_401", "rules_403" (also submissions); submissions: "reject_400", "pending2", "pending_forever",
        #: "score_error"
        self.mode = ""
        self.files: dict[str, bytes] = {}   # name -> bytes: what /files/NAME serves (download redirects)
        self.others: set[str] = set()   # kernel slugs that exist under another owner
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # -- set-up ---------------------------------------------------------------------------
    def kernel_plan(self, ref: str, statuses: list[str], outputs: dict[str, bytes] | None = None,
                    log: str = "", failure: str = "") -> KernelPlan:
        plan = KernelPlan(list(statuses), dict(outputs or {}), log, failure)
        self.plans[ref] = plan
        return plan

    def __enter__(self) -> "FakeKaggle":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes | dict = b"", ctype: str = "application/json", headers=None):
                if isinstance(body, dict):
                    body = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                with fake._lock:
                    fake.requests.append({"method": "POST", "path": urlsplit(self.path).path, "body": body,
                                          "auth": self.headers.get("Authorization", "").split(" ")[0]})
                code, reply, *headers = fake._api(urlsplit(self.path).path.rsplit("/", 1)[-1], body,
                                                  self.headers.get("Authorization", ""))
                self._send(code, reply, headers=headers[0] if headers else None)

            def do_PUT(self):
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urlsplit(self.path).path
                with fake._lock:
                    fake.requests.append({"method": "PUT", "path": path, "bytes": len(data)})
                    token = path.rsplit("/", 1)[-1]
                    if token in fake.blobs:
                        fake.blobs[token]["data"] = data
                        return self._send(200, {})
                self._send(404, {})

            def do_GET(self):
                path = unquote(urlsplit(self.path).path)
                with fake._lock:
                    fake.requests.append({"method": "GET", "path": path})
                if path.startswith("/files/") and path[len("/files/"):] in fake.files:
                    return self._send(200, fake.files[path[len("/files/"):]], "application/zip")
                if path.startswith("/kernel-output/"):
                    ref, _, name = path[len("/kernel-output/"):].partition("/-/")
                    plan = fake.plans.get(ref)
                    if plan is not None and name in plan.outputs:
                        return self._send(200, plan.outputs[name], "application/octet-stream")
                self._send(404, b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def client_env(self, base: dict, home: str, *, token: str | None = None, key: str | None = None) -> dict:
        """``base`` without Kaggle variables or proxies, plus what points the kaggle client here."""
        env = {k: v for k, v in base.items() if not k.startswith("KAGGLE_")
               and k.lower() not in ("no_proxy", "https_proxy", "all_proxy", "http_proxy")}
        env.update(HOME=home, KAGGLE_API_ENVIRONMENT="LOCALHOST", HTTP_PROXY=self.proxy, TMPDIR=home)
        if token:
            env["KAGGLE_API_TOKEN"] = token
        if key:
            env.update(KAGGLE_USERNAME=USER, KAGGLE_KEY=key)
        return env

    def calls(self, method: str | None = None) -> list[str]:
        """The API method names called, in order (``PUT``/``GET`` for plain transfers)."""
        out = [r["path"].rsplit("/", 1)[-1] if r["method"] == "POST" else r["method"] for r in self.requests]
        return [c for c in out if method is None or c == method]

    def bodies(self, method: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["method"] == "POST" and r["path"].endswith("/" + method)]

    # -- the API --------------------------------------------------------------------------
    def _authorised(self, auth: str) -> bool:
        if auth.startswith("Bearer "):
            return auth[7:] in self.tokens
        if auth.startswith("Basic "):
            user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
            return user == USER and key in self.keys
        return False

    def _api(self, method: str, body: dict, auth: str) -> tuple:
        if method == "IntrospectToken":
            if body.get("token") in self.tokens and self.mode != "token_401":
                return 200, {"active": True, "username": USER}
            return 401, {"code": 401, "message": "Unauthenticated"}
        if not self._authorised(auth):
            return 401, {"code": 401, "message": "Unauthenticated"}
        handler = getattr(self, f"_{method}", None)
        if handler is None:
            return 404, {"code": 404, "message": f"fake Kaggle: no {method}"}
        with self._lock:
            return handler(body)

    def _SaveKernel(self, body: dict) -> tuple[int, dict]:
        slug = body.get("slug") or ""
        owner, _, name = slug.partition("/")
        if self.mode == "owner_403" or owner != USER or name in self.others:
            return 403, {"code": 403, "message": "Permission 'kernels.update' was denied"}
        if self.mode == "quota":
            return 200, {"error": "You have exceeded your weekly GPU quota (30 hours). It resets on Saturday."}
        versions = self.kernels.setdefault(slug, [])
        versions.append(body)
        plan = self.plans.get(slug)
        if plan is not None:
            plan.calls = 0      # a new version runs the plan again
        return 200, {"ref": f"/code/{slug}", "url": f"https://www.kaggle.com/code/{slug}",
                     "versionNumber": len(versions)}

    def _plan(self, body: dict) -> tuple[str, KernelPlan | None]:
        ref = f"{body.get('userName')}/{body.get('kernelSlug')}"
        return ref, (self.plans.get(ref) if ref in self.kernels else None)

    def _GetKernelSessionStatus(self, body: dict) -> tuple[int, dict]:
        ref, plan = self._plan(body)
        if plan is None:
            return 404, {"code": 404, "message": f"Notebook {ref} not found"}
        status = plan.statuses[min(plan.calls, len(plan.statuses) - 1)]
        plan.calls += 1
        return 200, {"status": status, "failureMessage": plan.failure if status == "ERROR" else ""}

    def _ListKernelSessionOutput(self, body: dict) -> tuple[int, dict]:
        ref, plan = self._plan(body)
        if plan is None:
            return 404, {"code": 404, "message": f"Notebook {ref} not found"}
        files = [{"fileName": name, "url": f"http://localhost/kernel-output/{ref}/-/{quote(name)}"}
                 for name in sorted(plan.outputs)]
        return 200, {"files": files, "log": plan.log}

    def _GetDatasetStatus(self, body: dict) -> tuple[int, dict]:
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        if ref not in self.datasets:
            return 404, {"code": 404, "message": f"Dataset {ref} not found"}
        return 200, {"status": "ready"}

    def _StartBlobUpload(self, body: dict) -> tuple[int, dict]:
        token = f"blob-{len(self.blobs) + 1}"
        self.blobs[token] = {"name": body.get("name"), "length": body.get("contentLength"), "data": None}
        return 200, {"token": token, "createUrl": f"http://localhost/upload/{token}"}

    def _files(self, files: list[dict]) -> dict[str, bytes] | None:
        out = {}
        for f in files or []:
            blob = self.blobs.get(f.get("token"))
            if blob is None or blob["data"] is None:
                return None
            out[blob["name"]] = blob["data"]
        return out

    def _CreateDataset(self, body: dict) -> tuple[int, dict]:
        ref = f"{body.get('ownerSlug')}/{body.get('slug')}"
        files = self._files(body.get("files"))
        if files is None:
            return 400, {"code": 400, "message": "unknown or incomplete blob token"}
        self.datasets[ref] = [files]
        return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok"}

    def _CreateDatasetVersion(self, body: dict) -> tuple[int, dict]:
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        files = self._files((body.get("body") or {}).get("files"))
        if ref not in self.datasets or files is None:
            return 400, {"code": 400, "message": "no such dataset or incomplete upload"}
        self.datasets[ref].append(files)
        return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok"}

    # -- downloads: DownloadDataFiles / DownloadDataset redirect to /files/<name>.zip ----------------
    def _download(self, name: str) -> tuple:
        if self.mode == "key_401":
            return 401, {"code": 401, "message": "Unauthenticated"}
        if self.mode == "rules_403":
            return 403, {"code": 403, "message": "You must accept this competition's rules before you'll be able "
                                                 "to download files."}
        return 302, {}, {"Location": f"http://localhost/files/{name}"}

    def _DownloadDataFiles(self, body: dict) -> tuple:
        return self._download(f"{body.get('competitionName')}.zip")

    def _DownloadDataset(self, body: dict) -> tuple:
        return self._download(f"{body.get('datasetSlug')}.zip")

    # -- submissions: StartSubmissionUpload -> {token, createUrl}; PUT; CreateSubmission
    # {competitionName, blobFileTokens, submissionDescription} -> {message, ref}; ListSubmissions
    # {competitionName, ...} -> {submissions: [newest first]}, an older unrelated one always listed too
    reject_message = "Submission must have 2 columns: filename, image_utf (got 3)"

    def _submission_refused(self) -> tuple | None:
        if self.mode == "rules_403":
            return 403, {"code": 403, "message": "You must accept this competition's rules before you can submit."}
        return None

    def _StartSubmissionUpload(self, body: dict) -> tuple:
        token = f"blob-{len(self.blobs) + 1}"
        self.blobs[token] = {"name": body.get("fileName"), "length": body.get("contentLength"), "data": None}
        return self._submission_refused() or (200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})

    def _CreateSubmission(self, body: dict) -> tuple:
        refused = self._submission_refused()
        if refused:
            return refused
        if self.mode == "reject_400":
            return 400, {"code": 400, "message": self.reject_message}
        blob = self.blobs.get(body.get("blobFileTokens"))
        if blob is None or blob["data"] is None:
            return 400, {"code": 400, "message": "unknown blob token"}
        self.submissions.append({"file_name": blob["name"], "data": blob["data"], "length": blob["length"],
                                 "description": body.get("submissionDescription", ""), "polls": 0,
                                 "ref": 776 + len(self.submissions) + 1})
        return 200, {"message": "Successfully submitted to Ecom Test", "ref": self.submissions[-1]["ref"]}

    def _ListSubmissions(self, body: dict) -> tuple:
        refused = self._submission_refused()
        if refused:
            return refused
        listed = []
        for s in self.submissions[::-1]:
            s["polls"] += 1
            status, score, err = "COMPLETE", "0.04321", ""
            if self.mode == "pending2" and s["polls"] <= 2 or self.mode == "pending_forever":
                status, score = "PENDING", ""
            elif self.mode == "score_error":
                status, score, err = "ERROR", "", "Submission has 3 rows, expected 4 (0004 is missing)"
            listed.append({"ref": s["ref"], "fileName": s["file_name"], "description": s["description"],
                           "status": status, "publicScore": score, "privateScore": "", "errorDescription": err,
                           "submittedBy": USER, "totalBytes": s["length"] or 0})
        old = {"ref": 5, "fileName": listed[0]["fileName"] if listed else "x.csv", "description": "older",
               "status": "COMPLETE", "publicScore": "0.9", "privateScore": "", "submittedBy": USER, "totalBytes": 1}
        return 200, {"submissions": listed + [old]}

    def reset(self, mode: str = "") -> None:
        """A new scenario: no requests, blobs or submissions recorded; the given mode."""
        with self._lock:
            self.mode = mode
            self.requests.clear()
            self.blobs.clear()
            self.submissions.clear()
