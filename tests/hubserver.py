"""A local HTTP server that speaks the part of the Hugging Face Hub protocol adaptr uses.

The real ``huggingface_hub`` client talks to it through ``HF_ENDPOINT`` (with
``HF_HUB_DISABLE_XET=1``): repo creation and info, preupload, the LFS batch API with basic
transfer and verify, NDJSON commits (``parentCommit`` checked), branches, tags, refs, tree
listings, and ``resolve`` downloads with the headers the client requires. LFS downloads redirect to
a "CDN" origin (``localhost`` instead of ``127.0.0.1``), so the client must drop its token there as
it does against the real Hub.

Repos live in memory and are mirrored to ``root`` (``repos/*.json`` plus ``objects/<sha256>``),
so tests can grep what was stored. A request to a route the server does not know is answered
404 and recorded in ``unknown_routes``; the test fixture fails the test when that list is not
empty. ``token`` (when set) is the only bearer token accepted: a wrong one gets 401, a missing one
gets 401 on writes and on private repos.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = ("*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                 "*.bin filter=lfs diff=lfs merge=lfs -text\n")
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt", ".h5", ".msgpack", ".onnx",
                ".gguf", ".model", ".zip", ".gz", ".tar")
LFS_THRESHOLD = 10 * 1024 * 1024
_REPO = r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubHTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    commits: dict = field(default_factory=dict)   # sha -> {"parent", "message", "files": {path: blob}}
    branches: dict = field(default_factory=dict)  # name -> sha
    tags: dict = field(default_factory=dict)      # name -> sha

    def resolve(self, revision: str) -> str:
        revision = unquote(revision)
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        matches = [sha for sha in self.commits if sha.startswith(revision)] if len(revision) >= 7 else []
        if len(matches) == 1:
            return matches[0]
        raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubServer:
    """Start with :meth:`start`; ``url`` is the endpoint, ``cdn_url`` the LFS download origin."""

    def __init__(self, root: Path, *, token: str | None = None, sock: socket.socket | None = None):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.unknown_routes: list[str] = []
        self.cdn_auth_headers: list[str] = []  # requests to the CDN that carried a token (must stay empty)
        self.before_commit = None  # called once with the repo when the next commit arrives (tests)
        self.lock = threading.RLock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler, bind_and_activate=sock is None)
        if sock is not None:
            self._httpd.socket.close()
            self._httpd.socket = sock
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self.port = self._httpd.server_address[1] if sock is None else sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cdn_url = f"http://localhost:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self, token: str | None = None) -> None:
        """Forget every repo and request (between tests that share one server)."""
        with self.lock:
            self.token = token
            for sub in ("objects", "repos"):
                shutil.rmtree(self.root / sub, ignore_errors=True)
                (self.root / sub).mkdir(parents=True)
            self.repos.clear()
            self.before_commit = None
            self.requests.clear()
            self.unknown_routes.clear()
            self.cdn_auth_headers.clear()

    def count(self, method: str, pattern: str) -> int:
        """How many logged requests match ``method`` and the ``pattern`` regex on the path."""
        return sum(1 for m, path, _ in self.requests if m == method and re.search(pattern, path))

    # -- storage --------------------------------------------------------------------------

    def _object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256

    def _save(self, repo: Repo) -> None:
        path = self.root / "repos" / (repo.repo_id.replace("/", "--") + ".json")
        state = {"repo_id": repo.repo_id, "private": repo.private, "commits": repo.commits,
                 "branches": repo.branches, "tags": repo.tags}
        path.write_text(json.dumps(state, indent=1))

    def repo(self, repo_id: str, *, authorized: bool = True) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubHTTPError(404, "Repository not found", "RepoNotFound")
        return repo

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        with self.lock:
            if repo_id in self.repos:
                raise HubHTTPError(409, "You already created this model repo")
            repo = Repo(repo_id, private=private)
            self.repos[repo_id] = repo
            data = GITATTRIBUTES.encode()
            blob = self._store_blob(".gitattributes", data, lfs=False)
            self._commit(repo, "main", {".gitattributes": blob}, "initial commit", parent=None)
            return repo

    def _store_blob(self, path: str, data: bytes, *, lfs: bool) -> dict:
        sha256 = hashlib.sha256(data).hexdigest()
        self._object_path(sha256).write_bytes(data)
        return self._blob_entry(sha256, len(data), lfs=lfs, data=data)

    def _blob_entry(self, sha256: str, size: int, *, lfs: bool, data: bytes | None = None) -> dict:
        oid = git_blob_sha1(lfs_pointer(sha256, size) if lfs else data)
        return {"sha256": sha256, "size": size, "lfs": lfs, "oid": oid}

    def _commit(self, repo: Repo, branch: str, files: dict, message: str, parent: str | None) -> str:
        body = json.dumps([parent, files, message, time.time_ns()], sort_keys=True).encode()
        sha = hashlib.sha1(body).hexdigest()
        repo.commits[sha] = {"parent": parent, "message": message, "files": files}
        repo.branches[branch] = sha
        self._save(repo)
        return sha

    def commit_files(self, repo_id: str, files: dict[str, bytes], message: str = "edit") -> str:
        """Commit ``files`` to ``main`` directly, as another client would (for tests)."""
        with self.lock:
            repo = self.repo(repo_id)
            tree = dict(repo.commits[repo.branches["main"]]["files"])
            for path, data in files.items():
                tree[path] = self._store_blob(path, data, lfs=path.endswith(LFS_SUFFIXES))
            return self._commit(repo, "main", tree, message, parent=repo.branches["main"])

    def read_file(self, repo_id: str, revision: str, path: str) -> bytes:
        """A file's bytes at a revision (for test assertions)."""
        repo = self.repo(repo_id)
        blob = repo.commits[repo.resolve(revision)]["files"][path]
        return self._object_path(blob["sha256"]).read_bytes()

    # -- API handlers -----------------------------------------------------------------------

    def commit_ndjson(self, repo: Repo, revision: str, body: bytes) -> dict:
        if self.before_commit is not None:
            hook, self.before_commit = self.before_commit, None
            hook(repo)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        branch = unquote(revision)
        if branch not in repo.branches:
            raise HubHTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        head = repo.branches[branch]
        parent = header.get("parentCommit")
        if parent and not head.startswith(parent):
            raise HubHTTPError(412, f"A commit has happened since. Please refresh and try again. "
                                    f"(expected parent {parent}, head is {head})")
        files = dict(repo.commits[head]["files"])
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                files[value["path"]] = self._store_blob(value["path"], data, lfs=False)
            elif key == "lfsFile":
                obj = self._object_path(value["oid"])
                if not obj.exists():
                    raise HubHTTPError(400, f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = self._blob_entry(value["oid"], obj.stat().st_size, lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubHTTPError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
            elif key != "header":
                raise HubHTTPError(400, f"unknown commit operation {key!r}")
        sha = self._commit(repo, branch, files, header.get("summary", ""), parent=head)
        return {"commitUrl": f"{self.url}/{repo.repo_id}/commit/{sha}", "commitOid": sha,
                "pullRequestUrl": None, "success": True}

    def model_info(self, repo: Repo, revision: str, blobs: bool) -> dict:
        sha = repo.resolve(revision)
        siblings = []
        for path, blob in sorted(repo.commits[sha]["files"].items()):
            entry = {"rfilename": path}
            if blobs:
                entry.update(size=blob["size"], blobId=blob["oid"])
                if blob["lfs"]:
                    entry["lfs"] = {"sha256": blob["sha256"], "size": blob["size"],
                                    "pointerSize": len(lfs_pointer(blob["sha256"], blob["size"]))}
            siblings.append(entry)
        owner = repo.repo_id.split("/")[0]
        return {"_id": sha[:24], "id": repo.repo_id, "modelId": repo.repo_id, "author": owner, "sha": sha,
                "private": repo.private, "disabled": False, "gated": False, "tags": [],
                "lastModified": "2026-01-01T00:00:00.000Z", "siblings": siblings}

    def tree(self, repo: Repo, revision: str, path: str, recursive: bool) -> list[dict]:
        files = repo.commits[repo.resolve(revision)]["files"]
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries, folders = [], set()
        for name, blob in sorted(files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if len(parts) > 1 and not recursive:
                continue
            entry = {"type": "file", "oid": blob["oid"], "size": blob["size"], "path": name}
            if blob["lfs"]:
                entry["lfs"] = {"oid": blob["sha256"], "size": blob["size"],
                                "pointerSize": len(lfs_pointer(blob["sha256"], blob["size"]))}
            entries.append(entry)
        if prefix and not entries and not folders:
            raise HubHTTPError(404, f"{path} does not exist", "EntryNotFound")
        dirs = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                for f in sorted(folders)]
        return dirs + entries

    def refs(self, repo: Repo) -> dict:
        def ref(kind, name, sha):
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}
        return {"branches": [ref("heads", n, s) for n, s in sorted(repo.branches.items())],
                "converts": [], "tags": [ref("tags", n, s) for n, s in sorted(repo.tags.items())],
                "pullRequests": []}

    def create_tag(self, repo: Repo, revision: str, tag: str) -> None:
        sha = repo.resolve(revision)
        if tag in repo.tags or tag in repo.branches:
            raise HubHTTPError(409, f"Tag {tag} already exists")
        repo.tags[tag] = sha
        self._save(repo)

    def upload_mode(self, repo: Repo, revision: str, item: dict) -> dict:
        sample = base64.b64decode(item.get("sample", ""))
        lfs = (item["path"].endswith(LFS_SUFFIXES) or item["size"] >= LFS_THRESHOLD or b"\0" in sample)
        branch = unquote(revision)
        existing = None
        if branch in repo.branches:
            existing = repo.commits[repo.branches[branch]]["files"].get(item["path"])
        oid = None
        if existing is not None:
            oid = existing["sha256"] if existing["lfs"] else existing["oid"]
        return {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                "oid": oid}

    def lfs_batch(self, repo_id: str, payload: dict) -> dict:
        objects = []
        for obj in payload.get("objects", []):
            out = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            stored = self._object_path(obj["oid"])
            if not (stored.exists() and stored.stat().st_size == obj["size"]):
                out["actions"] = {
                    "upload": {"href": f"{self.cdn_url}/lfs-upload/{repo_id}/{obj['oid']}"},
                    "verify": {"href": f"{self.url}/{repo_id}.git/info/lfs/objects/verify"},
                }
            objects.append(out)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubserver/1"

    def log_message(self, *args) -> None:  # keep pytest output quiet
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing ----------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        with self.hub.lock:
            self.hub.requests.append((self.command, urlsplit(self.path).path, status))

    def _json(self, status: int, value, headers: dict | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def _auth(self) -> bool | None:
        """True for the configured token, None for no token, raises 401 for a wrong one."""
        header = self.headers.get("Authorization")
        if header is None:
            return None if self.hub.token else True
        given = header.removeprefix("Bearer ").strip()
        if self.hub.token and given != self.hub.token:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return True

    def _need_write(self) -> None:
        if not self._auth():
            raise HubHTTPError(401, "You must be authenticated to do this")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        body = self._body() if method in ("POST", "PUT") else b""
        try:
            for route_method, pattern, handler in _ROUTES:
                match = re.fullmatch(pattern, path)
                if match and route_method == method:
                    with self.hub.lock:
                        return handler(self, body=body, query=query, **match.groupdict())
            with self.hub.lock:
                self.hub.unknown_routes.append(f"{method} {path}")
            raise HubHTTPError(404, f"hubserver: no route for {method} {path}")
        except HubHTTPError as exc:
            headers = {"X-Error-Message": exc.message, **exc.headers}
            if exc.code:
                headers["X-Error-Code"] = exc.code
            self._json(exc.status, {"error": exc.message}, headers)

    def _readable_repo(self, repo: str) -> Repo:
        return self.hub.repo(repo, authorized=bool(self._auth()))

    # -- routes ----------------------------------------------------------------------------

    def r_create_repo(self, body, query):
        self._need_write()
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        url = f"{self.hub.url}/{repo_id}"
        try:
            self.hub.create_repo(repo_id, private=private)
        except HubHTTPError as exc:
            headers = {"X-Error-Message": exc.message}
            return self._json(exc.status, {"error": exc.message, "url": url}, headers)
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def r_whoami(self, body, query):
        if not self._auth() or self.headers.get("Authorization") is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        self._json(200, {"type": "user", "name": "tester", "orgs": [], "auth": {"type": "access_token"}})

    def r_agent_harnesses(self, body, query):
        # Fetched once a day by the client to tag its user agent; an empty registry detects nothing.
        self._json(200, {"standardEnvVars": [], "harnesses": {}})

    def r_model_info(self, body, query, repo, revision="main"):
        info = self.hub.model_info(self._readable_repo(repo), revision, blobs="blobs" in query)
        self._json(200, info)

    def r_validate_yaml(self, body, query):
        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as exc:
            return self._json(400, {"errors": [{"message": str(exc)}], "warnings": []})
        if meta is not None and not isinstance(meta, dict):
            return self._json(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        self._json(200, {"errors": [], "warnings": []})

    def r_preupload(self, body, query, repo, revision):
        self._need_write()
        found = self._readable_repo(repo)
        files = [self.hub.upload_mode(found, revision, item) for item in json.loads(body)["files"]]
        self._json(200, {"files": files, "commitOid": found.branches.get(unquote(revision))})

    def r_lfs_batch(self, body, query, repo):
        self._need_write()
        self._readable_repo(repo)
        self._json(200, self.hub.lfs_batch(repo, json.loads(body)),
                   {"Content-Type": "application/vnd.git-lfs+json"})

    def r_lfs_upload(self, body, query, repo, oid):
        if self.headers.get("Authorization"):
            self.hub.cdn_auth_headers.append(f"PUT {self.path}")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubHTTPError(400, "uploaded content does not match its oid")
        self.hub._object_path(oid).write_bytes(body)
        self._send(200, b"", {"ETag": f'"{oid}"'}, content_type="text/plain")

    def r_lfs_verify(self, body, query, repo):
        self._need_write()
        payload = json.loads(body)
        stored = self.hub._object_path(payload["oid"])
        if not stored.exists() or stored.stat().st_size != payload["size"]:
            raise HubHTTPError(404, "object not found")
        self._json(200, {"success": True})

    def r_commit(self, body, query, repo, revision):
        self._need_write()
        self._json(200, self.hub.commit_ndjson(self._readable_repo(repo), revision, body))

    def r_refs(self, body, query, repo):
        self._json(200, self.hub.refs(self._readable_repo(repo)))

    def r_create_tag(self, body, query, repo, revision):
        self._need_write()
        self.hub.create_tag(self._readable_repo(repo), revision, json.loads(body)["tag"])
        self._json(200, {})

    def r_delete_tag(self, body, query, repo, tag):
        self._need_write()
        found = self._readable_repo(repo)
        if found.tags.pop(unquote(tag), None) is None:
            raise HubHTTPError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
        self.hub._save(found)
        self._json(200, {})

    def r_tree(self, body, query, repo, revision, path=""):
        recursive = query.get("recursive", ["False"])[0].lower() in ("true", "1")
        found = self._readable_repo(repo)
        self._json(200, self.hub.tree(found, revision, unquote(path or ""), recursive))

    def r_resolve(self, body, query, repo, revision, path):
        found = self._readable_repo(repo)
        sha = found.resolve(revision)
        blob = found.commits[sha]["files"].get(unquote(path))
        if blob is None:
            raise HubHTTPError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{blob["oid"]}"', "Accept-Ranges": "bytes"}
        if blob["lfs"]:
            headers.update({"X-Linked-Etag": f'"{blob["sha256"]}"', "X-Linked-Size": str(blob["size"]),
                            "Location": f"{self.hub.cdn_url}/cdn/{blob['sha256']}"})
            return self._send(302, b"", headers, content_type="text/plain")
        self._send_bytes(self.hub._object_path(blob["sha256"]).read_bytes(), headers)

    def _send_bytes(self, data: bytes, headers: dict) -> None:
        """A file's bytes, or the slice a ``Range: bytes=A-B`` header asks for (206)."""
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not match:
            return self._send(200, data, headers, content_type="application/octet-stream")
        start, end = int(match[1]), min(int(match[2] or len(data) - 1), len(data) - 1)
        headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
        self._send(206, data[start:end + 1], headers, content_type="application/octet-stream")

    def r_cdn(self, body, query, oid):
        if self.headers.get("Authorization"):
            self.hub.cdn_auth_headers.append(f"{self.command} {self.path}")
        stored = self.hub._object_path(oid)
        if not stored.exists():
            raise HubHTTPError(404, "no such object")
        self._send_bytes(stored.read_bytes(), {"ETag": f'"{oid}"', "Accept-Ranges": "bytes"})


_ROUTES = [
    ("POST", r"/api/repos/create", _Handler.r_create_repo),
    ("GET", r"/api/whoami-v2", _Handler.r_whoami),
    ("GET", r"/api/agent-harnesses", _Handler.r_agent_harnesses),
    ("POST", r"/api/validate-yaml", _Handler.r_validate_yaml),
    ("GET", rf"/api/models/{_REPO}", _Handler.r_model_info),
    ("GET", rf"/api/models/{_REPO}/revision/(?P<revision>[^/]+)", _Handler.r_model_info),
    ("POST", rf"/api/models/{_REPO}/preupload/(?P<revision>[^/]+)", _Handler.r_preupload),
    ("POST", rf"/api/models/{_REPO}/commit/(?P<revision>[^/]+)", _Handler.r_commit),
    ("GET", rf"/api/models/{_REPO}/refs", _Handler.r_refs),
    ("POST", rf"/api/models/{_REPO}/tag/(?P<revision>[^/]+)", _Handler.r_create_tag),
    ("DELETE", rf"/api/models/{_REPO}/tag/(?P<tag>[^/]+)", _Handler.r_delete_tag),
    ("GET", rf"/api/models/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?", _Handler.r_tree),
    ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", _Handler.r_lfs_batch),
    ("POST", rf"/{_REPO}\.git/info/lfs/objects/verify", _Handler.r_lfs_verify),
    ("PUT", rf"/lfs-upload/{_REPO}/(?P<oid>[0-9a-f]{{64}})", _Handler.r_lfs_upload),
    ("HEAD", rf"/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", _Handler.r_resolve),
    ("GET", rf"/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", _Handler.r_resolve),
    ("HEAD", r"/cdn/(?P<oid>[0-9a-f]{64})", _Handler.r_cdn),
    ("GET", r"/cdn/(?P<oid>[0-9a-f]{64})", _Handler.r_cdn),
]


def reserve_socket() -> socket.socket:
    """A listening socket on a free port, so the endpoint is known before the server starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock
