"""Push adapter versions to the Hugging Face Hub and pull them back, lineage included.

One Hub repo per adapter name. Each version is one commit, made with ``parent_commit`` set to the
repo's head (so a concurrent change is refused, not overwritten) and tagged ``vN``; the repo and
commit are stored on the version's row. Beside the weights go a model card (``README.md``, with
the plain PEFT code that loads the version and a plot of its loss, ``loss.png``) and
``adaptr.json``: the full registry record with the sha256 of every file, from which ``pull``
rebuilds the version and its lineage in another registry.

Nothing pushed names this machine: ``adapter_config.json`` goes with the base's Hub id and
commit (or, for a base that is not on the Hub, none), and the absolute paths a record holds
(a local base's directory, the data files) go as their last part only.

The token comes only from ``HF_TOKEN`` or the stored Hub login, read by ``huggingface_hub``
itself: adaptr never takes it as an argument, prints it, or stores it. Pickles
(``training_args.bin``, ``*.pt``…) are never pushed nor pulled.

``huggingface_hub`` is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import records
from . import store as store_mod
from .store import CONFIG_FILE, RECORD_FILE, is_pickle
from .bases import TOKENIZER_FILES, tokenizer_sha256
from .errors import AdaptrError, ConflictError, IntegrityError, NotFoundError, UsageError
from .lossplot import loss_png
from .refs import check_adapter_name, check_name
from .registry import Registry
from .safetensors_meta import summarize

CARD_FILE = "README.md"
PLOT_FILE = "loss.png"
RECORD_FORMAT = 1
# The card and its plot are generated at each push (never listed, never pulled); the manifest is
# rebuilt on pull.
NOT_PUSHED = {store_mod.MANIFEST, CARD_FILE, PLOT_FILE}
_LOCAL_PATH = re.compile(r"^(?:/|~/)[^\n]+$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_LOGIN_HINT = "set HF_TOKEN, or run `hf auth login`"


def check_repo_id(repo_id: str) -> str:
    if not _REPO_ID.match(repo_id or "") or ".." in repo_id:
        raise UsageError(f"invalid Hub repo {repo_id!r}", "write it as OWNER/NAME, e.g. alice/sft-tiny")
    return repo_id


def parse_spec(spec: str) -> tuple[str, str]:
    """``OWNER/NAME[@REVISION]`` -> (repo id, revision); the revision defaults to ``main``."""
    repo_id, _, revision = spec.partition("@")
    if "@" in spec and not revision:
        raise UsageError(f"empty revision in {spec!r}", "write OWNER/NAME@v2 or OWNER/NAME@COMMIT")
    return check_repo_id(repo_id), revision or "main"


# -- talking to the Hub ---------------------------------------------------------------------


def _api():
    from huggingface_hub import HfApi

    return HfApi()


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _require_token() -> None:
    from huggingface_hub import get_token

    if not get_token():
        raise UsageError("no Hugging Face token found", _LOGIN_HINT)


def _transport_errors() -> tuple[type[BaseException], ...]:
    found = []
    for module in ("httpx2", "httpx"):  # huggingface_hub 2.x uses httpx2, 1.x httpx
        try:
            found.append(importlib.import_module(module).TransportError)
        except ImportError:
            continue
    return tuple(found)


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None = None):
    """Turn the client's exceptions into one-line AdaptrErrors that say what to do."""
    from huggingface_hub import errors as hf

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        yield
    except hf.OfflineModeIsEnabled:
        raise UsageError("HF_HUB_OFFLINE is set, so the Hub cannot be reached",
                         "unset HF_HUB_OFFLINE to push or pull") from None
    except hf.RevisionNotFoundError:
        raise NotFoundError(f"{repo_id} has no revision {revision!r}",
                            f"versions are tagged vN; see {_endpoint()}/{repo_id}") from None
    except hf.RepositoryNotFoundError:
        raise NotFoundError(f"Hub repo {repo_id} not found",
                            "check OWNER/NAME; a private repo needs a token that can read it "
                            f"({_LOGIN_HINT})") from None
    except hf.RemoteEntryNotFoundError as exc:
        raise NotFoundError(f"{where} lacks a file adaptr needs ({_url_file(exc)})",
                            "the repo was changed by hand; push the version again") from None
    except hf.HfHubHTTPError as exc:
        raise _http_error(exc, repo_id) from None
    except hf.LocalEntryNotFoundError:
        raise AdaptrError(f"cannot reach the Hub at {_endpoint()} to read {where}",
                          "check the network connection, or HF_ENDPOINT if you set it") from None
    except _transport_errors():
        raise AdaptrError(f"cannot reach the Hub at {_endpoint()}",
                          "check the network connection, or HF_ENDPOINT if you set it") from None


