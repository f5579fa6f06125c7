"""The bundle format and `bundle --verify`, on small bundles written by the real writer: what is refused
(before any byte is hashed), what is named, and that coreutils alone can check a bundle."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from bootstrap import bundle, errors
from bootstrap.cli import run_cli

from .conftest import REPO, entry, flip_byte, small_bundle, with_extra_members

FILES = {"install.sh": b"#!/bin/sh\necho hi\n", "bundle/weights/a/b/model.bin": bytes(range(256)) * 64,
         "docs/x.md": b"# x\n"}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return small_bundle(tmp_path / "good.tar", FILES)


def test_a_written_bundle_verifies_and_its_id_is_the_hash_of_sha256sums(good: Path) -> None:
    info = bundle.verify(good)
    with tarfile.open(good) as tar:
        names = tar.getnames()
        sums = tar.extractfile(bundle.SUMS).read()  # type: ignore[union-attr]
        index_bytes = tar.extractfile(bundle.INDEX).read()  # type: ignore[union-attr]
    index = json.loads(index_bytes)
    assert names == [*FILES, bundle.INDEX, bundle.SUMS]  # the index files come last
    assert info.members == len(FILES) + 2 and info.id == hashlib.sha256(sums).hexdigest()
    assert set(index["members"]) == set(FILES)
    for name, data in FILES.items():
        assert index["members"][name] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert bundle.parse_sums(sums.decode())[bundle.INDEX] == hashlib.sha256(index_bytes).hexdigest()


def test_coreutils_alone_can_check_a_bundle(good: Path, tmp_path: Path) -> None:
    out = tmp_path / "unpacked"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(good), "-C", str(out)], check=True)  # noqa: S603,S607
    ok = subprocess.run(["sha256sum", "-c", "--strict", bundle.SUMS], cwd=out, capture_output=True,  # noqa: S603,S607
                        text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (out / "docs" / "x.md").write_bytes(b"# y\n")
    bad = subprocess.run(["sha256sum", "-c", "--quiet", bundle.SUMS], cwd=out, capture_output=True,  # noqa: S603,S607
                         text=True, check=False)
    assert bad.returncode == 1 and "docs/x.md: FAILED" in bad.stdout


def test_the_index_puts_one_top_level_key_per_line() -> None:
    text = bundle.index_json({"format": 1, "platform": "linux-64", "demo": True, "source": {"ref": "x"},
                              "members": {"a": {"size": 1, "sha256": "0" * 64}}}).decode()
    assert ' "format": 1,\n' in text and ' "platform": "linux-64",\n' in text and ' "demo": true,\n' in text
    assert '  "ref": "x"' in text  # nested keys are indented deeper: the installers' reader skips them


@pytest.mark.parametrize("extra, why", [
    (entry("evil", tarfile.SYMTYPE, linkname="/etc/passwd"), "symbolic link"),
    (entry("evil", tarfile.LNKTYPE, linkname="install.sh"), "hard link"),
    (entry("evil", tarfile.CHRTYPE), "character device"),
    (entry("evil", tarfile.BLKTYPE), "block device"),
    (entry("evil", tarfile.FIFOTYPE), "FIFO"),
    (entry("evil", tarfile.DIRTYPE), "folder entry"),
    (entry("/etc/evil"), "absolute"),
    (entry("../evil"), "'..'"),
    (entry("bundle/../../evil"), "'..'"),
    (entry("a\\evil"), "characters"),
    (entry("a b"), "characters"),
    (entry("-rf"), "starting with '-'"),
    (entry("INSTALL.SH"), "twice"),
], ids=["symlink", "hardlink", "chardev", "blockdev", "fifo", "dir", "absolute", "dotdot", "inner-dotdot",
        "backslash", "space", "dash", "case-duplicate"])
def test_unsafe_members_are_refused_before_any_member_is_hashed(good: Path, tmp_path: Path, extra: tuple,
                                                                 why: str) -> None:
    # The archive also carries a tampered member before the unsafe one: the header check must win.
    flip_byte(good, "docs/x.md")
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as old, tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as new:
        for info in old.getmembers():
            new.addfile(info, old.extractfile(info))
        info, data = extra
        new.addfile(info, io.BytesIO(data) if data is not None else None)
    with pytest.raises(errors.BundleError) as caught:
        bundle.verify(bad)
    assert caught.value.member == extra[0].name
    assert why in str(caught.value)


def test_a_flipped_byte_names_the_member_with_want_and_got(good: Path) -> None:
    flip_byte(good, "bundle/weights/a/b/model.bin", at=5000)
    with pytest.raises(errors.BundleError) as caught:
        bundle.verify(good)
    assert caught.value.member == "bundle/weights/a/b/model.bin"
    assert "want: " in str(caught.value) and "got: " in str(caught.value)


def test_a_member_missing_from_the_lists_is_named(good: Path, tmp_path: Path) -> None:
    bad = with_extra_members(good, tmp_path / "extra.tar", [entry("zz-not-listed.txt")])
    with pytest.raises(errors.BundleError, match="zz-not-listed.txt is not listed in SHA256SUMS"):
        bundle.verify(bad)


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    path = small_bundle(tmp_path / "v2.tar", FILES, format=2)
    with pytest.raises(errors.BundleError, match="format 2 is not 1"):
        bundle.verify(path)


def test_a_truncated_bundle_is_refused(good: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(errors.BundleError):
        bundle.verify(cut)


def test_verify_cli_exit_codes(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(["bundle", "--verify", str(good), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "ok" and doc["members"] == len(FILES) + 2 and doc["platform"] == "linux-64"
    flip_byte(good, "install.sh")
    assert run_cli(["bundle", "--verify", str(good)]) == 1
    err = capsys.readouterr().err
    assert "member install.sh does not match its sha256" in err and "Traceback" not in err
    assert run_cli(["bundle", "--verify", str(tmp_path / "missing.tar")]) == 2
    assert "--verify" in capsys.readouterr().err


# -- one name rule, three readers ------------------------------------------------------------------------
NAMES = ["install.sh", "bundle/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", ".gitattributes",
         "a/.hidden", "x@y=z,w~v", "/abs", "../up", "a/../b", "a/./b", ".", "..", "a//b", "a/", "-x", "a/-x",
         "a b", "a\\b", "a:b", "ü", "a\tb", "a*b", "a$b", "a'b"]


def _sh_accepts(name: str) -> bool:
    regex = re.search(r"^BUNDLE_NAME_RE='([^']+)'$", (REPO / "install.sh").read_text(), re.MULTILINE).group(1)  # type: ignore[union-attr]
    script = 'printf "%s\\n" "$1" | grep -Ev "$2" | grep -q . && exit 1; ' \
             'printf "%s\\n" "$1" | grep -Eq "(^|/)\\.\\.?(/|$)" && exit 1; exit 0'
    return subprocess.run(["bash", "-c", script, "_", name, regex], check=False).returncode == 0  # noqa: S603,S607


def _ps1_accepts(name: str) -> bool:
    regex = re.search(r"^\$BundleNameRegex = '([^']+)'$", (REPO / "install.ps1").read_text(), re.MULTILINE).group(1)  # type: ignore[union-attr]
    return re.match(regex, name) is not None and re.search(r"(^|/)\.\.?(/|$)", name) is None


@pytest.mark.parametrize("name", NAMES)
def test_the_installers_accept_exactly_the_names_the_format_allows(name: str) -> None:
    allowed = bundle.name_problem(name) is None
    assert _sh_accepts(name) == allowed
    assert _ps1_accepts(name) == allowed
