"""The worker's side of a score.py's output folder (controller/outputs.py), attacked with the tars a hostile
score.py can make its model server send: nothing lands outside the mini-batch's own folder, links and
special files are refused by name, sizes and counts are bounded before anything is read, and the merge
places each file once, in index order, however often it runs."""

from __future__ import annotations

import io
import tarfile

import pytest

from endpoints_app.controller import outputs

RESERVED = {"parts", "predictions.csv"}


def tar_of(*members: tuple[str, object], rows: bytes | None = b"file,row,prediction\n") -> io.BytesIO:
    """members: (name, bytes) for files, (name, "->target") for symlinks, (name, "=>target") for hard
    links, (name, "dir") and (name, "fifo")."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if rows is not None:
            info = tarfile.TarInfo("rows.csv")
            info.size = len(rows)
            tar.addfile(info, io.BytesIO(rows))
        for name, body in members:
            info = tarfile.TarInfo(name)
            if isinstance(body, bytes):
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
                continue
            if body.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, body[2:]
            elif body.startswith("=>"):
                info.type, info.linkname = tarfile.LNKTYPE, body[2:]
            elif body == "dir":
                info.type = tarfile.DIRTYPE
            else:
                info.type = tarfile.FIFOTYPE
            tar.addfile(info)
    buf.seek(0)
    return buf


def test_it_keeps_regular_files_and_refuses_every_escape_by_name(tmp_path):
    folder = tmp_path / "job" / "parts" / ".000001.1.files.tmp"
    rows = outputs.receive(tar_of(("output", "dir"), ("output/sub", "dir"), ("output/a.csv", b"x\n1\n"),
                                  ("output/sub/b.txt", b"hello")), folder, RESERVED)
    assert rows == b"file,row,prediction\n"
    assert (folder / "a.csv").read_bytes() == b"x\n1\n" and (folder / "sub" / "b.txt").read_bytes() == b"hello"

    hostile = {
        "output/../../../evil.txt": "points outside",
        "/etc/evil": "points outside",
        "evil.txt": "points outside",  # not under output/
        "output/sub/../../evil": "points outside",
        "output/.hidden": "starting with '.'",
        "output/parts/000000.csv": "the job's own output",
        "output/predictions.csv": "the job's own output",
        "output/a\\..\\evil": "not a file name",
        "output/bell\x07": "not a file name",
    }
    for number, (name, why) in enumerate(hostile.items()):
        target = tmp_path / f"attempt-{number}"
        with pytest.raises(outputs.OutputFolderError, match=why):
            outputs.receive(tar_of((name, b"pwned")), target, RESERVED)
    links = {("output/leak", "->/etc/passwd"): "a link", ("output/hard", "=>/etc/passwd"): "a link",
             ("output/pipe", "fifo"): "a special file"}
    for number, (member, why) in enumerate(links.items()):
        with pytest.raises(outputs.OutputFolderError, match=why):
            outputs.receive(tar_of(member), tmp_path / f"link-{number}", RESERVED)
    with pytest.raises(outputs.OutputFolderError, match="twice"):
        outputs.receive(tar_of(("output/a", b"1"), ("output/a", b"2")), tmp_path / "twice", RESERVED)
    with pytest.raises(outputs.OutputFolderError, match="as a file and a folder"):
        outputs.receive(tar_of(("output/a", b"1"), ("output/a/b", b"2")), tmp_path / "both", RESERVED)
    with pytest.raises(outputs.OutputFolderError, match="no output rows"):
        outputs.receive(tar_of(("output/a", b"1"), rows=None), tmp_path / "norows", RESERVED)
    with pytest.raises(outputs.OutputFolderError, match="could not be read"):
        outputs.receive(io.BytesIO(b"not a tar at all" * 100), tmp_path / "garbage", RESERVED)
    # Nothing was written anywhere but the folders the worker made for each attempt.
    assert not list(tmp_path.rglob("evil*")) and not (tmp_path / "etc").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["job", *(f"attempt-{n}" for n in range(len(hostile))), *(f"link-{n}" for n in range(len(links))),
         "twice", "both", "norows", "garbage"])


def test_sizes_and_counts_are_refused_before_the_bytes_are_read(tmp_path, monkeypatch):
    """A header may claim any size: the claim is refused before a byte of it is read (the stream below
    ends long before 10 GiB), and a file cut short is an error, not a short file."""
    claimed = tarfile.TarInfo("output/huge.bin")
    claimed.size = 10 * 1024**3
    stream = io.BytesIO(tarfile.TarInfo("rows.csv").tobuf(tarfile.PAX_FORMAT) + claimed.tobuf(tarfile.PAX_FORMAT)
                        + b"x" * 4096)
    with pytest.raises(outputs.OutputFolderError, match="more than 256 MiB"):
        outputs.receive(stream, tmp_path / "huge", RESERVED)
    assert not (tmp_path / "huge" / "huge.bin").exists()

    cut = tar_of(("output/whole.bin", b"x" * 100_000)).getvalue()[:50_000]
    with pytest.raises(outputs.OutputFolderError):
        outputs.receive(io.BytesIO(cut), tmp_path / "cut", RESERVED)

    monkeypatch.setattr(outputs, "MAX_FILES", 3)
    with pytest.raises(outputs.OutputFolderError, match="more than 3 files"):
        outputs.receive(tar_of(*[(f"output/f{i}", b"1") for i in range(4)]), tmp_path / "many", RESERVED)


def test_a_retried_mini_batch_replaces_its_files_and_the_merge_places_each_once(tmp_path):
    root = tmp_path / "job"
    first = root / "parts" / ".a"
    outputs.receive(tar_of(("output/half.csv", b"HALF"), ("output/stale.txt", b"old")), first, RESERVED)
    outputs.keep(first, outputs.files_dir(root, "parts/000000.csv"))
    retry = root / "parts" / ".b"
    outputs.receive(tar_of(("output/half.csv", b"WHOLE")), retry, RESERVED)
    outputs.keep(retry, outputs.files_dir(root, "parts/000000.csv"))
    later = root / "parts" / ".c"
    outputs.receive(tar_of(("output/half.csv", b"LATER"), ("output/deep/x.txt", b"x")), later, RESERVED)
    outputs.keep(later, outputs.files_dir(root, "parts/000001.csv"))
    nothing = root / "parts" / ".d"
    outputs.receive(tar_of(), nothing, RESERVED)
    outputs.keep(nothing, outputs.files_dir(root, "parts/000002.csv"))
    assert not nothing.exists() and not outputs.files_dir(root, "parts/000002.csv").exists()

    assert outputs.merge(root, ["parts/000000.csv"]) == ["half.csv"]
    assert (root / "half.csv").read_bytes() == b"WHOLE" and not (root / "stale.txt").exists()
    parts = ["parts/000000.csv", "parts/000001.csv", "parts/000002.csv"]
    for _ in range(2):  # a merge that runs again writes the same files
        assert outputs.merge(root, parts) == ["deep/x.txt", "half.csv"]
    assert (root / "half.csv").read_bytes() == b"LATER"
    assert outputs.listed(root, "predictions.csv") == ["deep/x.txt", "half.csv"]
    assert not [p for p in root.rglob(".*") if p.is_file()]  # no temporary file left