def _url_file(exc) -> str:
    url = str(getattr(getattr(exc, "response", None), "url", "") or "")
    return url.rsplit("/", 1)[-1] or "unknown file"


def _http_error(exc, repo_id: str) -> AdaptrError:
    status = exc.response.status_code if exc.response is not None else None
    if status == 401:
        return UsageError("the Hub rejected the token (401 Unauthorized)", _LOGIN_HINT)
    if status == 403:
        return UsageError(f"the token may not write to {repo_id} (403 Forbidden)",
                          "use a token with write access to that namespace")
    if status == 412:
        return ConflictError(f"{repo_id} changed while pushing (someone else committed)",
                             "run the push again")
    if status == 409:
        return ConflictError(f"the Hub refused a conflicting change to {repo_id} (409)",
                             "a tag or repo of that name already exists")
    detail = getattr(exc, "server_message", None) or ""
    return AdaptrError(f"the Hub answered {status} for {repo_id}" + (f": {detail}" if detail else ""),
                       "try again later; --debug shows the full response")


# -- what is pushed ---------------------------------------------------------------------------


def pushable_files(registry: Registry, adapter: dict) -> tuple[dict[str, dict], dict[str, Path | bytes]]:
    """The version's files that go to the Hub, after verifying them: their sha256 and size as
    pushed, and what to upload for each (the file, or the bytes it is pushed as)."""
    from .peftdir import portable_config

    path = Path(registry.verified(adapter)["path"])
    manifest = store_mod.read_manifest(path)["files"]
    files = {name: dict(entry) for name, entry in sorted(manifest.items())
             if name not in NOT_PUSHED and not is_pickle(name)}
    contents: dict[str, Path | bytes] = {name: path / name for name in files}
    if CONFIG_FILE in files:
        config = json.loads((path / CONFIG_FILE).read_text())
        data = _json_bytes(portable_config(config, registry.base_by_id(adapter["base_id"]), public=True))
        contents[CONFIG_FILE] = data
        files[CONFIG_FILE] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return files, contents


def without_local_paths(value):
    """``value`` with each absolute filesystem path cut to its last part (a local base's
    directory, a data file): such a path names this machine and means nothing where the version
    is pulled. Generated text (an evaluation's ``outputs``) is kept as it is."""
    if isinstance(value, dict):
        return {k: v if k == "outputs" else without_local_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_local_paths(v) for v in value]
    if isinstance(value, str) and _LOCAL_PATH.match(value):
        return Path(value).name or value
    return value


def root_hub_id(registry: Registry, base: dict) -> str | None:
    """The Hub id of the base a (possibly derived) base was made from, if it came from the Hub."""
    while base["source_kind"] == "derived":
        base_parents = [p for p in base["parents"] if p["kind"] == "base"]
        if not base_parents:
            return None
        base = registry.base(base_parents[0]["ref"])
    return base["source"] if base["source_kind"] == "hub" else None


def base_record(registry: Registry, base: dict) -> dict:
    keys = ("name", "source", "source_kind", "revision", "config_sha256", "tokenizer_sha256",
            "architecture", "num_parameters", "dtype", "sha256")
    return {**{key: base[key] for key in keys}, "hub_id": root_hub_id(registry, base)}


def _hub_ref(node: dict) -> dict | None:
    if not node.get("hub_repo"):
        return None
    return {"repo": node["hub_repo"], "revision": f"v{node['version']}", "commit": node["hub_commit"]}


def parent_records(registry: Registry, adapter: dict) -> list[dict]:
    out = []
    for parent in adapter["parents"]:
        entry = {"ref": parent["ref"], "kind": parent["kind"], "relation": parent["relation"],
                 "params": parent["params"]}
        if parent["kind"] == "adapter":
            node = registry.resolve(parent["ref"])
            entry.update(sha256=node["sha256"], hub=_hub_ref(node))
        else:
            entry["base"] = base_record(registry, registry.base(parent["ref"]))
        out.append(entry)
    return out


def version_record(registry: Registry, adapter: dict, files: dict) -> dict:
    """The content of ``adaptr.json``: everything needed to register the version elsewhere, and
    to load it without adaptr (``stacked_on``: the adapters that must be active beneath it)."""
    return without_local_paths({
        "format": RECORD_FORMAT, "ref": adapter["ref"], "name": adapter["name"],
        "version": adapter["version"], "stage": adapter["stage"], "created_at": adapter["created_at"],
        "sha256": adapter["sha256"], "base": base_record(registry, registry.base_by_id(adapter["base_id"])),
        "parents": parent_records(registry, adapter), "config": adapter["config"],
        "record": records.to_dict(adapter.record), "metrics": adapter["metrics"], "files": files,
        "loss_curve": registry.loss_curve(adapter),
        "stacked_on": [{"ref": node["ref"], "hub": _hub_ref(node)} for node in registry.stacked_beneath(adapter)],
        "evaluations": evaluation_records(registry, adapter),
    })


