"""Reading a campaign config: YAML, ``--set`` overrides, ``${VAR}`` expansion, paths, messages.

Every problem is a ConfigError naming the key, the file and the line (or the ``--set``
that gave the value). Also the config's digest, and ``read_text_file`` for the text files
a config names (label sets, label descriptions).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from alft.config.campaign import NAME_RE, CampaignConfig
from alft.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

#: The most YAML nodes a config (or one ``--set`` value) may expand to, an alias counted at each
#: use. A shipped config has a few hundred; 1 KB of nested aliases (9 levels of 9) expands to
#: 9^9, which PyYAML builds as shared references in no time but every later walk copies.
MAX_YAML_NODES = 100_000


class _UnsetVariable(Exception):
    def __init__(self, key: tuple[str, ...], name: str) -> None:
        self.key, self.name = key, name


def _expand_env(value: Any, key: tuple[str, ...] = ()) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise _UnsetVariable(key, name)

        return _ENV_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*key, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*key, str(i))) for i, v in enumerate(value)]
    return value


def _where(key: tuple[str, ...], source: str, text: str, overridden: set) -> str:
    """``source line N`` (or ``source (from --set key)``) of the closest key that has one."""
    lines: dict[tuple[str, ...], int] | None = None
    for cut in range(len(key), -1, -1):
        if key[:cut] in overridden:
            return f"{source} (from --set {'.'.join(key[:cut])})"
        if lines is None:
            lines = _line_map(text)
        if key[:cut] in lines:
            return f"{source} line {lines[key[:cut]]}"
    return source


def _line_map(text: str) -> dict[tuple[str, ...], int]:
    """Key path -> 1-based line number, for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, str(k.value))
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                key = (*path, str(i))
                lines[key] = v.start_mark.line + 1
                walk(v, key)

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def parse_overrides(items: list[str]) -> dict[tuple[str, ...], Any]:
    """``["budget=500", "strategy.name=entropy"]`` -> ``{("budget",): 500, ...}``."""
    out: dict[tuple[str, ...], Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. --set budget=500)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = _safe_load(raw, f"--set {key}") if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        out[tuple(key.split("."))] = value
    return out


def _apply_override(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"--set {'.'.join(path)}: '{'.'.join(path[: i + 1])}' is not a mapping"
            )
        node = child
    node[path[-1]] = value


def _format_validation(
    exc: ValidationError, source: str, lines: dict[tuple[str, ...], int], overridden: set[tuple[str, ...]]
) -> str:
    msgs = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        dotted = ".".join(loc) or "(top level)"
        where = source
        # walk up to the closest key that has a line (a missing key's parent, say)
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in overridden:
                where = f"{source} (from --set {'.'.join(loc[:cut])})"
                break
            if loc[:cut] in lines:
                where = f"{source} line {lines[loc[:cut]]}"
                break
        if err["type"] == "extra_forbidden":
            msg = f"unknown key '{dotted}'"
        elif err["type"] == "missing":
            msg = f"missing required key '{dotted}'"
        else:
            text = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            msg = f"{dotted}: {text}{shown}" if loc else f"{text}"
        msgs.append(f"{where}: {msg}")
    return "invalid config\n  " + "\n  ".join(msgs)


def _refuse_nul(value: Any, key: tuple[str, ...], source: str, text: str, overridden: set) -> None:
    """A NUL byte in a key or value is never meant (and breaks every path given to the OS)."""
    bad: tuple[str, ...] | None = None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and "\x00" in k:
                bad = (*key, k)
                break
            _refuse_nul(v, (*key, str(k)), source, text, overridden)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_nul(v, (*key, str(i)), source, text, overridden)
    elif isinstance(value, str) and "\x00" in value:
        bad = key
    if bad is None:
        return
    dotted = ".".join(bad) or "(top level)"
    raise ConfigError(f"{_where(bad, source, text, overridden)}: '{dotted}' holds a NUL byte")


