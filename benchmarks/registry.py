"""Registry benchmark: a generated registry of 100,000 versions, timed queries, CLI cold start.

    python benchmarks/registry.py                    # JSON on stdout
    python benchmarks/registry.py --versions 20000   # smaller
    python benchmarks/registry.py --docs             # also rewrite "## Registry" in docs/performance.md

The registry is generated with plain SQL inserts into the real schema (a registry made by
``Registry.init``, so every migration and index is in place), in one transaction: publishing
100,000 versions through ``publish_adapter`` would mostly measure hashing and fsync of files that
these queries never read. Its shape:

- ``deep``: one chain of ``--depth`` versions (``deep-v1`` ... ``deep-v1000``), each continued from
  the one before: the deepest ancestors and descendants.
- ``hub-v1`` with ``--fanout`` children (``fan0-v1`` ...), each stacked on it: the widest node.
- the rest: names of 5-40 versions continuing each other, 5% of them also merged from one of
  the 2,000 versions before (a DAG, not a forest), an alias ``prod`` on each name's newest
  version; two bases (one derived, merged from a version of ``deep``, with 10% of the names
  trained on it).

Timings are of the Registry methods the CLI and TUI call (``adapters``, ``resolve``,
``ancestors``, ``descendants``), in a warm process, plus the wall time of the real ``adaptr ls``
command in a fresh process (Python start-up included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
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


def generate(reg: Registry, versions: int, depth: int, fanout: int, seed: int = 0) -> dict:
    """Insert ``versions`` adapter versions with the shape described above; return key nodes."""
    rng = random.Random(seed)
    nodes, adapters, edges, aliases = [], [], [], []
    next_id = 1
    clock = [0]

    def stamp() -> str:
        clock[0] += 1
        seconds = clock[0]
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_700_000_000 + seconds)) + ".000+00:00"

    def add(name: str, version: int, base_id: int, stage: str) -> int:
        nonlocal next_id
        node = next_id
        next_id += 1
        nodes.append((node, "adapter"))
        adapters.append((node, name, version, base_id, stage, "ready", f"adapters/{name}/v{version}",
                         f"{node:064x}", "{}", "{}", "{}", stamp()))
        return node

    base_id, next_id = next_id, next_id + 1
    nodes.append((base_id, "base"))
    previous = None
    for v in range(1, depth + 1):
        node = add("deep", v, base_id, "sft")
        if previous:
            edges.append((node, previous, "continued", 0))
        previous = node
    deepest, deep_root = previous, base_id + 1
    hub = add("hub", 1, base_id, "sft")
    for i in range(fanout):
        edges.append((add(f"fan{i}", 1, base_id, "dpo"), hub, "stacked", 0))
    derived_id, next_id = next_id, next_id + 1
    nodes.append((derived_id, "base"))
    edges.append((derived_id, deep_root + depth // 2, "merged", 0))
    recent: list[int] = []  # merge sources come from the last ~2,000 versions of ordinary names
    name_index = 0
    while len(adapters) < versions:
        name, name_index = f"n{name_index}", name_index + 1
        length = min(rng.randint(5, 40), versions - len(adapters))
        on = derived_id if rng.random() < 0.1 else base_id
        previous = None
        for v in range(1, length + 1):
            node = add(name, v, on, rng.choice(("sft", "dpo", "import")))
            if previous:
                edges.append((node, previous, "continued", 0))
            if recent and rng.random() < 0.05:
                other = rng.choice(recent[-2000:])
                if other != previous:
                    edges.append((node, other, "merged", 1))
            recent.append(node)
            previous = node
        aliases.append((name, "prod", previous, stamp()))

    with reg.write() as db:
        db.conn.executemany("INSERT INTO nodes (id, kind) VALUES (?, ?)", nodes)
        db.conn.executemany(
            "INSERT INTO bases (id, name, source, source_kind, path, owned, created_at) VALUES "
            "(?, ?, ?, ?, ?, ?, ?)",
            [(base_id, "bench", "/models/bench", "local", "/models/bench", 0, stamp()),
             (derived_id, "bench-merged", "merge:deep", "derived", "bases/bench-merged", 1, stamp())])
        db.conn.executemany(
            "INSERT INTO adapters (id, name, version, base_id, stage, status, path, sha256, config, "
            "record, metrics, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", adapters)
        db.conn.executemany("INSERT INTO edges (child, parent, relation, position) VALUES (?, ?, ?, ?)",
                            edges)
        db.conn.executemany("INSERT INTO aliases (name, alias, adapter_id, created_at) VALUES (?, ?, ?, ?)",
                            aliases)
        db.conn.execute("INSERT INTO adapter_names (name, last_version) "
                        "SELECT name, MAX(version) FROM adapters GROUP BY name")
    return {"deepest": deepest, "deep_root": deep_root, "hub": hub, "fan_child": hub + 1,
            "edges": len(edges), "names": name_index + 2 + fanout}


def _p95(samples: list[float]) -> float:
    return sorted(samples)[min(len(samples) - 1, int(len(samples) * 0.95))]


def timed(fn, repeat: int) -> dict:
    """Wall-clock and CPU-time percentiles (CPU time is what a busy shared machine distorts least)."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return {"p50_ms": round(statistics.median(wall), 3), "p95_ms": round(_p95(wall), 3),
            "cpu_p50_ms": round(statistics.median(cpu), 3), "cpu_p95_ms": round(_p95(cpu), 3),
            "runs": repeat}