def evaluation_records(registry: Registry, adapter: dict) -> list[dict]:
    """The version's recorded evaluations, with generated outputs, for ``adaptr.json``."""
    from . import evalstore

    return [{**evalstore.evaluation_json(e), "outputs": evalstore.outputs(registry, e["id"])}
            for e in evalstore.evaluations_of(registry, [adapter["id"]])]


def eval_results(meta: dict) -> list:
    """The evaluations as the Hub's ``model-index`` entries (huggingface_hub EvalResult)."""
    from huggingface_hub import EvalResult

    out = []
    for evaluation in meta.get("evaluations") or []:
        for metric, value in sorted(evaluation["metrics"].items()):
            if value is None:
                continue
            out.append(EvalResult(
                task_type="text-generation", task_name=evaluation["evaluator"],
                dataset_type="adaptr/eval-set", dataset_name=evaluation["eval_set"].get("name") or "eval set",
                dataset_revision=evaluation["eval_set_sha256"], metric_type=metric, metric_value=value,
                metric_name=f"{evaluation['evaluator']}.{metric}",
                metric_config=f"settings {evaluation['settings_sha256'][:12]}"))
    return out


def model_card(meta: dict, repo_id: str) -> str:
    """README.md: Hub metadata (base_model, relation, library, tags, lineage) and a readable body."""
    from huggingface_hub import ModelCard, ModelCardData

    lineage = [{"ref": p["ref"], "relation": p["relation"],
                "hub": f"{p['hub']['repo']}@{p['hub']['revision']}" if p.get("hub") else None}
               for p in meta["parents"]]
    results = eval_results(meta)
    data = ModelCardData(
        base_model=meta["base"]["hub_id"], base_model_relation="adapter", library_name="peft",
        tags=["adaptr", "peft", "lora", meta["stage"]],
        model_name=meta["ref"] if results else None, eval_results=results or None,
        adaptr={"ref": meta["ref"], "stage": meta["stage"], "base": meta["base"]["name"],
                "lineage": lineage})
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_card_body(meta, repo_id)}"))


def _card_body(meta: dict, repo_id: str) -> str:
    base, metrics = meta["base"], meta["metrics"] or {}
    lines = [f"# {meta['name']} v{meta['version']}", "",
             f"A PEFT adapter made by adaptr's `{meta['stage']}` stage: version `{meta['ref']}`, "
             f"on base `{base['name']}` ({_base_words(base)}).", "",
             "## Use it with PEFT and transformers", "", *_peft_use(meta, repo_id),
             "Into an adaptr registry, with its lineage:", "", "```",
             f"adaptr pull {repo_id}@v{meta['version']} --with-parents", "```", "",
             "## Training loss", "", *_loss_lines(meta.get("loss_curve") or []), "## Lineage", ""]
    lines += [_lineage_line(p) for p in meta["parents"]] or ["No parents: trained directly on the base."]
    lines += ["", "## Stage config", "", "```json", json.dumps(meta["config"], indent=2, sort_keys=True),
              "```", "", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(metrics.items())]
    else:
        lines.append("None recorded.")
    return "\n".join(lines) + "\n"


def _on_hub(base: dict) -> bool:
    return base["source_kind"] == "hub" and bool(base.get("revision"))


def _base_words(base: dict) -> str:
    if _on_hub(base):
        return f"`{base['source']}` at commit `{base['revision']}`"
    if base["source_kind"] == "derived":
        return "a base adaptr derived by merging" + (f", from `{base['hub_id']}`" if base.get("hub_id") else "")
    return "a local model, not on the Hub"


