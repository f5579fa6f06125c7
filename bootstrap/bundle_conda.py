"""The conda layer of a bundle: the packages of the explicit lock ``conda-<platform>.lock`` (md5 or sha256 from
the lock) and the pinned Miniforge installer (sha256 from install.sh / install.ps1), fetched over https.

When the channel cannot be reached, the packages are left out as a whole and the reason goes into BUNDLE.json:
the offline install then falls back to a venv, as ``install.sh --demo`` does. When only the installer cannot be
reached, the packages are kept (a target with its own conda uses them) and BUNDLE.json says that too. A file
that arrives but does not match its pin stops the build (a mirror serving other bytes is not "unreachable").
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple
from urllib.parse import urlsplit

from bootstrap import bundle, errors
from bootstrap.bundle_layers import Member

#: The channel prefix of the explicit locks; the installers rewrite exactly this prefix to the bundle's folder.
CONDA_FORGE = "https://conda.anaconda.org/conda-forge"
MINIFORGE_PIN = "the installers' Miniforge pin"
_PIN_SH = {"version": r'^MINIFORGE_VERSION="([^"]+)"', "sha256": r'^MINIFORGE_SHA256_LINUX_X86_64="([0-9a-f]{64})"',
           "global": r'^MINIFORGE_URL_GLOBAL="([^"]+)"', "cn": r'^MINIFORGE_URL_CN="([^"]+)"'}
_PIN_PS1 = {"version": r"^\$MiniforgeVersion = '([^']+)'",
            "sha256": r"^\$MiniforgeSha256WindowsX86_64 = '([0-9a-f]{64})'",
            "global": r'^\$MiniforgeUrlGlobal = "([^"]+)"', "cn": r'^\$MiniforgeUrlCn = "([^"]+)"'}


@dataclass(frozen=True)
class Package:
    url: str
    rel: str  # <subdir>/<file name>, as under the channel
    algo: str  # md5 | sha256
    digest: str


class _Unreachable(Exception):
    """The file could not be fetched at all (network, HTTP status): the layer is left out."""


def explicit_packages(text: str, lock_name: str) -> List[Package]:
    """The packages of an explicit lock (after ``@EXPLICIT``: ``URL#md5`` or ``URL#sha256:...``)."""
    lines = text.splitlines()
    if "@EXPLICIT" not in (line.strip() for line in lines):
        raise errors.BundleBuildError(f"{lock_name} is not an explicit conda lock (no @EXPLICIT line)", layer="conda")
    out = []
    for line in lines[[line.strip() for line in lines].index("@EXPLICIT") + 1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        url, _, fragment = line.partition("#")
        algo, digest = ("sha256", fragment[7:]) if fragment.startswith("sha256:") else \
            ("md5", fragment) if re.fullmatch(r"[0-9a-f]{32}", fragment) else ("", "")
        rel = url[len(CONDA_FORGE) + 1:] if url.startswith(CONDA_FORGE + "/") else ""
        if not algo or not rel or bundle.name_problem(rel) or rel.count("/") != 1:
            raise errors.BundleBuildError(f"{lock_name}: {line!r} is not '{CONDA_FORGE}/<subdir>/<file>#<md5>'",
                                          layer="conda")
        out.append(Package(url, rel, algo, digest))
    return out


def miniforge_pin(root: Path, platform: str, profile_key: str) -> Tuple[str, str, str]:
    """(base URL, file name, sha256) of the Miniforge installer the installers pin, read from them."""
    script, pins = ("install.ps1", _PIN_PS1) if platform == "win-64" else ("install.sh", _PIN_SH)
    text = (root / script).read_text(encoding="utf-8")
    found = {}
    for key, pattern in pins.items():
        match = re.search(pattern, text, re.MULTILINE)
        if not match:
            raise errors.BundleBuildError(f"{script}: cannot read the Miniforge pin ({key})", layer="conda")
        found[key] = match.group(1)
    version = found["version"]
    base = found["cn" if profile_key == "cn" else "global"]
    base = base.replace("${MINIFORGE_VERSION}", version).replace("$MiniforgeVersion", version)
    name = f"Miniforge3-{version}-Windows-x86_64.exe" if platform == "win-64" else \
        f"Miniforge3-{version}-Linux-x86_64.sh"
    return base, name, found["sha256"]


def _kind(exc: BaseException) -> str:
    """The innermost cause's class name (NameResolutionError, ConnectTimeoutError, ...): short and telling."""
    cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    return type(getattr(cause, "reason", None) or cause).__name__


def _download(url: str, dest: Path, algo: str, digest: str) -> None:
    """``url`` to ``dest`` through a temp file, checked against ``algo``/``digest`` before it is moved in."""
    from bootstrap.transport import Transport, network_errors

    transport = Transport(url)
    tmp = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            response = transport.request("GET", url, stream=True)
            with response:
                if response.status_code != 200:
                    raise _Unreachable(f"HTTP {response.status_code} for {url}")
                hasher = hashlib.new(algo)
                with open(tmp, "wb") as fh:
                    for chunk in response.iter_content(1 << 20):
                        hasher.update(chunk)
                        fh.write(chunk)
        except network_errors() as exc:
            raise _Unreachable(f"cannot reach {urlsplit(url).hostname} ({_kind(exc)})") from exc
        got = hasher.hexdigest()
        if got != digest:
            raise errors.BundleBuildError(f"{url} does not match its pin ({algo} want: {digest}, got: {got})",
                                          layer="conda", remedy="the channel or mirror serves other bytes than the "
                                          "lock pins; use another mirror (--profile) or re-lock")
        os.replace(tmp, dest)
    finally:
        transport.close()
        if tmp.exists():
            tmp.unlink()


def conda_layer(root: Path, platform: str, work: Path, *, channel: Optional[str], profile_key: str,
                log: Callable[[str], None], miniforge_base: Optional[str] = None) -> Tuple[List[Member], str]:
    """(members, "") with every package and the installer; ([], why) when the packages cannot be fetched;
    (the packages, why) when only the installer cannot."""
    lock_name = f"conda-{platform}.lock"
    packages = explicit_packages((root / lock_name).read_text(encoding="utf-8"), lock_name)
    base, installer, sha256 = miniforge_pin(root, platform, profile_key)
    base = (miniforge_base or base).rstrip("/")
    members = []
    log(f"conda layer: {len(packages)} packages of {lock_name}" + (f" from {channel}" if channel else "")
        + f", and {installer}")
    try:
        for pkg in packages:
            url = f"{channel.rstrip('/')}/{pkg.rel}" if channel else pkg.url
            dest = work.joinpath(*pkg.rel.split("/"))
            _download(url, dest, pkg.algo, pkg.digest)
            members.append(Member(f"{bundle.CONDA}/{pkg.rel}", path=dest, layer="conda", pinned_by=lock_name))
    except _Unreachable as exc:
        return [], f"the conda channel was unreachable when the bundle was built: {exc}"
    try:
        _download(f"{base}/{installer}", work / installer, "sha256", sha256)
    except _Unreachable as exc:
        return members, f"the Miniforge installer was unreachable when the bundle was built: {exc}; the target " \
                        "needs its own conda for the conda packages"
    members.append(Member(f"{bundle.CONDA}/{installer}", path=work / installer, layer="conda",
                          executable=installer.endswith(".sh"), sha256_in=frozenset([sha256]),
                          pinned_by=MINIFORGE_PIN))
    return members, ""
