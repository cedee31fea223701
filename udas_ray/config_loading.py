"""Loading a config: YAML files (with ``extends``), dotted ``key=value`` overrides, and the check
of a nested dict against a schema with errors that name the key.

Everything here takes the schema (a pydantic model class) as an argument, so that it imports
nothing of the project's own: ``udas_ray.config`` holds the schema and binds these functions to
it (``load_config``, ``validate``); read that module for the keys.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from udas_ray.errors import UdasError


# ---------------------------------------------------------------------------- dotted keys
def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"lambda_adv": 0.01}}`` -> ``{"loss.lambda_adv": 0.01}`` (an empty dict stays a value)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the schema ``model`` (leaves and sections)."""
    keys = []
    for name, field in model.model_fields.items():
        path = prefix + name
        keys.append(path)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(all_keys(ann, path + "."))
    return keys


def section_model(schema: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The section of ``schema`` at ``path``, or None where ``path`` names no section."""
    model = schema
    for part in path:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def unknown_key(schema: type[BaseModel], key: str, origin: str) -> UdasError:
    """The error for an unknown key, with a guess: difflib's closest key catches a typo
    (``loss.lamda_adv``), the keys with the same last segment a left-out section (``lr`` ->
    ``train.lr``, ``style.lr``); when both apply, the close one of those keys alone."""
    keys = all_keys(schema)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    same_leaf = [k for k in keys if k.split(".")[-1] == key.split(".")[-1]]
    guesses = close if not same_leaf or set(close) & set(same_leaf) else same_leaf
    quoted = [repr(g) for g in guesses]
    if len(quoted) > 1:
        quoted = [", ".join(quoted[:-1]) + " or " + quoted[-1]]
    hint = f"; did you mean {quoted[0]}?" if quoted else "; see conf/default.yaml for the valid keys"
    return UdasError(f"{origin}: unknown config key {key!r}{hint}")


def check_keys(schema: type[BaseModel], tree: dict, origin: str, prefix: list[str] | None = None) -> None:
    """Fail on the first key of ``tree`` that ``schema`` does not know (free-form dicts pass)."""
    prefix = prefix or []
    model = section_model(schema, prefix)
    if model is None:
        return
    for key, value in tree.items():
        path = prefix + [str(key)]
        if str(key) not in model.model_fields:
            raise unknown_key(schema, ".".join(path), origin)
        if isinstance(value, dict) and section_model(schema, path) is not None:
            check_keys(schema, value, origin, path)


def _in_mapping(schema: type[BaseModel], path: list[str]) -> bool:
    """True if ``path`` is, or lies inside, a free-form dict field (e.g. ``model.options``)."""
    for j in range(1, len(path) + 1):
        parent = section_model(schema, path[: j - 1])
        if parent is None:
            return False
        field = parent.model_fields.get(path[j - 1])
        if field is not None and get_origin(field.annotation) is dict:
            return True
    return False


def set_dotted(schema: type[BaseModel], tree: dict, key: str, value: Any, origin: str) -> None:
    """Set ``key`` (dotted) in the nested ``tree``, making the sections on the way; an unknown
    section fails naming the key."""
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            if section_model(schema, parts[: i + 1]) is None and not _in_mapping(schema, parts[: i + 1]):
                raise unknown_key(schema, key, origin)
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UdasError(f"{origin}: {'.'.join(parts[: i + 1])} is a value, not a section; cannot set {key!r}")
        node = child
    node[parts[-1]] = value


def validate(schema: type[BaseModel], tree: dict, origin: str = "config"):
    """Check a nested dict against ``schema``; an instance of it, or a UdasError naming the first bad key."""
    if not isinstance(tree, dict):
        raise UdasError(f"{origin}: the config must be a mapping of sections, got {type(tree).__name__}")
    check_keys(schema, tree, origin)
    try:
        return schema.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).isdigit())
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # model-level validator: the message names its own key
            raise UdasError(f"{origin}: {msg}") from None
        got = err.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        raise UdasError(f"{origin}: {loc}: {msg}{got_text}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``, the value parsed as YAML (a plain string if it is not YAML)."""
    if "=" not in text:
        raise UdasError(f"command line: expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UdasError(f"command line: empty key in {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML: take it as a plain string
    return key, value


# ---------------------------------------------------------------------------------- files
def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def shipped_dir() -> Path:
    """The folder of the shipped configs: ``udas_ray/conf`` in an installed package, the
    checkout's ``conf/`` otherwise (pyproject.toml installs the one as the other)."""
    here = Path(__file__).resolve().parent
    installed = here / "conf"
    return installed if installed.is_dir() else here.parent / "conf"


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def config_path(path: str | Path) -> Path:
    """``path`` itself if it is a file; a bare name (``default``, ``sweep.yaml``) of a shipped
    config otherwise; an error naming the path and the shipped names if neither exists."""
    path = Path(path)
    if path.is_file():
        return path
    if path.parent == Path("."):
        shipped = shipped_dir() / (path.name if path.suffix else f"{path.name}.yaml")
        if shipped.is_file():
            return shipped
    raise UdasError(f"{path}: config file not found (shipped configs, by name: {', '.join(shipped_names())})")


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """A config file (or a shipped config's name) as a dict. ``extends: other.yaml`` (relative
    to the file) starts from that file and overlays this one, so a sweep file only states what
    it changes."""
    path = config_path(path)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UdasError(f"{path}: not valid YAML{where}") from None
    if not isinstance(tree, dict):
        raise UdasError(f"{path}: the config must be a mapping of sections")
    base = tree.pop("extends", None)
    if base is not None:
        base_path = (path.parent / str(base)).resolve()
        if base_path in _seen:
            raise UdasError(f"{path}: 'extends' loops back to {base_path}")
        tree = _merge(read_yaml(base_path, _seen + (base_path,)), tree)
    return tree


def load(schema: type[BaseModel], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """Read a YAML file (or take the schema's defaults), apply ``key=value`` overrides, validate."""
    tree = read_yaml(path) if path else {}
    origin = str(path) if path else "config"
    check_keys(schema, tree, origin)
    tree = copy.deepcopy(tree)
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(schema, tree, key, value, origin="command line")
        origin = f"{path or 'config'} + command line"
    return validate(schema, tree, origin)
