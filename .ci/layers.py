#!/usr/bin/env python3
"""Fails on an import against bedside's layering (README, "Who may import whom").

Every `crate::<module>` path in `src/` is an edge from the file's top-level module to
`<module>`. An edge to a module of a higher layer (towards the HTTP edge) fails, and so does a
circle between top-level modules (two modules of one layer importing each other), and so does
one HTTP surface importing another (`http` is the shared one). Comments are
skipped; code in `#[cfg(test)]` modules counts like any other.

Usage: .ci/layers.py [--print]   (--print: the module graph, one edge a line)
"""

from __future__ import annotations

import pathlib
import re
import sys

# Lower number = nearer the leaf. A module may import its own layer and every lower one.
LAYERS: dict[str, tuple[int, str]] = {}
for rank, name, modules in [
    (0, "contract and leaf helpers", ["cds", "html", "metrics", "telemetry"]),
    (1, "record", ["store", "audit", "report"]),
    (2, "data/compute", ["fhir", "features", "inference"]),
    (3, "policy", ["services", "cards", "governance"]),
    (4, "HTTP edges", ["http", "hooks", "smart", "api", "admin"]),
    (5, "composition root and tools", ["server", "config", "main", "demo", "conformance", "probe", "fuzz_targets", "lib"]),
]:
    for m in modules:
        LAYERS[m] = (rank, name)

# The HTTP surfaces never import one another; what they share lives in `http`.
EDGES = {"http", "hooks", "smart", "api", "admin"}

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
PATH = re.compile(r"\bcrate::(\w+)")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs") if len(rel.parts) > 1 else rel.stem


def code_of(text: str) -> str:
    """The text without `//` comments (doc comments included) and string literals."""
    out = []
    for line in text.splitlines():
        line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
        out.append(line.split("//", 1)[0])
    return "\n".join(out)


def edges() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        source = module_of(path)
        code = code_of(path.read_text())
        targets = set(PATH.findall(code))
        for group in GROUP.findall(code):
            targets.update(t.strip().split("::")[0] for t in group.split(",") if t.strip())
        for target in targets:
            if target and target != source and target not in ("self", "super"):
                found.setdefault((source, target), []).append(str(path.relative_to(SRC.parent)))
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    found = edges()
    problems = []
    graph: dict[str, set[str]] = {}
    for (source, target), files in sorted(found.items()):
        graph.setdefault(source, set()).add(target)
        if "--print" in sys.argv:
            print(f"{source} -> {target}  ({', '.join(sorted(set(files)))})")
        for m in (source, target):
            if m not in LAYERS:
                problems.append(f"module `{m}` has no layer: add it to .ci/layers.py and README")
        if source in EDGES and target in EDGES and target != "http":
            problems.append(
                f"one HTTP surface imports another: {source} -> {target} in "
                + ", ".join(sorted(set(files)))
                + " (shared pieces belong in http/)"
            )
        if source in LAYERS and target in LAYERS and LAYERS[target][0] > LAYERS[source][0]:
            problems.append(
                f"upward import: {source} ({LAYERS[source][1]}) -> {target} ({LAYERS[target][1]}) in "
                + ", ".join(sorted(set(files)))
            )
    for comp in circles(graph):
        problems.append("circle between modules: " + " <-> ".join(comp))
    for p in sorted(set(problems)):
        print(f"layers: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"layers: {len(found)} module imports, none upward, no circle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