def _peft_use(meta: dict, repo_id: str) -> list[str]:
    """The plain transformers + PEFT code that loads this version (and what it is stacked on)."""
    from .hf.loading import peft_snippet

    base, notes = meta["base"], []
    layers = []
    for below in meta.get("stacked_on") or []:
        hub = below.get("hub")
        if hub:
            layers.append((hub["repo"], below["ref"], hub["revision"]))
        else:
            layers.append((f"{below['ref'].upper().replace('-', '_')}_DIR", below["ref"]))
            notes.append(f"`{below['ref']}`, which this adapter is stacked on, is not on the Hub: push it "
                         f"(`adaptr push {meta['ref']} --repo {repo_id} --with-parents`) or load it from a copy.")
    layers.append((repo_id, meta["ref"], f"v{meta['version']}"))
    if _on_hub(base):
        source, revision = base["source"], base["revision"]
    else:
        source, revision = "BASE_DIR", None
        facts = [f"config.json sha256 `{base['config_sha256']}`"]
        facts += [f"tokenizer sha256 `{base['tokenizer_sha256']}`"] if base.get("tokenizer_sha256") else []
        facts += [f"weights sha256 `{base['sha256']}`"] if base.get("sha256") else []
        fingerprint = ((meta.get("record") or {}).get("base") or {}).get("weights_fingerprint")
        facts += [f"weights fingerprint (as adaptr loads them) `{fingerprint}`"] if fingerprint else []
        notes.insert(0, f"The base `{base['name']}` is not on the Hub, so you provide it: `BASE_DIR` is your "
                        f"copy of it, the model with {', '.join(facts)}.")
    if len(layers) > 1:
        notes.append(f"`{meta['ref']}` was trained stacked on other adapters: load them all, deepest "
                     "first as below, and keep them active together.")
    paragraphs = [line for note in notes for line in (note, "")]
    return [*paragraphs, "```python", peft_snippet(source, layers, revision), "```", ""]


def _loss_lines(curve: list) -> list[str]:
    if len(curve) < 2:
        return ["No loss curve recorded.", ""]
    (first_step, first), (last_step, last) = curve[0], curve[-1]
    low_step, low = min(curve, key=lambda point: point[1])
    return [f"![training loss by step]({PLOT_FILE})", "",
            f"{len(curve)} logged steps: loss {first:.4g} at step {first_step}, {last:.4g} at step "
            f"{last_step} (lowest {low:.4g} at step {low_step}). The numbers are in `{RECORD_FILE}` "
            "(`loss_curve`).", ""]


def _lineage_line(parent: dict) -> str:
    hub = parent.get("hub")
    if not hub:
        return f"- {parent['relation']} from `{parent['ref']}` (not on the Hub)"
    url = f"{_endpoint()}/{hub['repo']}/tree/{hub['revision']}"
    return (f"- {parent['relation']} from [`{parent['ref']}`]({url}) "
            f"({hub['repo']}@{hub['revision']}, commit {hub['commit'][:12]})")


# -- push -------------------------------------------------------------------------------------


def _set_hub_columns(registry: Registry, adapter_id: int, repo_id: str, commit: str) -> None:
    with registry.write() as db:
        db.execute("UPDATE adapters SET hub_repo = ?, hub_commit = ? WHERE id = ?",
                   [repo_id, commit, adapter_id])


def _push_order(registry: Registry, adapter: dict) -> list[dict]:
    """The adapter's adapter ancestors, roots first, then the adapter itself."""
    order, seen = [], set()

    def visit(node: dict) -> None:
        for parent in node["parents"]:
            if parent["kind"] == "adapter" and parent["ref"] not in seen:
                seen.add(parent["ref"])
                visit(registry.resolve(parent["ref"]))
        order.append(node)

    visit(adapter)
    return order


def push(registry: Registry, ref: str, repo_id: str, *, private: bool = False,
         with_parents: bool = False) -> list[dict]:
    """Push ``ref`` (and with ``with_parents`` its ancestors first) to the Hub; one result per version."""
    check_repo_id(repo_id)
    adapter = registry.resolve(ref)
    _require_token()
    owner = repo_id.split("/")[0]
    results = []
    for node in (_push_order(registry, adapter) if with_parents else [adapter]):
        if node["name"] == adapter["name"]:
            target = repo_id
        else:
            target = node["hub_repo"] or f"{owner}/{node['name']}"
        # Re-read the row: an ancestor pushed just now has its Hub ref recorded.
        results.append(push_version(registry, registry.adapter_by_id(node["id"]), target, private=private))
    return results


