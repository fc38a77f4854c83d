#!/usr/bin/env python3
"""The structure rules ARCHITECTURE.md states, checked (run by scripts/test.sh):

- the layer rule: a top-level module of src/ uses only modules of the
  layers below its own (LAYERS, as ARCHITECTURE.md draws them), which also
  rules out import cycles among them;
- no import cycle of any length among the files of src/db/ and src/ingest/;
- no backend type named outside src/db/: neither sqlx's SQLite or
  PostgreSQL types nor the cinecut-postgres crate's (EXCEPTIONS says where
  and why one still is);
- no source file over 650 lines, no function over 100 (EXCEPTIONS again);
- no clap in the library (only src/cli.rs, src/config.rs, src/cmd/ and
  src/main.rs, the command-line layer);
- no decision on an error's text: no .contains()/.starts_with() on a value
  named like an error or a message, outside test code.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
# Every crate of the workspace whose size is held to the limits.
SOURCES = [SRC, ROOT / "postgres" / "src", ROOT / "types" / "src"]

# Top down; a module may use the modules of the layers below its own.
LAYERS = [
    ["main", "lib"],
    ["cmd"],
    ["config"],
    ["cli"],
    ["report", "worker"],
    ["engine", "ingest"],
    ["weights", "vision"],
    ["db"],
    ["error"],
    ["server", "gpu", "frame", "profile", "gguf", "hf"],
    ["process"],
]

MAX_FILE_LINES = 650
MAX_FN_LINES = 100

# Where a rule does not hold yet, and why. Each entry is (rule, path or
# path:function) -> the reason; an entry that no longer matches anything
# fails the check, so the list only shrinks.
EXCEPTIONS = {
    ("backend", "src/error.rs"): "Error::Postgres keeps the PostgreSQL crate's error as its source, as Error::Sqlx keeps sqlx's",
    ("file", "src/profile.rs"): "a profile's fields, schema and validation, with their unit tests",
    ("file", "src/vision.rs"): "one request and its error kinds, with their unit tests",
    ("file", "src/cli.rs"): "every command's flags and their help",
    ("file", "src/worker.rs"): "the worker loop and its session's events",
    ("file", "postgres/src/queue.rs"): "the PostgreSQL queue's statements",
    ("fn", "src/ingest/extract.rs:extract_shots"): "scene mode's boundaries pass and pick readers in one loop",
    ("fn", "src/ingest/film.rs:enqueue_video"): "probe, identity, extraction and undo of one video",
    ("fn", "src/profile.rs:checked_field"): "one match arm per field kind",
    ("fn", "postgres/src/queue.rs:enqueue"): "one chunk's frames, shots marks and jobs in one transaction",
    ("fn", "postgres/src/queue.rs:settle_in"): "every end of a try in two statements",
}

failures = []
used_exceptions = set()


def excepted(rule, where):
    if (rule, where) in EXCEPTIONS:
        used_exceptions.add((rule, where))
        return True
    return False


def code_of(path):
    """The file's text up to its #[cfg(test)] module, without comments."""
    text = path.read_text()
    text = text.split("#[cfg(test)]")[0]
    return "\n".join(re.sub(r"//.*", "", line) for line in text.splitlines())


def module_of(path, depth):
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p != "mod"]
    return "/".join(parts[:depth]) if parts else "lib"


def cycles(graph, what):
    """Every import cycle of `graph` (module -> modules it uses), any length."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                failures.append(f"import cycle in {what}: {' -> '.join(cycle)}")
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def groups(code, prefix):
    """What follows each `prefix::` in `code`: a name, or a whole
    `{…}` group with its nested groups (matched brace by brace)."""
    out = []
    for m in re.finditer(rf"{prefix}::", code):
        rest = code[m.end():]
        if rest.startswith("{"):
            depth = 0
            for i, ch in enumerate(rest):
                depth += {"{": 1, "}": -1}.get(ch, 0)
                if depth == 0:
                    out.append(rest[: i + 1])
                    break
        else:
            name = re.match(r"\w+", rest)
            if name:
                out.append(name.group(0))
    return out


def first_names(group):
    """The first segment of each path in a `use` group: `{a::b, c}` gives
    a and c, not b; a plain name gives itself."""
    if not group.startswith("{"):
        return {group}
    found, depth, start = set(), 0, True
    for token in re.findall(r"\w+|::|[{},]", group):
        if token == "{":
            depth += 1
            start = depth == 1
        elif token == "}":
            depth -= 1
        elif token == ",":
            start = depth == 1
        elif token != "::" and start:
            found.add(token)
            start = False
        elif token == "::":
            start = False
    return found


def top_names_used(code):
    """Top-level modules a file refers to (`crate::x`, `crate::{x, y::{z}}`)."""
    found = set()
    for group in groups(code, "crate"):
        found.update(first_names(group))
    return found


def names_used(code, sub):
    """Sibling modules a file inside src/<sub>/ refers to."""
    found = set()
    for prefix in ("super", rf"crate::{sub}"):
        for group in groups(code, prefix):
            found.update(first_names(group))
    return found


def functions(text):
    """(name, first line, line count) of every fn with a body in `text`."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)", line)
        if not m:
            continue
        depth, opened = 0, False
        for j in range(i, len(lines)):
            code = re.sub(r"//.*", "", lines[j])
            code = re.sub(r'"(\\.|[^"\\])*"', '""', code)
            code = re.sub(r"'(\\.|[^'\\])'", "''", code)
            if not opened and ";" in code and "{" not in code:
                break  # a declaration without a body
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if opened and depth <= 0:
                out.append((m.group(1), i + 1, j - i + 1))
                break
    return out