def cold_start(root: Path, argv: list[str], runs: int) -> dict:
    exe = shutil.which("adaptr", path=str(Path(sys.executable).parent)) or "adaptr"
    env = {**os.environ, "ADAPTR_REGISTRY": str(root)}
    wall, cpu = [], []
    for _ in range(runs + 1):
        before = os.times()
        start = time.perf_counter()
        proc = subprocess.run([exe, *argv], capture_output=True, text=True, env=env)
        wall.append((time.perf_counter() - start) * 1000)
        after = os.times()
        cpu.append((after.children_user + after.children_system
                    - before.children_user - before.children_system) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"adaptr {' '.join(argv)} failed: {proc.stderr}")
    wall, cpu = wall[1:], cpu[1:]  # the first run warms the OS file cache
    return {"p50_ms": round(statistics.median(wall), 1), "max_ms": round(max(wall), 1),
            "cpu_p50_ms": round(statistics.median(cpu), 1), "runs": runs}


def reference_loop_ms() -> float:
    """CPU time of a fixed pure-Python loop: a yardstick for comparing machines and load."""
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        sum(range(1_000_000))
        best = min(best, (time.process_time() - start) * 1000)
    return round(best, 2)


COMMANDS = (["ls"], ["ls", "--json"], ["show", "deep-v500"],
            ["lineage", "deep", "--json", "--no-bases"], ["lineage", "hub"])


def time_queries(reg: Registry, key: dict, repeat: int, fanout: int) -> dict:
    """The Registry calls behind ls, show and lineage, on the deepest and widest nodes."""
    rng = random.Random(1)
    refs = iter([f"n{rng.randrange(key['names'] - fanout - 2)}" for _ in range(repeat)])
    return {
        "ls_first_page": timed(lambda: (reg.adapters(limit=50), reg.count_adapters()), repeat),
        "ls_first_page_filtered": timed(lambda: reg.adapters(stage="dpo", base="bench", limit=50), repeat),
        "show": timed(lambda: reg.resolve(next(refs)), repeat),
        "ancestors_deepest": timed(lambda: reg.ancestors(key["deepest"]), repeat),
        "descendants_deep_root": timed(lambda: reg.descendants(key["deep_root"]), repeat),
        "descendants_widest": timed(lambda: reg.descendants(key["hub"]), repeat),
        "ancestors_fan_child": timed(lambda: reg.ancestors(key["fan_child"]), repeat),
        "ancestors_deepest_with_bases": timed(lambda: reg.ancestors(key["deepest"], bases=True), repeat),
    }


