#!/usr/bin/env python3
"""The shape check: in every crate the top-level modules form a DAG, no production file is
longer than MAX_LINES (unit-test modules at the end of a file do not count), and every
`docs/...` file the code, scripts or docs cite exists in the repository.

    python3 tests/scripts/shape.py          # check; exit 1 with the cycle or the file
    python3 tests/scripts/shape.py --graph  # also print each crate's modules, leaves first

A module's edges are the `crate::x` paths its files name (in `use` lists, grouped or not,
and in expressions), plus `super::x` from a crate-root file. `#[cfg(test)] mod tests`
blocks are cut off before reading, so a test may use what the module itself must not.
See ARCHITECTURE.md, "Checking the shape".
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRATES = ["policy", "proto", "net", "settings", "control", "agent", "cli", "testkit", "bench"]
MAX_LINES = 600

TEST_MOD = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*mod \w+\s*\{", re.M)
COMMENT = re.compile(r"//[^\n]*")


def production_text(path: pathlib.Path) -> str:
    text = path.read_text()
    cut = TEST_MOD.search(text)
    return text[: cut.start()] if cut else text


def top_modules(src: pathlib.Path) -> set[str]:
    mods = set()
    for p in src.iterdir():
        if p.is_dir():
            mods.add(p.name)
        elif p.suffix == ".rs" and p.stem not in ("lib", "main"):
            mods.add(p.stem)
    return mods


def module_of(src: pathlib.Path, path: pathlib.Path) -> str | None:
    rel = path.relative_to(src)
    if len(rel.parts) == 1:
        return None if rel.stem in ("lib", "main") else rel.stem
    return rel.parts[0]


def brace_group(text: str, start: int) -> str:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return text[start + 1 :]


def top_names(group: str) -> list[str]:
    """`a::b, c, {d}` at depth 0 of a use group -> ['a', 'c']."""
    names, depth, item = [], 0, ""
    for ch in group + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            m = re.match(r"\s*(\w+)", item)
            if m:
                names.append(m.group(1))
            item = ""
        else:
            item += ch
    return names


def references(text: str, prefixes: tuple[str, ...]) -> set[str]:
    text = COMMENT.sub("", text)
    found = set()
    for prefix in prefixes:
        for m in re.finditer(rf"\b{prefix}::", text):
            rest = text[m.end() :]
            if rest.startswith("{"):
                found.update(top_names(brace_group(text, m.end())))
            else:
                n = re.match(r"\w+", rest)
                if n:
                    found.add(n.group(0))
    return found


def graph(crate: str) -> dict[str, set[str]]:
    src = ROOT / crate / "src"
    mods = top_modules(src)
    edges = {m: set() for m in mods}
    for path in src.rglob("*.rs"):
        owner = module_of(src, path)
        if owner is None:
            continue
        text = production_text(path)
        prefixes = ("crate",)
        if len(path.relative_to(src).parts) == 1:
            prefixes += ("super",)
        for name in references(text, prefixes):
            if name in mods and name != owner:
                edges[owner].add(name)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges[n]):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def layers(edges: dict[str, set[str]]) -> list[list[str]]:
    done, out = set(), []
    while len(done) < len(edges):
        layer = sorted(n for n in edges if n not in done and edges[n] <= done)
        out.append(layer)
        done.update(layer)
    return out


CITED = re.compile(r"\bdocs/[A-Za-z0-9_./-]+\.(?:md|txt)")
SOURCES = ("*.rs", "*.py", "*.sh", "*.md", "*.toml", "*.yaml", "*.yml")


def missing_docs() -> list[str]:
    """`docs/...` citations whose file is not in the repository."""
    missing = []
    for pattern in SOURCES:
        for path in ROOT.rglob(pattern):
            rel = path.relative_to(ROOT)
            if rel.parts[0] in ("target", ".git") or "corpus" in rel.parts:
                continue
            for cited in set(CITED.findall(path.read_text(errors="replace"))):
                if not (ROOT / cited).is_file():
                    missing.append(f"{rel}: cites {cited}, which is not in the repository")
    return sorted(missing)


def main() -> int:
    show = "--graph" in sys.argv
    failed = False
    for crate in CRATES:
        src = ROOT / crate / "src"
        if not src.is_dir():
            continue
        edges = graph(crate)
        cycle = find_cycle(edges)
        if cycle:
            print(f"{crate}: module cycle: {' -> '.join(cycle)}")
            failed = True
        elif show:
            print(f"{crate}:")
            for i, layer in enumerate(layers(edges)):
                print(f"  {i}: " + ", ".join(f"{n} -> {{{', '.join(sorted(edges[n]))}}}" if edges[n] else n for n in layer))
        for path in sorted(src.rglob("*.rs")):
            if path.name == "tests.rs" or "tests" in path.relative_to(src).parts[:-1]:
                continue
            n = production_text(path).count("\n")
            if n > MAX_LINES:
                print(f"{path.relative_to(ROOT)}: {n} production lines (at most {MAX_LINES})")
                failed = True
    for line in missing_docs():
        print(line)
        failed = True
    if failed:
        return 1
    print(
        f"shape: {len(CRATES)} crates acyclic, no production file over {MAX_LINES} lines, "
        "every cited docs/ file present"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
