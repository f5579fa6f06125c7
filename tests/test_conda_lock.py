"""The conda layer: environment.yml, conda-lock.yml and its explicit renders; bootstrap.lock.

The lock cannot be re-solved here (no conda channel is reachable), so these tests check
everything that can be checked offline with conda-lock's own code: the file parses, its
content hashes are the ones conda-lock computes for environment.yml, every dependency of
every package is satisfied inside the lock (conda's own MatchSpec semantics, vendored by
conda-lock), and the committed explicit files are byte-for-byte what ``conda-lock render``
produces.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("conda_lock")

from conda_lock._vendor.conda.models.match_spec import MatchSpec  # noqa: E402
from conda_lock._vendor.conda.models.version import VersionOrder  # noqa: E402
from conda_lock.conda_lock import do_render  # noqa: E402
from conda_lock.content_hash import compute_content_hashes  # noqa: E402
from conda_lock.lockfile import parse_conda_lock_file  # noqa: E402
from conda_lock.lookup import DEFAULT_MAPPING_URL  # noqa: E402
from conda_lock.src_parser import make_lock_spec  # noqa: E402
from conda_lock.virtual_package import default_virtual_package_repodata  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = ROOT / "environment.yml"
LOCK_FILE = ROOT / "conda-lock.yml"
PLATFORMS = ("linux-64", "win-64")


@pytest.fixture(scope="module")
def lockfile():
    return parse_conda_lock_file(LOCK_FILE)


def _by_platform(lockfile, platform):
    return {p.name: p for p in lockfile.package if p.platform == platform}


def _build_string(url: str) -> str:
    filename = url.rsplit("/", 1)[-1]
    for suffix in (".tar.bz2", ".conda"):
        if filename.endswith(suffix):
            filename = filename[: -len(suffix)]
    return filename.rsplit("-", 1)[-1]


def satisfies(name: str, spec: str, version: str, build: str = "0") -> bool:
    """Does package ``name`` at ``version``/``build`` satisfy the lock's dependency ``spec``?

    conda-lock writes each dependency as ``name: spec`` (``spec`` may be empty = any);
    conda's own MatchSpec decides, so ``.a0`` ordering, globs and ``|`` work as in conda.
    """
    match_spec = MatchSpec(f"{name} {spec}".strip())
    record = {"name": name, "version": version, "build": build, "build_number": 0}
    return bool(match_spec.match(record))


# -- the matcher itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "version", "build", "expected"),
    [
        ("", "1.0", "0", True),
        (">=3.7", "3.9.18", "0", True),
        (">=3.7", "3.6.15", "0", False),
        ("<4.0a0", "3.99", "0", True),
        ("<4.0a0", "4.0.0", "0", False),
        ("<=2.0", "2.0", "0", True),
        ("<=2.0", "2.0.1", "0", False),
        ("==1.5.7", "1.5.7", "0", True),
        ("!=2.0.0,!=2.0.1", "2.0.1", "0", False),
        ("!=2.0.0,!=2.0.1", "2.0.2", "0", True),
        (">=1.2.13,<1.3.0a0", "1.2.13", "0", True),
        (">=1.2.13,<1.3.0a0", "1.3.0", "0", False),  # 1.3.0a0 < 1.3.0
        (">=1.2.13,<1.3.0a0", "1.3.0rc1", "0", False),  # ... and < every 1.3 pre-release
        ("<1.3.0a0", "1.2.99", "0", True),
        (">=1|<0.5", "0.4", "0", True),
        (">=1|<0.5", "0.7", "0", False),
        ("3.9.*", "3.9.18", "0", True),
        ("3.9.*", "3.10.0", "0", False),
        ("3.9.* *_cp39", "3.9", "4_cp39", True),
        ("3.9.* *_cp39", "3.9", "4_cp310", False),
        ("0.1", "0.1", "conda_forge", True),  # a bare version is exact in conda
        ("0.1", "0.1.1", "conda_forge", False),
        ("14.*", "14.3", "0", True),
    ],
)
def test_matcher(spec, version, build, expected):
    assert satisfies("pkg", spec, version, build) is expected


def test_a0_ordering():
    assert VersionOrder("1.3.0a0") < VersionOrder("1.3.0rc1") < VersionOrder("1.3.0")
    assert VersionOrder("1.2.13") < VersionOrder("1.3.0a0")


# -- environment.yml ---------------------------------------------------------------------------


def test_environment_file_is_the_minimal_conda_layer():
    env = yaml.safe_load(ENV_FILE.read_text(encoding="utf-8"))
    assert env["name"] == "myenv"
    assert env["channels"] == ["conda-forge", "nodefaults"]
    assert env["dependencies"] == ["python=3.9", "pip"]
    assert env["platforms"] == list(PLATFORMS)


# -- conda-lock.yml ----------------------------------------------------------------------------


def test_lock_parses_and_covers_both_platforms(lockfile):
    assert lockfile.metadata.platforms == list(PLATFORMS)
    assert [c.url for c in lockfile.metadata.channels] == ["conda-forge"]
    assert lockfile.metadata.sources == ["environment.yml"]
    for platform in PLATFORMS:
        assert _by_platform(lockfile, platform), platform
    raw = yaml.safe_load(LOCK_FILE.read_text(encoding="utf-8"))
    assert raw["version"] == 1


def test_content_hash_matches_environment_yml(lockfile):
    spec = make_lock_spec(src_files=[ENV_FILE], mapping_url=DEFAULT_MAPPING_URL)
    computed = compute_content_hashes(spec, default_virtual_package_repodata())
    assert lockfile.metadata.content_hash == computed


def test_no_duplicate_packages_per_platform(lockfile):
    for platform in PLATFORMS:
        names = [p.name for p in lockfile.package if p.platform == platform]
        assert len(names) == len(set(names)), platform


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_dependency_is_satisfied_inside_the_lock(lockfile, platform):
    packages = _by_platform(lockfile, platform)
    problems = []
    for pkg in packages.values():
        assert pkg.manager == "conda"
        for dep, spec in pkg.dependencies.items():
            if dep.startswith("__"):  # virtual packages (__glibc, __unix, __win) are not locked
                continue
            target = packages.get(dep)
            if target is None:
                problems.append(f"{pkg.name} needs {dep} {spec}: not in the lock")
            elif not satisfies(dep, spec, target.version, _build_string(target.url)):
                problems.append(f"{pkg.name} needs {dep} {spec}: lock has {target.version}")
    assert problems == []


@pytest.mark.parametrize("platform", PLATFORMS)
def test_python_is_3_9_at_least_3_9_6(lockfile, platform):
    python = _by_platform(lockfile, platform)["python"]
    assert VersionOrder("3.9.6") <= VersionOrder(python.version) < VersionOrder("3.10.0a0")
    assert _build_string(python.url).endswith("_cpython")
    assert "pip" in _by_platform(lockfile, platform)


def test_every_package_is_https_with_md5_and_sha256(lockfile):
    for pkg in lockfile.package:
        assert pkg.url.startswith("https://conda.anaconda.org/conda-forge/"), pkg.url
        subdir = pkg.url.split("/")[-2]
        assert subdir in (pkg.platform, "noarch"), pkg.url
        assert re.fullmatch(r"[0-9a-f]{32}", pkg.hash.md5 or ""), pkg.name
        assert re.fullmatch(r"[0-9a-f]{64}", pkg.hash.sha256 or ""), pkg.name


@pytest.mark.parametrize("platform", PLATFORMS)
def test_explicit_file_is_conda_locks_own_render(tmp_path, platform):
    # do_render is conda-lock's `render` command body; it needs no network.
    do_render(
        parse_conda_lock_file(LOCK_FILE),
        kinds=["explicit"],
        filename_template=str(tmp_path / "conda-{platform}.lock"),
        override_platform=[platform],
    )
    rendered = (tmp_path / f"conda-{platform}.lock").read_text(encoding="utf-8")
    committed = (ROOT / f"conda-{platform}.lock").read_text(encoding="utf-8")
    assert committed == rendered
    lines = committed.splitlines()
    assert "@EXPLICIT" in lines
    urls = [line for line in lines if line and not line.startswith(("#", "@"))]
    assert urls and all(re.fullmatch(r"https://\S+#[0-9a-f]{32}", u) for u in urls)