files = sorted(SRC.rglob("*.rs"))
layer_of = {m: n for n, layer in enumerate(LAYERS) for m in layer}
top = {module_of(f, 1) for f in files}
for m in sorted(top - layer_of.keys()):
    failures.append(f"src/{m}: in no layer; add it to LAYERS (scripts/check_structure.py) and ARCHITECTURE.md")
graph = {}
for f in files:
    m = module_of(f, 1)
    used = {u for u in top_names_used(code_of(f)) if u in top and u != m}
    graph.setdefault(m, set()).update(used)
    for u in sorted(used):
        if m in layer_of and u in layer_of and layer_of[u] <= layer_of[m]:
            failures.append(
                f"src/{f.relative_to(SRC).as_posix()}: {m} uses {u}, which is not below it "
                "(the layer rule, ARCHITECTURE.md)"
            )
cycles(graph, "src/")
for sub in ("db", "ingest"):
    inner = [f for f in files if f.parent.name == sub]
    names = {f.stem for f in inner} - {"mod"}
    sub_graph = {}
    for f in inner:
        sub_graph.setdefault(f.stem, set()).update(
            m for m in names_used(code_of(f), sub) if m in names and m != f.stem
        )
    cycles(sub_graph, f"src/{sub}/")

BACKEND = re.compile(
    r"\bSqlite[A-Z]\w*|\bsqlx::(sqlite|Sqlite|postgres|Postgres)\b|\bPg[A-Z]\w*|\bcinecut_postgres\b"
    r"|\bdb::pg\b|\bsqlx::\{[^}]*\b(sqlite|Sqlite|postgres|Postgres)\b|\bdb::\{[^}]*\bpg\b"
)
for f in files:
    rel = f.relative_to(SRC).as_posix()
    code = code_of(f)
    # The backends' names as enum variants (Loader::Sqlite) are fine.
    if not rel.startswith("db/") and BACKEND.search(code) and not excepted("backend", f"src/{rel}"):
        failures.append(f"src/{rel} names a backend's type; keep it behind src/db/")
    library = not (rel in ("cli.rs", "config.rs", "main.rs") or rel.startswith("cmd/"))
    if library and re.search(r"\bclap\b", code):
        failures.append(f"src/{rel} uses clap; flags belong in src/cli.rs")
    for n, line in enumerate(code.splitlines(), 1):
        if re.search(r"\b(e|err|error|reason|message|msg)(\.to_string\(\))?\.(contains|starts_with|ends_with)\(", line):
            failures.append(f"src/{rel}:{n} decides on an error's text: {line.strip()}")

for root in SOURCES:
    for f in sorted(root.rglob("*.rs")):
        rel = f.relative_to(ROOT).as_posix()
        text = f.read_text()
        n = len(text.splitlines())
        if n > MAX_FILE_LINES and not excepted("file", rel):
            failures.append(f"{rel}: {n} lines (at most {MAX_FILE_LINES}); split it, or say why in EXCEPTIONS")
        for name, line, count in functions(text.split("#[cfg(test)]")[0]):
            if count > MAX_FN_LINES and not excepted("fn", f"{rel}:{name}"):
                failures.append(
                    f"{rel}:{line}: fn {name} is {count} lines (at most {MAX_FN_LINES}); "
                    "split it, or say why in EXCEPTIONS"
                )

for stale in sorted(EXCEPTIONS.keys() - used_exceptions):
    failures.append(f"EXCEPTIONS {stale}: the rule holds there now; remove the entry")

for f in failures:
    print(f, file=sys.stderr)
sys.exit(1 if failures else 0)
