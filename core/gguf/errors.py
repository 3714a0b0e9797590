"""The one error type of the GGUF layer."""

from __future__ import annotations

import os


class GGUFError(ValueError):
    """A GGUF file is malformed or unsupported.

    The message names the file, the byte offset where reading went wrong, and what was
    wrong; `path`, `offset` and `reason` hold the parts.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int | None, reason: str):
        self.path = os.fspath(path)
        self.offset = offset
        self.reason = reason
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{self.path}{where}: {reason}")
