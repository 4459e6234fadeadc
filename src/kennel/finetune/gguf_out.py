"""Writing a GGUF file so that a failure or Ctrl-C midway leaves nothing behind: it is written
to NAME.partial and renamed over NAME only once whole (a merged 7B model is several GB)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def gguf_writer(path: Path, arch: str) -> Iterator[Any]:
    import gguf

    tmp = path.with_name(path.name + ".partial")
    w = gguf.GGUFWriter(str(tmp), arch)
    try:
        yield w
        w.close()
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(Exception):
            w.close()
        tmp.unlink(missing_ok=True)
        raise
