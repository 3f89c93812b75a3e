"""What a Ray node writes as root from a spec or an archive stays in its folder (runtime/ray_node.py:
`stage`, `inside`, `unpack`): hostile paths, hashes, symlinks and archive members are refused before
anything is written outside. No Ray needed: these are the functions the node's actor calls."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from endpoints_app.runtime import ray_node

CONTENT = b"def run(x):\n    return x\n"
DIGEST = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A node folder whose cache already holds one file (so staging it needs no studio), and a folder
    outside it that nothing may touch."""
    folder = tmp_path / "node"
    monkeypatch.setenv("STUDIO_NODE_DIR", str(folder))
    cached = folder / "cache" / DIGEST[:2] / DIGEST
    cached.parent.mkdir(parents=True)
    cached.write_bytes(CONTENT)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("root's")
    return folder, outside


def _spec(files: list[list[str]], links: list[str], environments: list[dict] | None = None) -> dict:
    # No studio answers at this URL: a check that comes after a fetch would show as a connection error.
    return {"files": files, "links": links, "environments": environments or [], "studio_url": "http://127.0.0.1:9"}


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "root's"


def test_stage_links_a_cached_file_where_the_spec_says(node):
    folder, _ = node
    staged = folder / "staged" / "box"
    links = ray_node.stage(_spec([["model/score.py", DIGEST, "token"]], ["model"]), staged)
    assert links == [(str(staged / "model"), "model")]
    assert (staged / "model" / "score.py").read_bytes() == CONTENT


@pytest.mark.parametrize("rel", ["/{outside}/planted", "../../outside/planted", "model/../../../outside/planted",
                                 "..", "", "model/\0x"])
def test_stage_refuses_a_path_that_is_absolute_or_climbs_out(node, rel):
    folder, outside = node
    rel = rel.format(outside=str(outside).lstrip("/"))
    staged = folder / "staged" / "box"
    with pytest.raises(ray_node.UnsafePath):
        ray_node.stage(_spec([[rel, DIGEST, "token"]], []), staged)
    with pytest.raises(ray_node.UnsafePath):
        ray_node.stage(_spec([], [rel]), staged)
    with pytest.raises(ray_node.UnsafePath):  # refused before the environment is fetched
        ray_node.stage(_spec([], [], [{"name": "e:1", "rel": rel, "digest": DIGEST, "token": "t"}]), staged)
    _untouched(outside)
    assert not list((folder / "staged").rglob("planted"))


def test_stage_refuses_a_hash_that_names_another_file(node):
    folder, outside = node
    staged = folder / "staged" / "box"
    # The cache path is built from the hash: one with slashes would link the host's file into the sandbox.
    hostile = f"../../../{outside.name}/secret"
    with pytest.raises(ray_node.UnsafePath):
        ray_node.stage(_spec([["model/secret", hostile, "token"]], ["model"]), staged)
    assert not (staged / "model" / "secret").exists()


def test_stage_never_writes_through_a_symlink_planted_at_its_folder_or_on_the_way(node):
    folder, outside = node
    staged = folder / "staged" / "box"
    staged.parent.mkdir(parents=True)
    staged.symlink_to(outside)  # rmtree leaves a symlink in place: staging must not follow it
    ray_node.stage(_spec([["secret", DIGEST, "token"], ["more", DIGEST, "token"]], []), staged)
    assert staged.is_dir() and not staged.is_symlink() and (staged / "more").read_bytes() == CONTENT
    _untouched(outside)
    # A symlink inside the folder on the way to a path: refused.
    (staged / "model").symlink_to(outside)
    with pytest.raises(ray_node.UnsafePath):
        ray_node.inside(staged, "model/planted")
    with pytest.raises(ray_node.UnsafePath):
        ray_node.inside(staged, "model")


def _archive(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644,
            uid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid = kind, link, mode, uid
    return info


def test_unpack_keeps_folders_files_and_symlinks_of_a_venv(tmp_path):
    archive = _archive(tmp_path / "venv.tar", (_member("bin", tarfile.DIRTYPE, mode=0o755), None),
                       (_member("bin/python", tarfile.SYMTYPE, link="/usr/bin/python3"), None),
                       (_member("lib64", tarfile.SYMTYPE, link="lib"), None),
                       (_member("lib/six.py", mode=0o4777, uid=4242), b"x = 1\n"))
    dest = tmp_path / "venv"
    ray_node.unpack(archive, dest)
    assert (dest / "bin" / "python").readlink() == Path("/usr/bin/python3")
    assert (dest / "lib" / "six.py").read_bytes() == b"x = 1\n"
    assert (dest / "lib" / "six.py").stat().st_mode & 0o7777 == 0o755  # no setuid, no group/other write
    assert (dest / "lib" / "six.py").stat().st_uid == os.geteuid()  # the archive's owner is not kept


@pytest.mark.parametrize("hostile", ["climbs", "absolute", "through_symlink", "hard_link", "device"])
def test_unpack_refuses_a_member_that_would_land_outside_its_folder(tmp_path, hostile):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = {
        "climbs": [(_member("lib/../../outside/planted"), b"x")],
        "absolute": [(_member(f"{outside}/planted"), b"x")],
        "through_symlink": [(_member("lib", tarfile.SYMTYPE, link=str(outside)), None),
                            (_member("lib/planted"), b"x")],
        "hard_link": [(_member("passwd", tarfile.LNKTYPE, link="/etc/passwd"), None)],
        "device": [(_member("null", tarfile.CHRTYPE), None)],
    }[hostile]
    archive = _archive(tmp_path / "venv.tar", *members)
    with pytest.raises((ray_node.UnsafePath, tarfile.FilterError)):
        ray_node.unpack(archive, tmp_path / "venv")
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "venv" / "passwd").exists() and not (tmp_path / "venv" / "null").exists()


def test_an_environment_the_node_cannot_get_fails_naming_it_and_why(node):
    folder, _ = node
    entry = {"name": "lightgbm:2", "rel": "env/venv", "digest": DIGEST, "token": "t"}
    with pytest.raises(ray_node.EnvironmentUnavailable) as failed:
        ray_node.environment(entry, "http://127.0.0.1:9", timeout=5)
    assert str(failed.value).startswith("environment lightgbm:2: this node could not get it from the studio: ")
    assert "refused" in str(failed.value).lower()
    # Nothing half-made is left for the next instance to find.
    assert [p.name for p in (folder / "environments").iterdir()] == [f".{DIGEST}.lock"]
