"""Output folders written whole or not at all.

One run per folder: a command writes its files into a fresh hidden folder beside `out`
(`.NAME.partial-XXXX`) and swaps it into place when every file is written, so `out` always holds the
files of exactly one finished run (an interrupted run leaves the previous one untouched; SIGKILL can
leave a `.partial-` folder behind, never a half-written `out`). The swap replaces `out` only when it
is absent, empty, or a previous trnlab output (it holds MARKER); any other folder is refused before
the run starts (a folder of run files from a trnlab without MARKER counts as a previous output).
Single files are written to a temporary file in the same folder, then os.replace.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from trnlab.errors import OutputError

MARKER = "trnlab-run.json"


def write_text_atomic(path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _writable_ancestor(path: Path) -> Path:
    """The folder in which the first missing part of `path` would be created."""
    parent = path.parent.resolve()
    while not parent.exists():
        parent = parent.parent
    return parent


RUN_FILES = {"trace.json", "summary.json", "report.html", "model.json", "model.html", "runs.json", "index.html"}


def _legacy_output(folder: Path) -> bool:
    """A folder written by a trnlab without MARKER: only run files, and NN_<kernel>/ folders of them."""
    try:
        for p in folder.iterdir():
            if p.is_dir() and re.fullmatch(r"\d\d_.+", p.name):
                if not all(q.is_file() and q.name in RUN_FILES for q in p.iterdir()):
                    return False
            elif not (p.is_file() and p.name in RUN_FILES):
                return False
    except FileNotFoundError:       # moved away by a concurrent run: nothing of the user's to protect
        return True
    return True


def check_out(out) -> Path:
    """The output folder, or OutputError when it cannot hold one trnlab run (checked before any work)."""
    out = Path(out)
    try:                            # one listing, no exists()-then-use race with a concurrent swap
        filled = any(out.iterdir())
    except FileNotFoundError:
        filled = False
    except NotADirectoryError:      # out is a file, or a folder above it is (the probe below reports that)
        if out.exists():
            raise OutputError(f"--out {out} is an existing file; give a folder (new, empty, or a previous "
                              f"trnlab output)") from None
        filled = False
    if filled and not (out / MARKER).is_file() and not _legacy_output(out):
        raise OutputError(f"--out {out} is a non-empty folder that is not a trnlab output (no {MARKER}); "
                          f"give a new or empty folder")
    base = _writable_ancestor(out)
    try:                            # a real probe: os.access says yes to root even on read-only mounts
        os.rmdir(tempfile.mkdtemp(prefix=".trnlab-probe-", dir=base))
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot create folders in {base} ({exc.strerror})") from None
    return out


@contextmanager
def staged_dir(out, manifest: dict | None = None):
    """Yield a fresh folder beside `out`; on success write MARKER into it and swap it into `out`."""
    out = check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()                     # (mkdtemp would make it 0700: the run folder keeps the umask)
    try:
        yield tmp
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        write_text_atomic(tmp / MARKER, json.dumps({**(manifest or {}), "files": files}, indent=1))
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(tmp: Path, out: Path) -> None:
    """Rename tmp to out; a previous run in out is moved aside first and deleted afterwards."""
    for _ in range(100):            # another run may swap in between: try again
        try:
            os.rename(tmp, out)     # POSIX: succeeds when out is absent or an empty folder
            return
        except FileNotFoundError:
            raise
        except OSError:             # out holds a previous run
            pass
        try:
            check_out(out)          # still one of ours (a user may have filled it meanwhile)
        except FileNotFoundError:   # another run moved it aside just now
            continue
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(out, old)
        except FileNotFoundError:
            continue
        try:
            os.rename(tmp, out)
            return
        except OSError:
            continue
        finally:
            shutil.rmtree(old, ignore_errors=True)
    raise OutputError(f"--out {out}: could not replace the folder (other runs keep writing to it)")
