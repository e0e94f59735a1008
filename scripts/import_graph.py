#!/usr/bin/env python3
"""The shared crate's import graph, module by module, and its cycles.

    scripts/import_graph.py            # prints each module's imports, then any cycle; exit 1 on a cycle

A module is a file under shared/src (`store/dynamo.rs` is `store::dynamo`, `store/mod.rs` is
`store`). An edge A -> B is a path `crate::B...` or `super::...` in A's code outside its
`#[cfg(test)]` module, resolved to the longest module that exists. A parent module's own
`pub use`/`mod` of its children is not an edge (it is how Rust exposes them).
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "shared" / "src"


def module_of(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return "::".join(parts)


def code_without_tests(text):
    cut = re.search(r"#\[cfg\(test\)\]\s*mod tests", text)
    return text[: cut.start()] if cut else text


def expand(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"] (aliases and `self` handled)."""
    tree = tree.strip()
    depth, brace = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                brace = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if brace is None:
        return [re.split(r"\s+as\s+", tree)[0].strip()]
    prefix, inner = tree[:brace].rstrip(":"), tree[brace + 1 : tree.rindex("}")]
    parts, depth, current = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        current += ch
    parts.append(current)
    out = []
    for part in filter(str.strip, parts):
        for sub in expand(part):
            out.append(prefix if sub == "self" else f"{prefix}::{sub}" if prefix else sub)
    return out


def paths_in(text):
    """Every `crate::`/`super::` path a module names: in `use` trees and inline."""
    found = []
    for use in re.finditer(r"\buse\s+([^;]+);", text):
        found += [p for p in expand(use.group(1)) if p.startswith(("crate::", "super::"))]
    text = re.sub(r"\buse\s+[^;]+;", "", text)
    found += [m.group(0) for m in re.finditer(r"\b(?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+", text)]
    return found


def main():
    modules = {module_of(p): p for p in SRC.rglob("*.rs")}
    names = set(modules)
    edges = {m: set() for m in names}
    for m, path in modules.items():
        text = re.sub(r"//[^\n]*", "", code_without_tests(path.read_text()))
        here = m.split("::") if m else []
        # `super` of `a::b` (file a/b.rs or a/b/mod.rs) is `a`.
        parent = here[:-1]
        for p in paths_in(text):
            segments = [s for s in p.split("::") if s]
            base = [] if segments[0] == "crate" else parent
            rest = segments[1:]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
            candidate = base + rest
            target = None
            for n in range(len(candidate), 0, -1):
                name = "::".join(candidate[:n])
                if name in names:
                    target = name
                    break
            if target is None or target == m:
                continue
            # a parent exposing or using its own children is structure, not a dependency
            if m == "" or target.startswith(m + "::"):
                continue
            edges[m].add(target)
    for m in sorted(edges):
        if edges[m]:
            print(f"{m} -> {', '.join(sorted(edges[m]))}")
    cycles = find_cycles(edges)
    if cycles:
        print("\ncycles:")
        for c in cycles:
            print("  " + " <-> ".join(c))
        sys.exit(1)
    print("\nno cycles")


def find_cycles(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    main()
