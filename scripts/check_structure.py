#!/usr/bin/env python3
"""The structure rules ARCHITECTURE.md states, checked (run by scripts/test.sh):

- no module imports a module that imports it (top-level modules of src/,
  and the files inside src/db/ and src/ingest/);
- no SQLite type named outside src/db/;
- no clap in the library (only src/cli.rs, src/config.rs, src/cmd/ and
  src/main.rs, the command-line layer);
- no decision on an error's text: no .contains()/.starts_with() on a value
  named like an error or a message, outside test code.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
failures = []


def code_of(path):
    """The file's text up to its #[cfg(test)] module, without comments."""
    text = path.read_text()
    text = text.split("#[cfg(test)]")[0]
    return "\n".join(re.sub(r"//.*", "", line) for line in text.splitlines())


def module_of(path, depth):
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p != "mod"]
    return "/".join(parts[:depth]) if parts else "lib"


def cycles(files, name, refs):
    graph = {}
    for f in files:
        m = name(f)
        graph.setdefault(m, set()).update(r for r in refs(f) if r != m)
    for a, targets in graph.items():
        for b in targets:
            if a in graph.get(b, ()) and a < b:
                failures.append(f"import cycle: {a} <-> {b}")


def top_names_used(code):
    """Top-level modules a file refers to (`crate::x`, `crate::{x, y::z}`)."""
    found = set()
    for group in re.findall(r"crate::(\{[^}]*\}|\w+)", code):
        found.update(re.findall(r"(?:^|[{,\s])(\w+)", group))
    return found


def names_used(code, sub):
    """Sibling modules a file inside src/<sub>/ refers to."""
    found = set()
    for group in re.findall(rf"(?:super|crate::{sub})::(\{{[^}}]*\}}|\w+)", code):
        found.update(re.findall(r"\w+", group))
    return found


files = sorted(SRC.rglob("*.rs"))
top = {module_of(f, 1) for f in files}
cycles(
    files,
    lambda f: module_of(f, 1),
    lambda f: {m for m in top_names_used(code_of(f)) if m in top},
)
for sub in ("db", "ingest"):
    inner = [f for f in files if f.parent.name == sub]
    names = {f.stem for f in inner} - {"mod"}
    cycles(
        inner,
        lambda f: f.stem,
        lambda f: {m for m in names_used(code_of(f), sub) if m in names},
    )

for f in files:
    rel = f.relative_to(SRC).as_posix()
    code = code_of(f)
    # sqlx's SQLite types (SqlitePool, SqliteConnection, sqlx::Sqlite…);
    # the backend's name as an enum variant (Store::Sqlite) is fine.
    if not rel.startswith("db/") and re.search(r"\bSqlite[A-Z]\w*|\bsqlx::(sqlite|Sqlite)\b", code):
        failures.append(f"src/{rel} names a SQLite type; keep it behind src/db/")
    library = not (rel in ("cli.rs", "config.rs", "main.rs") or rel.startswith("cmd/"))
    if library and re.search(r"\bclap\b", code):
        failures.append(f"src/{rel} uses clap; flags belong in src/cli.rs")
    for n, line in enumerate(code.splitlines(), 1):
        if re.search(r"\b(e|err|error|reason|message|msg)(\.to_string\(\))?\.(contains|starts_with|ends_with)\(", line):
            failures.append(f"src/{rel}:{n} decides on an error's text: {line.strip()}")

for f in failures:
    print(f, file=sys.stderr)
sys.exit(1 if failures else 0)
