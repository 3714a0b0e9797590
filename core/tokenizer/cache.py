"""The on-disk cache of built tokenizers: `<dir>/<key>.json`, a standard `tokenizer.json`.

Deriving the merges of a 262k SentencePiece vocabulary and building the model takes ~2-3 s on a
2-vCPU VM; loading the result back is one `Tokenizer.from_file`, about half that (its JSON parsing
is the floor: it holds the GIL, so it cannot overlap other work on a thread either).

The key is the SHA-256 of everything the build reads (every `tokenizer.ggml.*` entry and the
architecture) plus this builder's version, so a different file, or a newer builder, never sees a
stale tokenizer. From a file it hashes the entries' raw bytes, which costs no string decoding;
from a bare `Metadata` it hashes the decoded values (the two spellings of one model get different
keys, which only costs a second entry).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..gguf import Metadata, StringArray

log = logging.getLogger(__name__)

# Bump when the tokenizer built from the same metadata changes.
BUILDER_VERSION = b"ktx-tokenizer-1"


def _hashed(key: str) -> bool:
    return key.startswith("tokenizer.ggml.") or key == "general.architecture"


def _value_bytes(value: object) -> bytes:
    if isinstance(value, StringArray):
        return "\0".join(value.to_list()).encode("utf-8", "surrogatepass") + f"#{len(value)}".encode()
    if isinstance(value, np.ndarray):
        return value.dtype.str.encode() + np.ascontiguousarray(value).tobytes()
    return repr(value).encode("utf-8", "surrogatepass")


def cache_key(meta: Metadata, path: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 (hex) of the tokenizer metadata; `path`, the file `meta` was read from, makes it cheap."""
    h = hashlib.sha256(BUILDER_VERSION)
    keys = list(meta)
    spans = []
    for i, key in enumerate(keys):
        if not _hashed(key):
            continue
        start = meta.offset(key)
        end = meta.offset(keys[i + 1]) if i + 1 < len(keys) else None
        spans.append((key, start, end))
    f = open(path, "rb") if path is not None else None  # noqa: SIM115 - closed below
    try:
        h.update(b"raw" if f else b"values")
        for key, start, end in spans:
            h.update(key.encode() + b"\0")
            if f is not None and start is not None and end is not None and end > start:
                f.seek(start)
                h.update(f.read(end - start))
            else:
                h.update(_value_bytes(meta[key]))
    finally:
        if f is not None:
            f.close()
    return h.hexdigest()


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """`override`, else `$KTX_CACHE_DIR/tokenizers`, else `~/.cache/ktx/tokenizers`."""
    if override is not None:
        return Path(override)
    root = os.environ.get("KTX_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "ktx") / "tokenizers"


def cache_file(directory: Path, key: str) -> Path:
    return directory / f"{key}.json"


def load(directory: Path, key: str) -> Tokenizer | None:
    """The cached tokenizer, or None when it is missing or unreadable (then it is rebuilt)."""
    path = cache_file(directory, key)
    if not path.is_file():
        return None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # a truncated or corrupt file: tokenizers raises plain Exception
        log.warning("ignoring unreadable tokenizer cache %s: %s", path, e)
        return None


def save(directory: Path, key: str, tokenizer: Tokenizer) -> Path | None:
    """Writes atomically (temporary file, then rename), so a reader never sees half a file.
    A cache that cannot be written (read-only home, full disk) is only a warning."""
    path = cache_file(directory, key)
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(tokenizer.to_str())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is as readable as the model
        os.replace(tmp, path)
        return path
    except OSError as e:
        log.warning("could not write tokenizer cache %s: %s", path, e)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return None
