#!/usr/bin/env python3
"""Prints the plan of a crate: its modules by folder, the `crate::` imports between them,
and any import circles (strongly connected groups of modules).

    python3 scripts/module_map.py worker          # summary, folders and circles
    python3 scripts/module_map.py ingest --edges  # also every import arrow
    python3 scripts/module_map.py worker --dot > worker.dot   # a Graphviz picture
    python3 scripts/module_map.py worker --dot --folders | dot -Tpng > worker.png  # by folder

A module is a source file (tests and test fakes excluded: `*_tests.rs`, `tests.rs`,
`testing*.rs`, `*_fake.rs`, `proptests.rs`). An arrow A -> B means A names `crate::B` (or
`super::B`, resolved) outside its `#[cfg(test)]` block. Circles are what no folder plan can
hide, so the check fails (exit 1) when `--no-circles` is given and one exists.
"""
import os
import re
import sys

TEST_FILE = re.compile(r"(_tests\.rs|/tests\.rs|/testing[^/]*\.rs|/testing/[^/]*\.rs|_fake\.rs|/fake\.rs|proptests\.rs)$")


def module_path(src, path):
    rel = os.path.relpath(path, src)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("lib", "main"):
        parts = parts[:-1]
    if parts and parts[-1] == "mod":
        parts = parts[:-1]
    return "::".join(parts)


def strip_tests(text):
    """Drops `#[cfg(test)] mod ... { ... }` blocks and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def load(crate):
    src = os.path.join(crate, "src")
    modules = {}
    for root, _, files in os.walk(src):
        for f in files:
            p = os.path.join(root, f)
            # main.rs is the binary, a crate of its own beside the library.
            if f.endswith(".rs") and not TEST_FILE.search(p) and "/bin/" not in p and f != "main.rs":
                modules[module_path(src, p)] = p
    return modules


def resolve(name, modules):
    """The longest known module prefix of a `a::b::c` path."""
    parts = name.split("::")
    for n in range(len(parts), 0, -1):
        cand = "::".join(parts[:n])
        if cand in modules:
            return cand
    return None


def edges(modules):
    arrows = set()
    for mod, path in modules.items():
        text = strip_tests(open(path, encoding="utf-8").read())
        names = set()
        # use crate::{a, b::c} and crate::a::b
        for m in re.finditer(r"crate::\{([^;]*?)\}", text):
            for item in re.split(r",", m.group(1)):
                item = item.strip().split(" ")[0]
                if item:
                    names.add(item.strip("{} "))
        for m in re.finditer(r"crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
            names.add(m.group(1))
        base = mod.split("::") if mod else []
        for m in re.finditer(r"\b((?:super::)+)\{([^;]*?)\}", text):
            up = m.group(1).count("super::")
            for item in m.group(2).split(","):
                item = item.strip().split(" ")[0].strip("{} ")
                if item:
                    names.add("::".join(base[: max(len(base) - up, 0)] + [item]))
        for m in re.finditer(r"\b((?:super::)+)([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
            up = m.group(1).count("super::")
            names.add("::".join(base[: max(len(base) - up, 0)] + [m.group(2)]))
        for n in names:
            target = resolve(n, modules)
            if target is not None and target != mod and target != "" and not mod.startswith(target + "::"):
                arrows.add((mod, target))
    return arrows


def circles(modules, arrows):
    """Tarjan's strongly connected components of size > 1."""
    graph = {m: [] for m in modules}
    for a, b in arrows:
        graph[a].append(b)
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        return 2
    crate = args[0]
    modules = load(crate)
    arrows = edges(modules)
    def folder_of(m):
        if "::" in m or os.path.basename(modules[m]) == "mod.rs":
            return m.split("::")[0] + "/"
        return m or "lib"

    if "--dot" in args and "--folders" in args:
        counts = {}
        for a, b in arrows:
            fa, fb = folder_of(a), folder_of(b)
            if fa != fb:
                counts[(fa, fb)] = counts.get((fa, fb), 0) + 1
        print("digraph %s {\n  rankdir=LR; node [shape=box,fontsize=11];" % crate)
        for f in sorted({folder_of(m) for m in modules}):
            inside = sum(1 for m in modules if folder_of(m) == f)
            print('  "%s" [label="%s\\n%d module%s"];' % (f, f, inside, "" if inside == 1 else "s"))
        for (a, b), n in sorted(counts.items()):
            print('  "%s" -> "%s" [label="%d",fontsize=9];' % (a, b, n))
        print("}")
        return 0
    if "--dot" in args:
        print("digraph %s {\n  rankdir=LR; node [shape=box,fontsize=10];" % crate)
        folders = {}
        for m in modules:
            folders.setdefault(m.rsplit("::", 1)[0] if "::" in m else "", []).append(m)
        for folder, mods in sorted(folders.items()):
            if folder:
                print('  subgraph "cluster_%s" { label="%s/";' % (folder, folder.replace("::", "/")))
            for m in sorted(mods):
                print('    "%s";' % (m or "lib"))
            if folder:
                print("  }")
        for a, b in sorted(arrows):
            print('  "%s" -> "%s";' % (a or "lib", b or "lib"))
        print("}")
        return 0
    folders = {}
    for m, p in modules.items():
        folders.setdefault(os.path.dirname(os.path.relpath(p, os.path.join(crate, "src"))) or ".", []).append(m)
    lines = sum(sum(1 for _ in open(p, encoding="utf-8")) for p in modules.values())
    print("%s: %d modules, %d lines (tests excluded), %d import arrows, %d folders"
          % (crate, len(modules), lines, len(arrows), len(folders)))
    for folder, mods in sorted(folders.items()):
        print("  %-12s %2d  %s" % (folder + "/", len(mods), " ".join(sorted(m.rsplit("::", 1)[-1] or "lib" for m in mods))))
    found = circles(modules, arrows)
    print("import circles: %d" % len(found))
    for group in found:
        print("  " + " <-> ".join(group))
    folders_of = {folder_of(m): None for m in modules}
    folder_arrows = {(folder_of(a), folder_of(b)) for a, b in arrows if folder_of(a) != folder_of(b)}
    found_folders = circles(folders_of, folder_arrows)
    print("folder circles: %d" % len(found_folders))
    for group in found_folders:
        print("  " + " <-> ".join(group))
    found += found_folders
    if "--edges" in args:
        for a, b in sorted(arrows):
            print("  %s -> %s" % (a or "lib", b or "lib"))
    if "--no-circles" in args and found:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