def run(args) -> dict:
    load_before = os.getloadavg()
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="adaptr-bench-"))
    root = workdir / "registry"
    if root.exists():
        shutil.rmtree(root)
    reg = Registry.init(root)
    start = time.perf_counter()
    key = generate(reg, args.versions, args.depth, args.fanout)
    generated_s = time.perf_counter() - start
    results = time_queries(reg, key, args.repeat, args.fanout)
    sizes = {"ancestors_deepest": len(reg.ancestors(key["deepest"])),
             "descendants_deep_root": len(reg.descendants(key["deep_root"])),
             "descendants_widest": len(reg.descendants(key["hub"]))}
    reg.close()
    cli = {"adaptr " + " ".join(argv): cold_start(root, argv, args.cli_runs) for argv in COMMANDS}
    db_mb = (root / "adaptr.db").stat().st_size / 1e6
    if not args.dir:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "reference_loop_ms": reference_loop_ms(),
                    "load_average_before": [round(x, 1) for x in load_before],
                    "load_average": [round(x, 1) for x in os.getloadavg()]},
        "registry": {"versions": args.versions, "edges": key["edges"], "depth": args.depth,
                     "fanout": args.fanout, "generate_s": round(generated_s, 2), "db_mb": round(db_mb, 1)},
        "edges_returned": sizes, "queries": results, "cold_start": cli,
    }


def write_docs(report: dict) -> None:
    path = REPO / "docs" / "performance.md"
    text = (path.read_text() if path.exists()
            else "# Performance\n\nMeasured figures; each section says how to reproduce them.\n")
    q, c, r = report["queries"], report["cold_start"], report["registry"]
    rows = "\n".join(f"| {name} | {v['p50_ms']:.2f} | {v['p95_ms']:.2f} | {v['cpu_p50_ms']:.2f} | "
                     f"{v['cpu_p95_ms']:.2f} |" for name, v in q.items())
    load = ", ".join(f"{x:.1f}" for x in report["machine"]["load_average"])
    section = f"""## Registry

`python benchmarks/registry.py --docs` generates a registry of {r['versions']:,} versions and
{r['edges']:,} lineage edges (a chain {r['depth']} deep, a node with {r['fanout']} children, and
names of 5-40 versions with 5% extra merge edges) by SQL inserts into the real schema, then times
the Registry calls behind `ls`, `show` and `lineage` ({q['show']['runs']} runs each, warm process)
and the real `adaptr` commands in fresh processes. Machine: {report['machine']['cpus']} CPUs,
Python {report['machine']['python']}, load average {load} at the end of the run, reference loop
(`sum(range(10**6))`, CPU) {report['machine']['reference_loop_ms']} ms; database {r['db_mb']} MB.
CPU time is given beside wall time because it is what a busy shared machine distorts least.

| query | p50 ms | p95 ms | CPU p50 ms | CPU p95 ms |
| --- | --- | --- | --- | --- |
{rows}

| command (fresh process) | wall p50 ms | wall max ms | CPU p50 ms |
| --- | --- | --- | --- |
""" + "\n".join(f"| `{name}` | {v['p50_ms']:.0f} | {v['max_ms']:.0f} | {v['cpu_p50_ms']:.0f} |"
                for name, v in c.items()) + """

Lineage walks recurse over nodes with `UNION` (each node is visited once, however many paths
reach it) through the `edges` primary key (child to parent) and the `edges_parent` index (parent
to child); `ls` reads its page through the `adapters_created` index (`created_at, id`), and the
filtered listing through `adapters_base`/`adapters_stage` (the filter column, then `created_at`).
A command's cold start is mostly Python's own start-up and imports (click, pluggy, the plugins);
the queries are a few milliseconds. Two choices keep `adaptr ls` light: sqlite-utils is imported
only by commands that write (it was half of the start-up), and listings are printed as aligned
text rather than through a rich Table (rich took 70-100 ms here to import and lay out 50 rows;
`show`, `lineage` and `doctor` still use rich). No command that reads imports torch,
transformers, peft or trl (`tests/test_startup.py`).

Read the wall columns with the machine in mind: on a shared machine whose reference loop takes
more than 10 ms (CPython 3.11 on an unloaded modern x86 core runs it in about 8-10 ms), wall time
is mostly time spent waiting for a CPU, and the CPU columns are the better guide to what the code
costs.
"""
    start = text.find("## Registry")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("\n" + text[end + 1:] if end != -1 else "")
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=200, help="runs per query")
    parser.add_argument("--cli-runs", type=int, default=10, help="runs per CLI command")
    parser.add_argument("--dir", help="keep the generated registry under this directory")
    parser.add_argument("--docs", action="store_true",
                        help="rewrite the Registry section of docs/performance.md")
    args = parser.parse_args()
    report = run(args)
    print(json.dumps(report, indent=2))
    if args.docs:
        write_docs(report)


if __name__ == "__main__":
    main()