def push_version(registry: Registry, adapter: dict, repo_id: str, *, private: bool = False) -> dict:
    """One version -> one commit on ``main`` with ``parent_commit`` set, tagged ``vN``."""
    from huggingface_hub import CommitOperationAdd

    files, contents = pushable_files(registry, adapter)
    meta = version_record(registry, adapter, files)
    tag = f"v{adapter['version']}"
    api = _api()
    with hub_errors(repo_id):
        api.create_repo(repo_id, private=private, exist_ok=True)
        refs = api.list_repo_refs(repo_id)
    tagged = {t.name: t.target_commit for t in refs.tags}
    result = {"ref": adapter["ref"], "repo": repo_id, "tag": tag}
    if tag in tagged:
        _check_same_version(adapter, repo_id, tag, tagged[tag], files)
        _set_hub_columns(registry, adapter["id"], repo_id, tagged[tag])
        return {**result, "commit": tagged[tag], "status": "up-to-date"}
    head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
    operations = [CommitOperationAdd(name, content if isinstance(content, bytes) else str(content))
                  for name, content in contents.items()]
    operations += [CommitOperationAdd(RECORD_FILE, _json_bytes(meta)),
                   CommitOperationAdd(CARD_FILE, model_card(meta, repo_id).encode())]
    plot = loss_png(meta["loss_curve"])
    if plot is not None:
        operations.append(CommitOperationAdd(PLOT_FILE, plot))
    operations += _stale_files(api, repo_id, head, {op.path_in_repo for op in operations})
    with hub_errors(repo_id):
        commit = api.create_commit(
            repo_id, operations, commit_message=f"adaptr: {adapter['ref']}",
            commit_description=f"Version {tag} of {adapter['name']}, pushed by adaptr.", parent_commit=head)
    with hub_errors(repo_id):
        api.create_tag(repo_id, tag=tag, revision=commit.oid)
    _set_hub_columns(registry, adapter["id"], repo_id, commit.oid)
    return {**result, "commit": commit.oid, "status": "pushed"}


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _stale_files(api, repo_id: str, head: str | None, keep: set[str]) -> list:
    """Deletions for files at the head that this version does not have (the commit is the version)."""
    from huggingface_hub import CommitOperationDelete
    from huggingface_hub.hf_api import RepoFile

    if head is None:
        return []
    with hub_errors(repo_id):
        present = [f.path for f in api.list_repo_tree(repo_id, recursive=True, revision=head)
                   if isinstance(f, RepoFile)]
    return [CommitOperationDelete(path) for path in present if path not in keep and path != ".gitattributes"]


def _check_same_version(adapter: dict, repo_id: str, tag: str, commit: str, files: dict) -> None:
    """A tag that already exists must hold this very version; refuse to move or duplicate it."""
    if adapter["hub_repo"] == repo_id and adapter["hub_commit"] == commit:
        return
    try:
        remote_files = _download_record(repo_id, commit).get("files")
    except NotFoundError:  # a tag made by hand, without adaptr.json
        remote_files = None
    if remote_files != files:
        raise ConflictError(
            f"{repo_id} already has tag {tag} at commit {commit[:12]}, holding different files "
            f"than {adapter['ref']}",
            "push to another --repo, or delete that tag on the Hub if it is wrong")


def _download_record(repo_id: str, revision: str) -> dict:
    from huggingface_hub import hf_hub_download

    with hub_errors(repo_id, revision):
        path = hf_hub_download(repo_id, RECORD_FILE, revision=revision)
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError:
        raise IntegrityError(f"{repo_id}@{revision}: {RECORD_FILE} is not valid JSON",
                             "the repo was changed by hand; push the version again") from None


# -- pull -------------------------------------------------------------------------------------


@dataclass
class _Pulled:
    """One version to register: downloaded and verified, waiting for its parents and base."""

    repo_id: str
    commit: str
    meta: dict
    staged: Path
    base: dict | str  # a local base, or the name of a Hub base to register (see pending_bases)
    parents: list = field(default_factory=list)  # (dict | _Pulled, relation, params)
    name: str = ""
    registered: dict | None = None  # the adapter row, once written


@dataclass
class _PullPlan:
    registry: Registry
    with_parents: bool
    stack: contextlib.ExitStack
    items: list[_Pulled] = field(default_factory=list)
    pending_bases: dict[str, dict] = field(default_factory=dict)  # name -> add_base kwargs


def pull(registry: Registry, spec: str, *, with_parents: bool = False, name: str | None = None) -> list[dict]:
    """Download ``OWNER/NAME[@REV]``, verify it, and register it (parents first with ``with_parents``).

    Everything is downloaded and checked before the first row is written, and all rows are written
    in one transaction: a failure leaves the registry as it was.
    """
    repo_id, revision = parse_spec(spec)
    if name is not None:
        check_adapter_name(name)
    with contextlib.ExitStack() as stack:
        plan = _PullPlan(registry, with_parents, stack)
        top = _plan(plan, _api(), repo_id, revision, name=name)
        if not isinstance(top, _Pulled):  # a version registered here already
            return [{"ref": top["ref"], "repo": repo_id, "revision": revision, "status": "present"}]
        with registry.write():
            for base_name, kwargs in plan.pending_bases.items():
                registry.add_base(base_name, **kwargs)
            for item in plan.items:
                _register(registry, item)
        return [{"ref": item.registered["ref"], "repo": item.repo_id, "commit": item.commit,
                 "remote_ref": item.meta.get("ref"), "status": "pulled"} for item in plan.items]


