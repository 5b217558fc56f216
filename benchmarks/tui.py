"""TUI benchmark: first paint and scrolling on a registry of 10,000 versions (JSON out).

    python benchmarks/tui.py                     # JSON on stdout
    python benchmarks/tui.py --versions 2000     # smaller
    python benchmarks/tui.py --out result.json

The registry is generated with SQL inserts into a registry made by ``Registry.init`` (every
migration and index in place): ``--names`` names of equal length, each version continued from
the one before, so the version selected at start-up has a long ancestry to draw. One real
version directory is published and shared by every row: browsing reads rows, not files.

Measured:

- ``cold_start``: a fresh ``python`` process that imports the TUI, builds the app and runs it
  headless until the first screen (table page, detail pane, lineage) is laid out; wall time
  from spawn, plus the child's own split (imports, app build, mount to first idle frame).
- ``terminal``: the real ``adaptr tui`` in tmux, from spawn until capture-pane shows the
  table (skipped without tmux).
- ``scroll``: in one running app, the time each ``pagedown`` takes until the app is idle again
  (pages of rows load as the cursor nears the end), and one ``ctrl+end``, which loads every
  remaining row and moves to the last.
- ``filter``: applying a filter that matches one version, and clearing it again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adaptr import Registry  # noqa: E402

SIZE = (120, 36)

CHILD = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import asyncio, json, sys
from adaptr.tui import make_app
t1, c1 = time.perf_counter(), time.process_time()
app = make_app(sys.argv[1])
t2, c2 = time.perf_counter(), time.process_time()

async def main():
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        rows = app.screen.query_one("AdapterTable").row_count
        t3, c3 = time.perf_counter(), time.process_time()
        print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "mount_to_idle_s": t3 - t2,
                          "cpu_import_s": c1 - c0, "cpu_build_s": c2 - c1, "cpu_mount_to_idle_s": c3 - c2,
                          "cpu_process_s": c3, "rows_loaded": rows}))

asyncio.run(main())
"""


def generate(registry: Registry, versions: int, names: int) -> None:
    """``versions`` rows in ``names`` continued chains, newest first by created_at."""
    with registry.store.staging("bench") as staged:
        (staged / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
        (staged / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
        registry.add_base("base", source="bench/base", source_kind="hub", revision="0" * 40)
        first = registry.publish_adapter(staged, name="chain0", base="base", stage="sft",
                                         metrics={"train_loss": 2.0})
    per_name = max(1, versions // names)
    with registry.write() as db:
        last_of: dict[str, int] = {"chain0": first["id"]}
        for index in range(1, versions):
            name, version = f"chain{index % names}", index // names + 1
            if name == "chain0" and version == 1:
                continue
            node = db.execute("INSERT INTO nodes (kind) VALUES ('adapter')").lastrowid
            created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_700_000_000 + index)) + ".000+00:00"
            db.execute(
                "INSERT INTO adapters (id, name, version, base_id, stage, status, path, sha256, config, "
                "record, metrics, created_at) VALUES (?, ?, ?, ?, 'sft', 'ready', ?, ?, '{}', '{}', ?, ?)",
                [node, name, version, first["base_id"], registry.store.relative(first["path"]),
                 first["sha256"], json.dumps({"train_loss": 2.0 / (1 + version)}), created])
            if name in last_of:
                db.execute("INSERT INTO edges (child, parent, relation, params) "
                           "VALUES (?, ?, 'continued', '{}')", [node, last_of[name]])
            last_of[name] = node
    assert registry.count_adapters() == versions, (registry.count_adapters(), versions, per_name)


def cold_start(root: Path, repeats: int) -> dict:
    walls, cpus, splits = [], [], []
    for _ in range(repeats):
        start, before = time.perf_counter(), _children_cpu()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - before)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        splits.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    keys = ("import_s", "build_s", "mount_to_idle_s", "cpu_import_s", "cpu_build_s",
            "cpu_mount_to_idle_s", "cpu_process_s")
    return {"wall_s": _summary(walls), "cpu_s": _summary(cpus),
            **{key: _summary([s[key] for s in splits]) for key in keys},
            "rows_loaded": splits[-1]["rows_loaded"]}


def _children_cpu() -> float:
    """CPU seconds used by finished child processes: unlike wall time, not inflated by load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def terminal_first_paint(root: Path, repeats: int) -> dict | None:
    """Spawn ``adaptr tui`` in tmux; seconds until the table's row count is on screen."""
    tmux = shutil.which("tmux")
    if tmux is None:
        return None
    exe = Path(sys.executable).parent / "adaptr"
    walls = []
    for i in range(repeats):
        session = f"adaptr-bench-{i}"
        start = time.perf_counter()
        subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "120", "-y", "36",
                        "-e", f"ADAPTR_REGISTRY={root}", "-e", "COLUMNS=120", "-e", "LINES=36",
                        str(exe), "tui"], check=True)
        try:
            while time.perf_counter() - start < 30:
                screen = subprocess.run([tmux, "capture-pane", "-p", "-t", session],
                                        capture_output=True, text=True).stdout
                if "versions (" in screen and "chain" in screen:
                    walls.append(time.perf_counter() - start)
                    break
                time.sleep(0.01)
        finally:
            subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)
    return {"wall_s": _summary(walls)} if walls else None


async def _interactive(root: Path, presses: int) -> dict:
    from adaptr.tui import make_app

    app = make_app(root)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        table = screen.query_one("AdapterTable")
        page_down = []
        page_down_cpu = []
        for _ in range(presses):
            start, cpu = time.perf_counter(), time.process_time()
            await pilot.press("pagedown")
            await pilot.pause()
            page_down.append(time.perf_counter() - start)
            page_down_cpu.append(time.process_time() - cpu)
        rows_after_paging = table.row_count
        start, cpu = time.perf_counter(), time.process_time()
        await pilot.press("ctrl+end")
        await pilot.pause()
        to_end, to_end_cpu = time.perf_counter() - start, time.process_time() - cpu
        rows_at_end = table.row_count
        start = time.perf_counter()
        screen.set_filter("chain7-v3")
        await pilot.pause()
        filtered = time.perf_counter() - start
        start = time.perf_counter()
        screen.set_filter("")
        await pilot.pause()
        cleared = time.perf_counter() - start
        return {"pagedown_s": _summary(page_down), "pagedown_cpu_s": _summary(page_down_cpu),
                "pagedown_presses": presses,
                "rows_loaded_after_paging": rows_after_paging,
                "ctrl_end_to_last_row_s": round(to_end, 4), "ctrl_end_cpu_s": round(to_end_cpu, 4),
                "rows_loaded_at_end": rows_at_end,
                "filter_one_match_s": round(filtered, 4), "filter_clear_s": round(cleared, 4)}


def _summary(values: list[float]) -> dict:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {"median": round(statistics.median(ordered), 4), "min": round(ordered[0], 4),
            "max": round(ordered[-1], 4), "p95": round(p95, 4), "n": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--names", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "registry"
        start = time.perf_counter()
        with Registry.init(root) as registry:
            generate(registry, args.versions, args.names)
        result = {
            "benchmark": "tui",
            "versions": args.versions,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "generate_s": round(time.perf_counter() - start, 3),
            "cold_start": cold_start(root, args.repeats),
            "terminal": terminal_first_paint(root, args.repeats),
            "scroll": asyncio.run(_interactive(root, args.presses)),
        }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
