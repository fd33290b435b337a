"""Atomic artifact writes, hashing and small JSON helpers.

Every function that makes an artifact writes to a temporary name in the destination's own
directory and renames it into place only when complete, so that no reader (DVC, a later
stage, a user) ever sees half a file, and a killed stage leaves the previous good
artifact untouched.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import

np = lazy_import("numpy")

TMP_PREFIX = ".tmp-"


def _mkstemp_beside(path: Path, is_dir: bool) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            return Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent))
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
        os.close(fd)
        return Path(name)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}; make {path.parent} writable") from exc


def remove_stale_temps(directory: Path, name: str) -> None:
    """Delete the temporaries a killed write of file `name` left behind in `directory`. Only
    that file's: stages side by side (`vae-engines repro --jobs`) write other files of the same
    folder at the same time, and their temporaries are not stale (tempfile's names end in 8
    random characters, so `.tmp-a.json.` never matches `a.json.gz`'s)."""
    if not directory.is_dir():
        return
    for leftover in directory.glob(f"{TMP_PREFIX}{glob.escape(name)}.{'?' * 8}"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds.

    On any exception the temporary is removed and `path` keeps its previous content.
    """
    final = Path(path)
    remove_stale_temps(final.parent, final.name)
    tmp = _mkstemp_beside(final, is_dir)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~umask)  # mkstemp makes 0600; artifacts are shared
        if final.is_dir() and not final.is_symlink():
            # A directory cannot be replaced atomically by rename(2); move the old one
            # aside first so the window without a good copy is two renames wide.
            old = _mkstemp_beside(final, is_dir=True)
            old.rmdir()
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except OSError as exc:
        raise UserError(f"cannot write {final}: {exc.strerror}; make {final.parent} writable") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write stable, diff-friendly JSON (sorted keys, fixed indent, trailing newline)."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """np.savez with fixed zip timestamps: equal arrays give equal bytes (and DVC hashes)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def write_json_if_changed(path: str | os.PathLike, obj: Any) -> None:
    """write_json, skipped when the file already holds exactly this (its mtime then stays)."""
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    path = Path(path)
    if not path.is_file() or path.read_bytes() != data:
        write_bytes(path, data)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{path} does not exist; run the stage that makes it (dvc repro)") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}); delete it and run dvc repro") from exc


def read_keyed(path: str | os.PathLike, key: Any, field: str = "key") -> Any:
    """The JSON record at `path` where its `field` equals `key` (what it was computed with
    still holds), else None: no record, an unreadable one, or one made with something else."""
    try:
        record = read_json(path) if Path(path).is_file() else None
    except UserError:  # unreadable: compute it again
        return None
    return record if isinstance(record, dict) and record.get(field) == key else None


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
