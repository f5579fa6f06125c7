"""The bad-input corpus, through the real CLI in a subprocess.

Each manifest in tests/fixtures/manifests/bad/ is the shipped manifest with one defect; the defective
line carries the comment ``# <-- defect``, and that is the line the error must name. Each case is
copied into its own folder; the command must exit 2, name the field (or the argument / variable)
and the line, print no traceback, and write nothing.

``models`` is used where the point is the manifest: it does not import torch, so each run is short.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from helpers_core import BAD_DIR, SHIPPED_MANIFEST, bootstrap_cmd, clean_env, listing, shipped_text

MARKER = b"# <-- defect"
TIMEOUT_S = 30  # a manifest that blocks (a FIFO) or never ends (a device) would be caught here
POSIX = pytest.mark.skipif(os.name != "posix", reason="named pipes and /dev are POSIX")


@dataclass(frozen=True)
class Case:
    manifest: str  # a corpus file name, or "shipped", "a-directory", "missing", "a-fifo", a /dev/ path
    names: Tuple[str, ...]  # what stderr must name: the field, argument or variable (and the problem)
    line: object = True  # True: stderr names the line of the "# <-- defect" comment; "any": some line
    command: Tuple[str, ...] = ("models",)
    args: Tuple[str, ...] = ()
    env: Dict[str, str] = field(default_factory=dict)
    timeout: float = TIMEOUT_S


CASES = [
    # -- YAML itself
    pytest.param(Case("yaml-syntax.yaml", ("invalid YAML", "mapping values")), id="yaml-syntax-error"),
    pytest.param(Case("tab-indent.yaml", ("invalid YAML", "tabs")), id="tab-indentation"),
    pytest.param(Case("empty.yaml", ("empty",), line=False), id="empty-file"),
    pytest.param(Case("only-comment.yaml", ("empty",), line=False), id="only-a-comment"),
    pytest.param(Case("top-level-list.yaml", ("mapping", "list")), id="top-level-list"),
    pytest.param(Case("top-level-scalar.yaml", ("mapping",)), id="top-level-scalar"),
    pytest.param(Case("non-utf8.yaml", ("UTF-8",)), id="non-utf8-bytes"),
    pytest.param(Case("duplicate-key.yaml", ("duplicate key", "models.llama2-chinese-7b-chat.size_gb")),
                 id="duplicate-keys"),
    pytest.param(Case("python-tag.yaml", ("invalid YAML", "python/object")), id="python-tag-not-constructed"),
    pytest.param(Case("alias-recursive.yaml", ("aliases",), line="any"),
                 id="alias-recursive"),
    pytest.param(Case("alias-billion-laughs.yaml", ("aliases",), line="any", timeout=3),
                 id="alias-billion-laughs"),
    pytest.param(Case("nested-5000-deep.yaml", ("invalid YAML", "nested more than")), id="nested-5000-deep"),
    # -- types and ranges
    pytest.param(Case("size-gb-string.yaml", ("models.llama2-chinese-7b-chat.size_gb", "number")),
                 id="size_gb-string"),
    pytest.param(Case("max-new-tokens-float.yaml", ("smoke.max_new_tokens", "integer")), id="max_new_tokens-float"),
    pytest.param(Case("env-python-unquoted.yaml", ("env.python", "quote it")), id="env-python-unquoted"),
    pytest.param(Case("size-gb-1e999.yaml", ("models.llama2-chinese-7b-chat.size_gb",)), id="size_gb-1e999"),
    pytest.param(Case("size-gb-inf.yaml", ("models.llama2-chinese-7b-chat.size_gb", "finite")),
                 id="size_gb-1.0e+999-inf"),
    pytest.param(Case("disk-margin-nan.yaml", ("requirements.disk_margin_gb", "finite")),
                 id="disk_margin_gb-nan"),
    pytest.param(Case("max-new-tokens-10e30.yaml", ("smoke.max_new_tokens", "4096")), id="max_new_tokens-10**30"),
    pytest.param(Case("size-gb-negative.yaml", ("models.llama2-chinese-7b-chat.size_gb", "greater than 0")),
                 id="size_gb-negative"),
    pytest.param(Case("version-2.yaml", ("version",)), id="version-2"),
    pytest.param(Case("version-missing.yaml", ("version", "missing"), line=False), id="version-missing"),
    pytest.param(Case("precision-fp8.yaml", ("smoke.precision", "fp16")), id="precision-fp8"),
    pytest.param(Case("gpu-maybe.yaml", ("requirements.gpu", "preferred")), id="gpu-maybe"),
    pytest.param(Case("python-spec.yaml", ("requirements.python",)), id="python-spec-not-a-specifier"),
    # -- keys
    pytest.param(Case("unknown-top-level-key.yaml", ("mirrors", "unknown key")), id="unknown-top-level-key"),
    pytest.param(Case("unknown-nested-key.yaml", ("requirements.disk_margn_gb", "unknown key")),
                 id="unknown-nested-key-typo"),
    pytest.param(Case("model-unknown.yaml", ("model", "llama2-chinese-70b-chat")), id="model-not-in-models"),
    pytest.param(Case("profile-unknown.yaml", ("profile", "mars")), id="profile-not-in-profiles"),
    pytest.param(Case("models-empty.yaml", ("models",)), id="models-empty"),
    pytest.param(Case("model-key-uppercase.yaml", ("models", "Llama2-Chinese-13B")),
                 id="model-key-uppercase"),
    pytest.param(Case("lora-without-base-size.yaml", ("models.llama2-chinese-7b-chat-lora", "base_size_gb")),
                 id="lora-without-base_size_gb"),
    pytest.param(Case("template-without-prompt.yaml", ("smoke.template", "{prompt}")), id="template-without-prompt"),
    # -- URLs, refs, paths
    pytest.param(Case("endpoint-http.yaml", ("profiles.global.hf_endpoint", "https")), id="endpoint-plain-http"),
    pytest.param(Case("endpoint-ftp.yaml", ("profiles.cn.hf_endpoint",)), id="endpoint-ftp"),
    pytest.param(Case("endpoint-credentials.yaml", ("profiles.global.hf_endpoint", "credentials")),
                 id="endpoint-user-pass"),
    pytest.param(Case("ref-short.yaml", ("source.ref", "40")), id="ref-short-sha"),
    pytest.param(Case("ref-branch.yaml", ("source.ref",)), id="ref-branch-name"),
    pytest.param(Case("weights-dir-outside.yaml", ("weights.dir", "escapes")), id="weights-dir-outside"),
    pytest.param(Case("source-dir-escapes.yaml", ("source.dir", "escapes")), id="source-dir-escapes"),
    pytest.param(Case("source-url-http.yaml", ("source.url",)), id="source-url-plain-http"),
    # -- the file itself
    pytest.param(Case("a-directory", ("is a directory",), line=False), id="manifest-is-a-directory"),
    pytest.param(Case("missing", ("no such file",), line=False), id="manifest-missing"),
    pytest.param(Case("a-fifo", ("named pipe",), line=False), id="manifest-is-a-fifo", marks=POSIX),
    pytest.param(Case("/dev/null", ("character device",), line=False), id="manifest-is-dev-null", marks=POSIX),
    pytest.param(Case("/dev/zero", ("character device",), line=False), id="manifest-is-dev-zero", marks=POSIX),
    pytest.param(Case("missing", ("no such file", "nope.yaml"), line=False,
                      env={"LLAMA_BOOTSTRAP_MANIFEST": "nope.yaml"}), id="env-manifest-missing"),
    # -- command line and environment (the manifest is the shipped one)
    pytest.param(Case("shipped", ("--model", "llama3"), line=False, args=("--model", "llama3")),
                 id="flag-model-unknown"),
    pytest.param(Case("shipped", ("--profile", "mars"), line=False, args=("--profile", "mars")),
                 id="flag-profile-unknown"),
    pytest.param(Case("shipped", ("LLAMA_BOOTSTRAP_MODEL", "llama3"), line=False,
                      env={"LLAMA_BOOTSTRAP_MODEL": "llama3"}), id="env-model-unknown"),
    pytest.param(Case("shipped", ("LLAMA_BOOTSTRAP_PROFILE", "mars"), line=False,
                      env={"LLAMA_BOOTSTRAP_PROFILE": "mars"}), id="env-profile-unknown"),
    pytest.param(Case("shipped", ("HF_ENDPOINT", "http://example.com"), line=False,
                      env={"HF_ENDPOINT": "http://example.com"}), id="env-endpoint-plain-http"),
    pytest.param(Case("shipped", ("--endpoint", "ftp://x"), line=False, command=("check", "--offline"),
                      args=("--endpoint", "ftp://x")), id="flag-endpoint-ftp"),
    pytest.param(Case("shipped", ("--source", "ftp"), line=False, command=("check", "--offline"),
                      args=("--source", "ftp=x")), id="flag-source-unknown-kind"),
    pytest.param(Case("shipped", ("--source", "dir=PATH"), line=False, command=("check", "--offline"),
                      args=("--source", "dir")), id="flag-source-dir-without-path"),
    pytest.param(Case("shipped", ("--source", "credentials"), line=False, command=("check", "--offline"),
                      args=("--source", "hub=https://u:pw@mirror.example")), id="flag-source-credentials"),
    pytest.param(Case("shipped", ("LLAMA_BOOTSTRAP_SOURCES", "gopher"), line=False, command=("check", "--offline"),
                      env={"LLAMA_BOOTSTRAP_SOURCES": "hub;gopher://x"}), id="env-sources-bad"),
    pytest.param(Case("shipped", ("--bogus",), line=False, args=("--bogus",)), id="flag-unknown-option"),
    pytest.param(Case("shipped", ("HF_TOKEN", "line break"), line=False, env={"HF_TOKEN": "tok-pasted\ntwice"}),
                 id="env-token-with-a-newline"),
    pytest.param(Case("gpu-maybe.yaml", ("requirements.gpu",), command=("check", "--offline")),
                 id="check-reads-the-same-manifest"),
]


def defect_line(path: Path) -> int:
    raw = path.read_bytes()
    assert MARKER in raw, f"{path.name} has no '# <-- defect' comment"
    return raw[: raw.index(MARKER)].count(b"\n") + 1


def _prepare(case: Case, kit: Path) -> Tuple[Path, Optional[Path]]:
    """(the --manifest argument, the corpus file it came from)."""
    kit.mkdir(parents=True)
    if case.manifest == "shipped":
        target = kit / "manifest.yaml"
        shutil.copyfile(SHIPPED_MANIFEST, target)
        return target, None
    if case.manifest == "a-directory":
        return kit, None
    if case.manifest == "missing":
        return kit / "nope.yaml", None
    if case.manifest == "a-fifo":  # no writer ever opens it: reading would wait forever
        os.mkfifo(kit / "manifest.yaml")
        return kit / "manifest.yaml", None
    if case.manifest.startswith("/dev/"):
        return Path(case.manifest), None
    source = BAD_DIR / case.manifest
    target = kit / "manifest.yaml"
    shutil.copyfile(source, target)
    return target, source


def run_cli(case: Case, kit: Path, target: Path, **env: str) -> subprocess.CompletedProcess:
    manifest_args = () if "LLAMA_BOOTSTRAP_MANIFEST" in case.env else ("--manifest", str(target))
    argv = bootstrap_cmd(*case.command, *manifest_args, *case.args)
    return subprocess.run(argv, cwd=kit, env=clean_env(**case.env, **env), capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=case.timeout, check=False)


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    target, source = _prepare(case, kit)
    before = listing(tmp_path)
    proc = run_cli(case, kit, target)
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 2, (proc.returncode, out, err)
    assert "Traceback" not in out + err
    assert out == "", "errors go to stderr; nothing on stdout without --json"
    assert err.startswith("error: ") or "Error:" in err  # ours, or click's for an unknown option
    for name in case.names:
        assert name in err, f"{name!r} not named in:\n{err}"
    if case.manifest != "shipped" and "LLAMA_BOOTSTRAP_MANIFEST" not in case.env:
        assert str(target) in err, f"the manifest's path is not named in:\n{err}"
    if case.line == "any":
        assert re.search(r"(:\d+\b|\bline \d+\b)", err), f"no line named in:\n{err}"
    elif case.line:
        assert source is not None
        n = defect_line(source)
        assert re.search(rf"(:{n}\b|\bline {n}\b)", err), f"line {n} not named in:\n{err}"
    assert listing(tmp_path) == before, "the command wrote something"
    assert not any(p.name in (".llama-bootstrap", "models", "Llama2-Chinese") for p in tmp_path.rglob("*"))


def test_the_corpus_is_complete() -> None:
    """Every file in the corpus is used, and every defect is a single-line change of the shipped file."""
    used = {p.values[0].manifest for p in CASES}
    files = {p.name for p in BAD_DIR.glob("*.yaml")}
    assert files <= used, f"unused corpus files: {sorted(files - used)}"
    assert len([p for p in CASES]) >= 30
    shipped = shipped_text().splitlines()
    for name in ("size-gb-negative.yaml", "gpu-maybe.yaml", "ref-short.yaml", "weights-dir-outside.yaml"):
        lines = (BAD_DIR / name).read_text(encoding="utf-8").splitlines()
        diff = [i for i, (a, b) in enumerate(zip(shipped, lines)) if a != b]
        assert len(lines) == len(shipped) and len(diff) == 1, name
        assert diff[0] + 1 == defect_line(BAD_DIR / name)


def test_debug_switch_prints_the_traceback(tmp_path: Path) -> None:
    case = Case("size-gb-negative.yaml", ())
    kit = tmp_path / "kit"
    target, _ = _prepare(case, kit)
    proc = run_cli(case, kit, target, LLAMA_BOOTSTRAP_DEBUG="1")
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ManifestError" in proc.stderr
    assert "error: " in proc.stderr and "models.llama2-chinese-7b-chat.size_gb" in proc.stderr


@pytest.mark.parametrize(
    "how",
    ["manifest", "env"],
)
def test_loopback_http_endpoint_is_accepted(tmp_path: Path, how: str) -> None:
    """The other side of endpoint-plain-http: http is fine on 127.0.0.1 (the local test hub)."""
    kit = tmp_path / "kit"
    kit.mkdir()
    text = shipped_text()
    env = {}
    if how == "manifest":
        text = text.replace("hf_endpoint: https://huggingface.co", "hf_endpoint: http://127.0.0.1:8080")
    else:
        env["HF_ENDPOINT"] = "http://127.0.0.1:8080"
    (kit / "manifest.yaml").write_text(text, encoding="utf-8")
    proc = subprocess.run(bootstrap_cmd("models", "--manifest", str(kit / "manifest.yaml")), cwd=kit,
                          env=clean_env(**env), capture_output=True, text=True, encoding="utf-8",
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "llama2-chinese-7b-chat" in proc.stdout
