"""The key table of docs/CONFIG.md, rendered from the config schema: every leaf key, its default,
what it accepts and what it means (the comments beside the field in ``udas_ray/config.py``).

    python -m udas_ray.keys_table --keys-table --write docs/CONFIG.md

``--write`` without a file writes docs/CONFIG.md (relative to the current folder, the repository
root), between its ``<!-- keys:start -->`` / ``<!-- keys:end -->`` markers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_origin

from pydantic import BaseModel

from udas_ray import config
from udas_ray.config import Config
from udas_ray.errors import UdasError

KEYS_START, KEYS_END = "<!-- keys:start -->", "<!-- keys:end -->"
KEYS_DOC = "docs/CONFIG.md"  # where the table lives; a test fails when it is stale there


def _field_comments() -> dict[tuple[str, str], str]:
    """``{(class, field): comment}`` from this file's source: the comment lines right above a
    field and the one at its end. Comments are where the schema is documented, so the table
    reads them rather than asking every field for a ``description=`` as well."""
    import ast
    import io
    import tokenize

    source = Path(config.__file__).read_text()
    lines = source.splitlines()
    comments = {t.start[0]: t.string.lstrip("#").strip()
                for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}
    found = {}
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for node in cls.body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            above, line = [], node.lineno - 1
            while line >= 1 and lines[line - 1].lstrip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            at_end = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
            found[(cls.name, node.target.id)] = " ".join(above + at_end)
    return found


def _allowed_values(field) -> str:
    """A field's choices (Literal) or bounds (ge/gt/le/lt), plus "or null" when optional."""
    from typing import get_args

    args = get_args(field.annotation)
    literal = next((a for a in (field.annotation, *args) if get_origin(a) is Literal), None)
    parts = []
    if literal is not None:
        parts.append(", ".join(f"`{c if isinstance(c, str) else json.dumps(c)}`" for c in get_args(literal)))
    for rule in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if hasattr(rule, attr):
                parts.append(f"{sign} {getattr(rule, attr):g}")
    text = ", ".join(parts)
    if type(None) in args:
        text = f"{text} or null" if text else "or null"
    return text


def keys_table() -> str:
    """Every leaf key of the schema as a Markdown table: key, default, allowed values, meaning
    (a field's ``description=`` if it has one, else its comments in this file). A section with
    a docstring gets a ``section.*`` row of its own above its keys."""
    import re

    comments = _field_comments()
    rows = ["| key | default | values | meaning |", "| --- | --- | --- | --- |"]

    def row(*cells: str) -> None:  # no cell may end the row early or open an HTML tag
        rows.append("| " + " | ".join(re.sub(r"<(?=[A-Za-z/!?])", "&lt;", c.replace("|", "\\|")) for c in cells) + " |")

    def walk(model: type[BaseModel], tree: dict, prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                if ann.__doc__:
                    row(f"`{prefix}{name}.*`", "", "", " ".join(ann.__doc__.split()).replace("``", "`"))
                walk(ann, tree[name], f"{prefix}{name}.")
                continue
            value = tree[name]
            shown = value if isinstance(value, str) else json.dumps(value)
            meaning = field.description or comments.get((model.__name__, name), "")
            row(f"`{prefix}{name}`", f"`{shown}`", _allowed_values(field), meaning)

    walk(Config, Config().to_dict(), "")
    return "\n".join(rows)


def write_keys_table(doc: str | Path) -> None:
    """Put :func:`keys_table` between ``doc``'s keys markers (replacing what was there)."""
    import re

    doc = Path(doc)
    text, found = re.subn(rf"({KEYS_START}\n).*?({KEYS_END})", lambda m: m.group(1) + keys_table() + "\n" + m.group(2),
                          doc.read_text(), flags=re.S)
    if not found:
        raise UdasError(f"{doc}: no {KEYS_START} / {KEYS_END} markers to write the key table between")
    doc.write_text(text)


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m udas_ray.keys_table", description="The config schema's key table.")
    parser.add_argument("--keys-table", action="store_true", help="print every key, its default and meaning (Markdown)")
    parser.add_argument("--write", metavar="DOC", nargs="?", const=KEYS_DOC,
                        help=f"put the table between DOC's keys markers instead (default DOC: {KEYS_DOC})")
    args = parser.parse_args()
    if not args.keys_table:
        parser.error("nothing to do: give --keys-table")
    try:
        write_keys_table(args.write) if args.write else print(keys_table())
    except UdasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