def _register(registry: Registry, item: _Pulled) -> None:
    meta = item.meta
    parents = [(p.registered if isinstance(p, _Pulled) else p, relation, params)
               for p, relation, params in item.parents]
    origin = {"repo": item.repo_id, "commit": item.commit, "ref": meta.get("ref")}
    adapter = registry.publish_adapter(
        item.staged, name=item.name, base=item.base if isinstance(item.base, str) else item.base["name"],
        stage=meta["stage"], parents=parents, config=meta.get("config"),
        record=dataclasses.replace(records.version_record(meta.get("record")), pulled_from=origin),
        metrics=meta.get("metrics"))
    _set_hub_columns(registry, adapter["id"], item.repo_id, item.commit)
    _register_evaluations(registry, adapter, meta.get("evaluations") or [])
    item.registered = adapter


def _register_evaluations(registry: Registry, adapter: dict, evaluations: list[dict]) -> None:
    """Results pushed with the version, recorded for the pulled one (inside the pull's transaction)."""
    from . import evalstore

    evalstore.record(registry, [{
        "node_id": adapter["id"], "key": evalstore.EvalKey(e["evaluator"], e["eval_set_sha256"], e["settings_sha256"]),
        "eval_set": e["eval_set"], "settings": e["settings"], "metrics": e["metrics"],
        "higher_is_better": e.get("higher_is_better") or {}, "reference_ref": e.get("reference"),
        "tokenizer_sha256": e.get("tokenizer_sha256"), "outputs": e.get("outputs") or [],
        "record": {"pulled_from_run": e.get("run_id")}, "source": "hub", "created_at": e.get("created_at"),
    } for e in evaluations])


def _plan(plan: _PullPlan, api, repo_id: str, revision: str, *, name: str | None = None):
    """Resolve, download and verify one version; returns a local adapter dict if already present."""
    from huggingface_hub.hf_api import RepoFile

    with hub_errors(repo_id, revision):
        commit = api.model_info(repo_id, revision=revision).sha
        tree = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True, revision=commit)
                if isinstance(f, RepoFile)}
    for item in plan.items:
        if (item.repo_id, item.commit) == (repo_id, commit):
            return item
    if RECORD_FILE in tree:
        meta = _download_record(repo_id, commit)
    else:
        meta = _plain_peft_record(repo_id, commit, tree)
    local = _find_local(plan.registry, [meta.get("sha256"), _files_digest(meta)], repo_id, commit)
    if local is not None:
        return local
    parents = [_plan_parent(plan, api, meta, parent) for parent in meta["parents"]]
    if meta["base"].get("plain"):
        base = _plain_base(plan.registry, meta["base"]["source"], repo_id)
    else:
        base = _plan_base(plan, meta)
    local_name = _local_name(name or meta["name"], repo_id)
    staged = plan.stack.enter_context(plan.registry.store.staging("pull"))
    _download_verified(repo_id, commit, meta, tree, staged)
    item = _Pulled(repo_id, commit, meta, staged, base, parents, name=local_name)
    plan.items.append(item)
    return item


def _local_name(name: str, repo_id: str) -> str:
    try:
        return check_adapter_name(name)
    except UsageError as exc:
        raise UsageError(f"{repo_id}: {exc.message}",
                         "pass --name NAME to register it under another name") from None


def _find_local(registry: Registry, digests: list, repo_id: str | None, commit: str | None) -> dict | None:
    """A version already registered: one of these artifact digests, or pulled from that commit."""
    digests = [d for d in digests if d]
    marks = ",".join("?" * len(digests)) or "NULL"
    rows = registry.query(
        f"SELECT id FROM adapters WHERE sha256 IN ({marks}) OR (hub_repo = ? AND hub_commit = ?) "
        "ORDER BY id LIMIT 1", [*digests, repo_id, commit])
    return registry.adapter_by_id(rows[0]["id"]) if rows else None


def _files_digest(meta: dict) -> str | None:
    files = meta.get("files") or {}
    if not files or any("sha256" not in entry for entry in files.values()):
        return None
    return store_mod.manifest_digest({"files": files})


