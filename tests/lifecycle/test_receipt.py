"""The receipt: one file, written by install.sh (awk), by install.ps1 and by the CLI (bootstrap/receipt.py),
read by all of them; the first record of a path wins; a damaged receipt is never replaced."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from bootstrap import errors
from bootstrap.plan import Overrides, build_plan
from bootstrap.receipt import CREATED, FOUND, Receipt, Recorder, dumps, first_missing, parse, state_dir_for
from bootstrap.settings import Settings
from bootstrap.status import env_id

from .conftest import REPO, installer_run

ODD_PATHS = ["/tmp/plain", '/tmp/with "quotes"', "/tmp/back\\slash", "/tmp/with space/ünïcödé 中文", "/tmp/a,b}c"]


def test_the_python_layout_is_one_entry_per_line_and_reads_back(tmp_path: Path) -> None:
    receipt = Receipt(tmp_path / "receipt.json")
    assert receipt.entries == [] and not receipt.exists
    for i, path in enumerate(ODD_PATHS):
        assert receipt.add(path, "folder", CREATED if i % 2 else FOUND, "cli", note=i)
    assert not receipt.add(ODD_PATHS[0], "env", CREATED, "cli")  # the first record of a path wins
    receipt.save()
    lines = (tmp_path / "receipt.json").read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["{", '  "receipt": 1,', '  "entries": ['] and lines[-2:] == ["  ]", "}"]
    assert len(lines) == 5 + len(ODD_PATHS)
    assert all(line.startswith('    {"path": ') for line in lines[3:-2])
    again = Receipt(tmp_path / "receipt.json")
    assert [(e.path, e.kind, e.status, e.extra) for e in again.entries] == [
        (p, "folder", CREATED if i % 2 else FOUND, {"note": i}) for i, p in enumerate(ODD_PATHS)]
    assert oct(os.stat(tmp_path / "receipt.json").st_mode & 0o777) == "0o600"


def test_any_json_layout_reads_and_duplicates_keep_the_first() -> None:
    doc = {"receipt": 1, "entries": [{"path": "/a", "kind": "env", "status": "created", "when": "t", "by": "cli"},
                                     {"path": "/a", "kind": "env", "status": "found", "when": "t", "by": "cli"}]}
    (entry,) = parse(json.dumps(doc, indent=7), Path("r.json"))
    assert entry.status == CREATED
    assert dumps([]) == '{\n  "receipt": 1,\n  "entries": [\n  ]\n}\n'


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"receipt": 2, "entries": []}',
                                  '{"receipt": 1, "entries": [{"path": "/a"}]}',
                                  '{"receipt": 1, "entries": [{"path": "/a", "kind": "env", "status": "maybe"}]}'])
def test_a_damaged_receipt_is_an_error_never_reset(tmp_path: Path, text: str) -> None:
    path = tmp_path / "receipt.json"
    path.write_text(text)
    with pytest.raises(errors.ReceiptError) as exc:
        Receipt(path)
    assert str(path) in str(exc.value) and "never replaced" in exc.value.remedy


def _plan(tmp_path: Path, state: str | None = None):
    manifest = tmp_path / "proj" / "manifest.yaml"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text((REPO / "manifest.yaml").read_text())
    settings = Settings(state_dir=Path(state) if state else None)
    return build_plan(Overrides(manifest=manifest), settings), manifest, settings


@pytest.mark.parametrize("state", [None, "elsewhere/state", "/ABS"])
def test_the_state_folder_rule_is_the_plans(tmp_path: Path, state: str | None) -> None:
    state = state.replace("/ABS", str(tmp_path / "abs")) if state else None
    plan, manifest, settings = _plan(tmp_path, state)
    assert state_dir_for(manifest, settings.state_dir) == plan.state_dir


def test_a_run_records_what_it_created_and_what_it_found(tmp_path: Path) -> None:
    plan, _, _ = _plan(tmp_path)
    plan.source_dir.mkdir()  # a checkout that was there before: found
    warnings = []
    with Recorder(plan, warn=warnings.append):
        plan.state_dir.mkdir()
        plan.model_dir(plan.model.repo_id).mkdir(parents=True)
    entries = {e.path: (e.kind, e.status, e.by) for e in Receipt(plan.state_dir / "receipt.json").entries}
    assert warnings == []
    assert entries == {
        str(plan.state_dir): ("state", CREATED, "cli"),
        str(plan.source_dir): ("source-checkout", FOUND, "cli"),
        str(plan.weights_dir): ("folder", CREATED, "cli"),
        str(plan.model_dir(plan.model.repo_id)): ("weights", CREATED, "cli"),
        str(plan.model_dir(plan.model.repo_id).parent): ("folder", CREATED, "cli"),
    }
    mtime = (plan.state_dir / "receipt.json").stat().st_mtime_ns
    with Recorder(plan):  # nothing new: the receipt is not rewritten, and created stays created
        pass
    assert (plan.state_dir / "receipt.json").stat().st_mtime_ns == mtime


def test_a_run_in_a_found_state_folder_records_its_own_files_there(tmp_path: Path) -> None:
    plan, _, _ = _plan(tmp_path)
    plan.state_dir.mkdir()
    with Recorder(plan):
        (plan.state_dir / "state.json").write_text("{}")
        (plan.state_dir / "logs").mkdir()
    entries = {Path(e.path).name: (e.kind, e.status) for e in Receipt(plan.state_dir / "receipt.json").entries}
    assert entries[".llama-bootstrap"] == ("state", FOUND)
    assert entries["state.json"] == ("state-file", CREATED) and entries["logs"] == ("logs", CREATED)
    assert "run.lock" not in entries


def test_a_damaged_receipt_is_not_overwritten_by_a_run(tmp_path: Path) -> None:
    plan, _, _ = _plan(tmp_path)
    plan.state_dir.mkdir()
    (plan.state_dir / "receipt.json").write_text("{damaged")
    warnings = []
    with Recorder(plan, warn=warnings.append):
        plan.source_dir.mkdir()
    assert (plan.state_dir / "receipt.json").read_text() == "{damaged"
    assert len(warnings) == 1 and "cannot be read" in warnings[0]


def test_first_missing() -> None:
    assert first_missing(Path("/")) is None
    assert first_missing(Path("/no-such-dir-x/a/b")) == Path("/no-such-dir-x")


# -- install.sh writes the same file ----------------------------------------------------------------


@installer_run
def test_install_sh_and_python_write_and_read_the_same_receipt(sandbox) -> None:
    receipt = sandbox.root / "state" / "receipt.json"
    adds = "\n".join(f"receipt_add '{p.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}' folder created"
                     for p in ODD_PATHS)
    proc = sandbox.call(f"RECEIPT='{receipt}'\n{adds}\nreceipt_add '{ODD_PATHS[0]}' env found ', \"x\": true'")
    assert proc.returncode == 0, proc.stderr
    read = Receipt(receipt)
    assert [(e.path, e.kind, e.status, e.by) for e in read.entries] == [(p, "folder", CREATED, "installer")
                                                                        for p in ODD_PATHS]
    read.add("/tmp/from python ü", "log", CREATED, "cli", extra_list=[1, 2])
    read.save()
    # install.sh finds Python's entries (the same escaping), adds after them, and keeps Python's lines
    script = f"""RECEIPT='{receipt}'
        receipt_add '/tmp/from python ü' folder found
        receipt_add /tmp/last folder found
        printf '<%s>\\n' "$(receipt_status '/tmp/from python ü')" "$(receipt_status /tmp/last)" \\
            "$(receipt_status /tmp/never)"
        receipt_paths 'folder|log'"""
    proc = sandbox.call(script)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[:3] == ["<created>", "<found>", "<>"]
    assert out[3:] == ODD_PATHS + ["/tmp/from python ü", "/tmp/last"]
    final = Receipt(receipt)
    assert [e.path for e in final.entries] == ODD_PATHS + ["/tmp/from python ü", "/tmp/last"]
    assert final.get("/tmp/from python ü").extra == {"extra_list": [1, 2]}


@installer_run
def test_install_sh_refuses_a_receipt_it_did_not_write(sandbox) -> None:
    receipt = sandbox.root / "receipt.json"
    receipt.write_text(json.dumps({"receipt": 1, "entries": []}, indent=4))
    proc = sandbox.call(f"RECEIPT='{receipt}'; receipt_add /x folder created")
    assert proc.returncode == 1
    assert "not in llama-bootstrap's layout" in proc.stderr
    assert json.loads(receipt.read_text()) == {"receipt": 1, "entries": []}
    assert [p.name for p in receipt.parent.iterdir() if p.name.startswith("receipt.json.")] == []


@installer_run
@pytest.mark.parametrize("state", ["", "rel/state", "/ABS"])
def test_install_sh_finds_the_receipt_where_the_cli_does(sandbox, tmp_path: Path, state: str) -> None:
    state = state.replace("/ABS", str(tmp_path / "abs"))
    manifest = sandbox.repo / "manifest.yaml"
    proc = sandbox.call(f"OPT_MANIFEST='{manifest}'; receipt_locate; printf '%s' \"$RECEIPT\"",
                        LLAMA_BOOTSTRAP_STATE_DIR=state)
    assert proc.returncode == 0, proc.stderr
    want = state_dir_for(manifest, Path(state) if state else None) / "receipt.json"
    assert proc.stdout == str(want)


@installer_run
def test_install_sh_gives_an_env_the_id_status_computes(sandbox, tmp_path: Path) -> None:
    for kind, meta in (("env", "conda-meta"), ("venv", "")):
        prefix = tmp_path / kind
        (prefix / meta).mkdir(parents=True, exist_ok=True)
        if kind == "env":
            (prefix / meta / "llama-bootstrap-lock.sha256").write_text(hashlib.sha256(b"a").hexdigest() + "  x.lock\n")
        (prefix / meta / "llama-bootstrap-pip-lock.sha256").write_text(hashlib.sha256(b"b").hexdigest() + "  y.txt\n")
        proc = sandbox.call(f"ENV_KIND={'conda' if kind == 'env' else 'venv'}; env_id_of '{prefix}'")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == env_id(prefix, kind)