def _expand(value: str) -> Path:
    """``~`` and ``~user`` expanded; an unknown user is a ConfigError, not a RuntimeError."""
    try:
        return Path(value).expanduser()
    except RuntimeError as exc:  # Path.expanduser: "Could not determine home directory"
        raise ConfigError(f"path {value!r}: {exc}") from None


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative local paths absolute against ``base`` (the config file's folder)."""

    def fix(value: str | None) -> str | None:
        if not value or "://" in value or value.startswith("packaged:"):
            return value
        if value.startswith("gguf:") and value.removeprefix("gguf:").strip():  # a local file, never a hub id
            g = _expand(value.removeprefix("gguf:"))
            return f"gguf:{g if g.is_absolute() else (base / g).resolve()}"
        p = _expand(value)
        if p.is_absolute():
            return str(p)
        candidate = (base / p).resolve()
        # A relative string that is not a local path is left alone: it may be a hub id.
        return str(candidate) if candidate.exists() or value.startswith(".") else value

    d = data.get("data")
    if isinstance(d, dict):
        for split in ("pool", "eval"):
            src = d.get(split)
            if isinstance(src, dict) and isinstance(src.get("path"), str):
                if src.get("format") != "hub":
                    src["path"] = fix(src["path"])
        if isinstance(d.get("labels"), str):
            d["labels"] = fix(d["labels"])
    m = data.get("model")
    if isinstance(m, dict):
        for key in ("path", "cache_dir"):
            if isinstance(m.get(key), str):
                m[key] = fix(m[key])
    o = data.get("oracle")
    if isinstance(o, dict):
        for key in ("prelabel_descriptions", "prelabel_model"):
            if isinstance(o.get(key), str):
                o[key] = fix(o[key])
    z = data.get("zero_shot")
    if isinstance(z, dict):
        for key in ("descriptions", "model"):  # model: kind llm's causal LM folder
            if isinstance(z.get(key), str):
                z[key] = fix(z[key])
    if isinstance(data.get("workdir"), str):
        w = _expand(data["workdir"])
        data["workdir"] = str(w if w.is_absolute() else (base / w).resolve())


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_sizes(root: yaml.Node, source: str) -> dict[int, int]:
    """Node id -> how many nodes it stands for once every alias is expanded.

    The composed graph shares an aliased node instead of copying it, so this is linear in
    the file, iterative (no recursion limit), and refuses an alias that contains itself.
    """
    size: dict[int, int] = {}
    started: set[int] = set()  # on the current path: begun, children not all counted
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            started.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if key in size:
            continue
        if key in started:
            line = node.start_mark.line + 1
            raise ConfigError(f"{source} line {line}: a YAML alias refers to a node that contains it (recursive)")
        started.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return size


def _refuse_expansion(root: yaml.Node, source: str, known: frozenset[str] | None) -> None:
    """ConfigError when the document expands beyond ``MAX_YAML_NODES`` (an alias bomb).

    Names the deepest mapping key that holds the expansion; an unknown top-level key is
    reported as such (it would be refused anyway, so nothing of it is ever built).
    """
    sizes = _expanded_sizes(root, source)
    total = sizes[id(root)]
    if total <= MAX_YAML_NODES:
        return
    path: list[str] = []
    line = root.start_mark.line + 1
    node = root
    while isinstance(node, yaml.MappingNode):
        big = [(k, v) for k, v in node.value if sizes[id(v)] > MAX_YAML_NODES]
        if not big:
            break
        k, node = max(big, key=lambda kv: sizes[id(kv[1])])
        path.append(str(k.value))
        line = k.start_mark.line + 1
    n = sizes[id(node)]
    if known is not None and path and path[0] not in known:
        raise ConfigError(
            f"{source} line {line}: unknown key '{path[0]}' (and it expands to {n:,} YAML nodes through aliases)"
        )
    what = f"{source} line {line}: '{'.'.join(path)}'" if path else f"{source}: the YAML"
    raise ConfigError(
        f"{what} expands to {n:,} nodes through aliases (at most {MAX_YAML_NODES:,}); refused as an "
        "alias bomb: write the values out, or name a file"
    )


def _safe_load(text: str, source: str, known: frozenset[str] | None = None):
    """``yaml.safe_load``, but the composed document is measured before anything is built."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _refuse_expansion(root, source, known)
        return loader.construct_document(root)
    except RecursionError:  # PyYAML composes and constructs recursively
        raise ConfigError(f"{source}: the YAML nests too deeply (more than ~300 levels)") from None
    finally:
        loader.dispose()


def _top_level_keys() -> frozenset[str]:
    """The keys a config file may have at its top level (fields and their aliases)."""
    fields = CampaignConfig.model_fields
    return frozenset(fields) | frozenset(f.alias for f in fields.values() if f.alias)


def read_text_file(path: Path, where: str, encoding: str = "utf-8") -> str:
    """A config-side text file's contents, or a ConfigError naming ``where`` and the problem."""
    try:
        return Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror})") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> CampaignConfig:
    """Read, override, validate and resolve a campaign config file.

    The returned config has absolute local paths and an absolute ``workdir``, so it can be
    passed to a flow run that executes elsewhere (a worker, a deployment).
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"config path is a folder, not a YAML file: {path}")
    text = read_text_file(path, source)
    try:
        data = _safe_load(text, source, known=_top_level_keys())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{where}: malformed YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys, got {type(data).__name__}")
    over = parse_overrides(overrides or [])
    for key_path, value in over.items():
        _apply_override(data, key_path, value)
    try:
        data = _expand_env(data)
    except _UnsetVariable as exc:
        raise ConfigError(
            f"{_where(exc.key, source, text, set(over))}: '{'.'.join(exc.key)}': environment variable "
            f"${{{exc.name}}} is not set (write ${{{exc.name}:-default}} for a default)"
        ) from None
    _refuse_nul(data, (), source, text, set(over))
    _resolve_paths(data, path.resolve().parent)
    if "workdir" not in data or data["workdir"] is None:
        name = data.get("name")
        if isinstance(name, str) and re.match(NAME_RE, name):
            data["workdir"] = str((Path.cwd() / "runs" / name).resolve())
    try:
        return CampaignConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source, _line_map(text), set(over))) from None


def config_from_dict(data: dict[str, Any], source: str = "<parameters>") -> CampaignConfig:
    """Validate a config given as a mapping (flow parameters from the Prefect API)."""
    try:
        return CampaignConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source, {}, set())) from None


def config_digest(cfg: CampaignConfig) -> str:
    """Stable short digest of the resolved config (for tags and change detection)."""
    import hashlib

    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