def _plan_parent(plan: _PullPlan, api, meta: dict, parent: dict):
    relation, params = parent["relation"], parent.get("params") or {}
    if parent["kind"] == "base":
        return _local_base(plan.registry, parent["base"], meta["ref"]), relation, params
    hub = parent.get("hub") or {}
    local = _find_local(plan.registry, [parent["sha256"]], hub.get("repo"), hub.get("commit"))
    if local is not None:
        return local, relation, params
    if not hub:
        raise NotFoundError(
            f"{meta['ref']}'s parent {parent['ref']} is not in this registry and was never pushed",
            f"push it from the registry that has it (`adaptr push {parent['ref']} --repo OWNER/NAME`), "
            "then push the child again")
    if not plan.with_parents:
        raise NotFoundError(
            f"{meta['ref']}'s parent {parent['ref']} ({hub['repo']}@{hub['revision']}) "
            "is not in this registry",
            "pass --with-parents to pull it too")
    return _plan(plan, api, hub["repo"], hub["commit"]), relation, params


def _local_base(registry: Registry, wanted: dict, ref: str) -> dict:
    """The registered base with the config hash ``wanted`` records (its own name preferred)."""
    candidates = [b for b in registry.bases() if b["config_sha256"] == wanted.get("config_sha256")]
    candidates.sort(key=lambda b: b["name"] != wanted["name"])
    for base in candidates:
        # Where both sides know the tokenizer digest or (derived bases) the weights digest, they must agree.
        if any(wanted.get(key) and base[key] and base[key] != wanted[key]
               for key in ("tokenizer_sha256", "sha256")):
            continue
        return base
    raise NotFoundError(
        f"{ref} was trained on base {wanted['name']!r} ({wanted['source']}, config.json sha256 "
        f"{(wanted.get('config_sha256') or '?')[:12]}), and no registered base matches it",
        f"register that model first (`adaptr base add {wanted['name']} --from PATH_OR_HUB_ID`), "
        "then pull again")


def _plan_base(plan: _PullPlan, meta: dict) -> dict | str:
    wanted = meta["base"]
    try:
        return _local_base(plan.registry, wanted, meta["ref"])
    except NotFoundError:
        if wanted["source_kind"] != "hub" or not wanted.get("revision"):
            raise
    name = wanted["name"]
    if name in plan.pending_bases:
        return name
    if plan.registry.has_base(name):
        raise ConflictError(
            f"{meta['ref']} needs Hub base {wanted['source']}@{wanted['revision'][:12]}, but the local base "
            f"{name!r} is a different model", f"register it under another name: "
            f"`adaptr base add OTHER --from {wanted['source']} --revision {wanted['revision']}`")
    kwargs = describe_hub_base(wanted["source"], wanted["revision"])
    if kwargs["info"]["config_sha256"] != wanted.get("config_sha256"):
        raise IntegrityError(
            f"{wanted['source']}@{wanted['revision'][:12]}: config.json differs from the one {meta['ref']} "
            "records", "the base repo was rewritten; pull cannot rebuild it")
    plan.pending_bases[name] = kwargs
    return name


def _download_verified(repo_id: str, commit: str, meta: dict, tree: dict, staged: Path) -> None:
    """Download the listed files into ``staged`` and check every sha256 before anything is recorded."""
    from huggingface_hub import hf_hub_download

    for name, entry in sorted(meta["files"].items()):
        if is_pickle(name) or name in NOT_PUSHED:
            raise IntegrityError(f"{repo_id}@{commit[:12]} lists {name}, which adaptr never pulls",
                                 "re-push the version with adaptr")
        if name not in tree:
            raise IntegrityError(f"{repo_id}@{commit[:12]} is missing {name}",
                                 "the repo was changed by hand; push the version again")
        with hub_errors(repo_id, commit):
            hf_hub_download(repo_id, name, revision=commit, local_dir=staged)
        if not _matches(staged / name, entry, tree[name]):
            against = f"its sha256 in {RECORD_FILE}" if meta["format"] else "its hash on the Hub"
            raise IntegrityError(f"{repo_id}@{commit[:12]}: {name} does not match {against}",
                                 "the download or the repo is corrupted; pull again or re-push the version")
    shutil.rmtree(staged / ".cache", ignore_errors=True)  # huggingface_hub's local_dir bookkeeping


def _matches(path: Path, entry: dict, remote) -> bool:
    """Check against adaptr.json's sha256, else the Hub's LFS sha256, else the git blob id."""
    from huggingface_hub.utils.sha import git_hash

    expected = entry.get("sha256") or (remote.lfs.sha256 if remote.lfs is not None else None)
    if expected:
        return store_mod.sha256_file(path) == expected
    return git_hash(path.read_bytes()) == remote.blob_id


