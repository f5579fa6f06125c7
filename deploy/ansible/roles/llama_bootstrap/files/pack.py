#!/usr/bin/env python3
"""Pack the llama-bootstrap project on the controller into one tar.gz for the hosts (run by the role).

    pack.py SRC DEST [--exclude PATH ...]

Files: in a git checkout, what git would commit (tracked plus untracked-not-ignored, as on disk now);
elsewhere every file minus caches, virtual environments, state and downloads. The archive is
reproducible (sorted names, fixed owner and mtime, no gzip timestamp) and is rewritten only when
the content digest (names, exec bits, sha256 of every file) differs from the last pack, so a second
play run changes nothing. Prints one JSON line: {"changed": bool, "digest": "...", "files": N, "path": "..."}.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import List

SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".llama-bootstrap", "node_modules",
             "llama-bootstrap-demo", "build", "dist"}
SKIP_TOP = {"models", "Llama2-Chinese"}  # downloads next to the manifest
FIXED_MTIME = 1700000000  # 2023-11-14: the same bytes whatever the controller's file times


def _skipped_dir(rel: str) -> bool:
    parts = rel.split("/")
    return any(p in SKIP_DIRS or p.startswith(".venv") or p.endswith(".egg-info") for p in parts) or \
        parts[0] in SKIP_TOP


def list_files(src: Path, excludes: List[Path]) -> List[str]:
    names: List[str] = []
    if (src / ".git").exists():
        out = subprocess.run(["git", "-C", str(src), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True)
        names = [n for n in out.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
    else:
        for root, dirs, files in os.walk(src):
            rel_root = Path(root).relative_to(src).as_posix()
            dirs[:] = sorted(d for d in dirs if not _skipped_dir(d if rel_root == "." else f"{rel_root}/{d}"))
            names += [f if rel_root == "." else f"{rel_root}/{f}" for f in files]
    keep = []
    for name in sorted(set(names)):
        path = src / name
        if _skipped_dir(name) or not path.is_file() or path.is_symlink():
            continue
        if any(_inside(path, ex) for ex in excludes):
            continue
        keep.append(name)
    return keep


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def digest_of(src: Path, names: List[str]) -> str:
    total = hashlib.sha256()
    for name in names:
        path = src / name
        file_hash = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                file_hash.update(block)
        executable = os.access(path, os.X_OK)
        total.update(f"{name}\0{int(executable)}\0{file_hash.hexdigest()}\n".encode("utf-8", "surrogateescape"))
    return total.hexdigest()


def write_tar(src: Path, names: List[str], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=str(dest.parent))
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                path = src / name
                data = path.read_bytes()
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), FIXED_MTIME
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--exclude", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    src = args.src.resolve()
    if not (src / "install.sh").is_file() or not (src / "pyproject.toml").is_file():
        print(json.dumps({"failed": True, "msg": f"{src} is not a llama-bootstrap project (no install.sh)"}))
        return 1
    excludes = [p.resolve() for p in args.exclude + [args.dest.parent]]
    names = list_files(src, excludes)
    digest = digest_of(src, names)
    stamp = args.dest.with_name(args.dest.name + ".sha256")
    changed = not (args.dest.is_file() and stamp.is_file() and stamp.read_text().split()[:1] == [digest])
    if changed:
        write_tar(src, names, args.dest)
        stamp.write_text(f"{digest}  {args.dest.name}\n")
    print(json.dumps({"changed": changed, "digest": digest, "files": len(names), "path": str(args.dest)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
