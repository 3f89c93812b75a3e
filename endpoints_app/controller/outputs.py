"""A score.py's output folder on the trusted side (the worker; no user code here).

A batch deployment's score.py may write files to $AZUREML_BI_OUTPUT_PATH; its model server answers
each mini-batch with a tar of the rows and of what run() wrote (runtime/batch.py). That tar comes from
the user's process, so nothing in it is trusted:
- receive(): streams it into a fresh folder of the worker's own, keeping regular files only, under
  names that stay inside the folder (no absolute name, no `..`, no hidden or control-character name,
  not the job's own `parts/` or merged file), at most OUTPUT_BYTES in all and MAX_FILES files; any
  other member fails the attempt with a message naming it.
- keep(): the attempt's files become the mini-batch's `parts/<n>.files/` before its row says
  Completed (an attempt that wrote nothing leaves none), so a retried mini-batch replaces its files.
- merge(): when the job completes, the Completed mini-batches' files are placed in the job's output
  folder in index order (a name two mini-batches wrote keeps the later one's file), each by link or
  copy to a temporary name then rename: a merge that runs twice writes the same files once.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from endpoints_app.runtime.batchio import OUTPUT_MEMBER, ROWS_MEMBER
from endpoints_app.runtime.sandbox import MIB, Limits

# What one mini-batch may hand back: its sandbox's output folder holds no more (runtime/sandbox.py).
OUTPUT_BYTES = Limits().output_bytes
MAX_FILES = 10_000
MAX_NAME = 1000
MAX_ROWS_BYTES = 1024 * MIB
PARTS = "parts"


class OutputFolderError(Exception):
    """What a model server sent as its output folder cannot be kept; the message says why."""


def relative_name(name: str, reserved: set[str]) -> PurePosixPath | None:
    """The path inside the output folder that a file name stands for, or OutputFolderError; None for
    the folder itself. The same rule serves tar members and download requests."""
    if not name or len(name) > MAX_NAME or "\\" in name or any(ord(c) < 32 for c in name):
        raise OutputFolderError(f"{name[:200]!r} is not a file name the studio keeps")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise OutputFolderError(f"{name[:200]!r} points outside the output folder")
    if any(part.startswith(".") for part in path.parts):
        raise OutputFolderError(f"{name[:200]!r}: names starting with '.' are not kept")
    if not path.parts:
        return None
    if path.parts[0] in reserved:
        raise OutputFolderError(f"{name[:200]!r} is the job's own output ({path.parts[0]}); use another name")
    return path


def _member_path(member: tarfile.TarInfo, reserved: set[str]) -> PurePosixPath | None:
    parts = PurePosixPath(member.name).parts
    if not parts or parts[0] != OUTPUT_MEMBER or PurePosixPath(member.name).is_absolute():
        raise OutputFolderError(f"{member.name[:200]!r} points outside the output folder")
    inner = "/".join(parts[1:])
    return relative_name(inner, reserved) if inner else None


def _copy(source: BinaryIO, target: BinaryIO, size: int) -> None:
    left = size
    while left > 0:
        chunk = source.read(min(left, 1 << 20))
        if not chunk:
            raise OutputFolderError("the output folder ended early (the model server stopped mid-answer)")
        target.write(chunk)
        left -= len(chunk)


def receive(stream: BinaryIO, folder: Path, reserved: set[str]) -> bytes:
    """Read a model server's tar answer: the files into `folder` (made here, empty), the rows returned."""
    rows: bytes | None = None
    total = files = 0
    folder.mkdir(parents=True)
    name = ""
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = member.name
                if name == ROWS_MEMBER and member.isfile() and rows is None:
                    if member.size > MAX_ROWS_BYTES:
                        raise OutputFolderError(f"the output rows pass {MAX_ROWS_BYTES // MIB} MiB")
                    rows = tar.extractfile(member).read()
                    continue
                rel = _member_path(member, reserved)
                if rel is None or member.isdir():
                    continue
                if not member.isfile():
                    kind = "link" if member.issym() or member.islnk() else "special file"
                    raise OutputFolderError(f"score.py's output folder holds {rel.as_posix()!r}, a {kind}; "
                                            "only regular files are kept")
                files += 1
                total += member.size
                if files > MAX_FILES:
                    raise OutputFolderError(f"score.py wrote more than {MAX_FILES} files in one mini-batch")
                if total > OUTPUT_BYTES:
                    raise OutputFolderError(f"score.py wrote more than {OUTPUT_BYTES // MIB} MiB to its output "
                                            "folder in one mini-batch")
                target = folder.joinpath(*rel.parts)
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError):
                    raise OutputFolderError(f"score.py's output folder uses {name[:200]!r} as a file and a "
                                            "folder") from None
                # O_EXCL: a name sent twice is refused; O_NOFOLLOW: only this function writes here anyway.
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out:
                    _copy(tar.extractfile(member), out, member.size)
    except tarfile.TarError as exc:
        raise OutputFolderError(f"the output folder could not be read ({exc})") from None
    except FileExistsError:
        raise OutputFolderError(f"score.py's output folder names {name[:200]!r} twice") from None
    except (NotADirectoryError, IsADirectoryError):
        raise OutputFolderError(f"score.py's output folder uses {name[:200]!r} as a file and a folder") from None
    if rows is None:
        raise OutputFolderError("the answer holds no output rows")
    return rows


def files_dir(output_root: Path, output_part: str) -> Path:
    return output_root / Path(output_part).with_suffix(".files")


def discard(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def keep(folder: Path, final: Path) -> None:
    """The attempt's files become the mini-batch's (replacing an earlier attempt's)."""
    if final.exists():
        old = final.with_name(f".{final.name}.{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        shutil.rmtree(old, ignore_errors=True)
    if any(folder.iterdir()):
        os.rename(folder, final)
    else:
        folder.rmdir()


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and os.path.samefile(source, target):
        return  # placed by an earlier merge (renaming a link over its own file would leave the link)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def merge(output_root: Path, parts: list[str]) -> list[str]:
    """Place the files of these parts (Completed, in index order) in the job's output folder; returns
    their names. Raises OutputFolderError when one name is a file of one part and a folder of another."""
    chosen: dict[str, Path] = {}
    for part in parts:
        folder = files_dir(output_root, part)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                chosen[path.relative_to(folder).as_posix()] = path
    names = sorted(chosen)
    folders = {str(PurePosixPath(n).parent) for n in names}
    clash = sorted(set(names) & folders)
    if clash:
        raise OutputFolderError(f"score.py wrote {clash[0]!r} as a file in one mini-batch and as a folder in another")
    for name in names:
        _place(chosen[name], output_root / name)
    return names


def listed(output_root: Path, merged_file: str) -> list[str]:
    """The files a job's score.py left in its output folder (not its parts, merged file or temporary files)."""
    if not output_root.is_dir():
        return []
    found = []
    for folder, dirs, files in os.walk(output_root):
        rel = Path(folder).relative_to(output_root)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d != PARTS]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = (rel / name).as_posix()
            if not name.startswith(".") and path != merged_file and not os.path.islink(os.path.join(folder, name)):
                found.append(path)
    return sorted(found)