def _plain_peft_record(repo_id: str, commit: str, tree: dict) -> dict:
    """A record for a repo that PEFT pushed itself: files from the tree, base from adapter_config.json."""
    from huggingface_hub import hf_hub_download

    if CONFIG_FILE not in tree:
        raise UsageError(f"{repo_id} is neither an adaptr push nor a PEFT adapter (no adapter_config.json)",
                         "pull a repo made by `adaptr push` or by PEFT's save_pretrained/push_to_hub")
    if not any(name.endswith(".safetensors") for name in tree):
        raise UsageError(f"{repo_id} has no .safetensors weights", "adaptr never loads pickled weights; "
                         "convert the adapter with PEFT's save_pretrained(safe_serialization=True)")
    with hub_errors(repo_id, commit):
        config_path = hf_hub_download(repo_id, CONFIG_FILE, revision=commit)
    config = json.loads(Path(config_path).read_text())
    files = {name: ({"sha256": f.lfs.sha256, "size": f.size} if f.lfs else {"size": f.size})
             for name, f in tree.items()
             if name not in (".gitattributes", CARD_FILE) and not is_pickle(name)}
    source = config.get("base_model_name_or_path") or ""
    return {"format": 0, "ref": None, "name": repo_id.split("/")[1], "stage": "import", "parents": [],
            "config": {}, "metrics": {}, "files": files,
            "record": records.to_dict(records.VersionRecord(producer="import", imported_from=repo_id,
                                                            extra={"peft_type": config.get("peft_type")})),
            "base": {"name": None, "source": source, "plain": True}}


def _plain_base(registry: Registry, source: str, repo_id: str) -> dict:
    for base in registry.bases():
        if source and (base["source"] == source or _same_path(base["source"], source)):
            return base
    raise NotFoundError(
        f"{repo_id} is a PEFT adapter for base {source!r}, which is not registered",
        f"register it (`adaptr base add NAME --from {source or 'PATH_OR_HUB_ID'}`), then pull again")


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


# -- Hub bases --------------------------------------------------------------------------------


def describe_hub_base(hub_id: str, revision: str | None = None) -> dict:
    """Resolve ``revision`` to a commit and hash config.json and the tokenizer (no weights downloaded)."""
    from huggingface_hub import hf_hub_download

    if "/" in hub_id:
        check_repo_id(hub_id)
    else:  # a legacy id without an owner, such as "gpt2"
        check_name(hub_id, "Hub id")
    api = _api()
    with hub_errors(hub_id, revision):
        info = api.model_info(hub_id, revision=revision)
        present = {s.rfilename for s in info.siblings or []}
        if "config.json" not in present:
            raise UsageError(f"{hub_id} has no config.json", "point --from at a transformers model repo")
        paths = {name: Path(hf_hub_download(hub_id, name, revision=info.sha))
                 for name in ("config.json", *TOKENIZER_FILES) if name in present}
        num_parameters, dtype = _hub_weights_summary(api, hub_id, info.sha)
    config = json.loads(paths["config.json"].read_text())
    return {"source": hub_id, "source_kind": "hub", "revision": info.sha,
            "record": records.BaseRecord(requested_revision=revision or "main"),
            "info": {"config_sha256": store_mod.sha256_file(paths["config.json"]),
                     "tokenizer_sha256": tokenizer_sha256(paths), "num_parameters": num_parameters,
                     "dtype": dtype,
                     "architecture": (config.get("architectures") or [config.get("model_type")])[0]}}


def _hub_weights_summary(api, hub_id: str, commit: str) -> tuple[int, str | None]:
    """Parameter count and dtype from the safetensors headers alone (HTTP range requests)."""
    from huggingface_hub.errors import NotASafetensorsRepoError

    try:
        metadata = api.get_safetensors_metadata(hub_id, revision=commit)
    except NotASafetensorsRepoError:
        raise UsageError(f"{hub_id} has no .safetensors weights",
                         "adaptr loads safetensors only; pick a repo that has them") from None
    return summarize({name: {"dtype": tensor.dtype, "shape": tensor.shape}
                      for file in metadata.files_metadata.values() for name, tensor in file.tensors.items()})


def add_hub_base(registry: Registry, name: str, hub_id: str, revision: str | None = None) -> dict:
    """Record a base that lives on the Hub, pinned to the commit ``revision`` resolves to."""
    check_name(name, "base name")
    if registry.has_base(name):  # refuse before any download
        raise ConflictError(f"base {name!r} already exists",
                            "choose another name, or see it with `adaptr base ls`")
    return registry.add_base(name, **describe_hub_base(hub_id, revision))

