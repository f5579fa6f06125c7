"""A real local git repository that stands in for the FlagAlpha/Llama2-Chinese source checkout.

Commits use a fixed author, committer and dates, and git runs without the user's or the system's config
(``GIT_CONFIG_NOSYSTEM=1``, ``GIT_CONFIG_GLOBAL=/dev/null``, ``HOME`` pointing at a path that does not
exist), so the commit shas are the same on every machine and every run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Mapping, Optional

AUTHOR_NAME = "Llama Bootstrap Demo"
AUTHOR_EMAIL = "demo@llama-bootstrap.invalid"
#: Commit n (0-based) is dated BASE_TIME + n hours, so every commit's sha is reproducible.
BASE_TIME = 1690156800  # 2023-07-24T00:00:00Z
BRANCH = "main"

README = """\
# Llama2-Chinese (demo source)

This repository is a small, local stand-in for the Llama2-Chinese source checkout, created by
`llama-bootstrap demo`. It holds the chat example that the smoke test mirrors.

Prompt format:

    "<s>Human: {prompt}\n</s><s>Assistant: "
"""

CHAT_DEMO = '''\
"""Minimal chat example: load a Llama2-Chinese model folder and answer one prompt."""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(model_dir, prompt="介绍一下中国"):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    text = "<s>Human: " + prompt + "\\n</s><s>Assistant: "
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
    print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))


if __name__ == "__main__":
    main(sys.argv[1])
'''

REQUIREMENTS = "torch>=2.1\ntransformers>=4.45\nsentencepiece>=0.2\naccelerate>=0.30\n"


class GitError(RuntimeError):
    """A git command failed; carries the command and its stderr."""

    def __init__(self, args: List[str], stderr: str) -> None:
        super().__init__(f"command failed: {' '.join(args)}\n{stderr.strip()}")
        self.args_list, self.stderr = args, stderr


def git_env(repo: Path, when: Optional[int] = None) -> Dict[str, str]:
    """An environment for git that ignores user/system config and pins identity (and dates, if given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    repo = Path(repo).resolve()
    nowhere = str(repo / ".git" / "no-home")  # never created: no ~/.gitconfig is read
    env.update(
        GIT_CEILING_DIRECTORIES=str(repo.parent),  # never pick up an enclosing repository
        HOME=nowhere,
        XDG_CONFIG_HOME=nowhere,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,  # git >= 2.32; older git looks in $HOME, which does not exist
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=AUTHOR_NAME,
        GIT_AUTHOR_EMAIL=AUTHOR_EMAIL,
        GIT_COMMITTER_NAME=AUTHOR_NAME,
        GIT_COMMITTER_EMAIL=AUTHOR_EMAIL,
        LC_ALL="C",
    )
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{when} +0000"
    return env


def run_git(repo: Path, *args: str, when: Optional[int] = None) -> str:
    """Run ``git -C repo args...`` (argument list, isolated config) and return its stdout."""
    git = shutil.which("git")
    if git is None:
        raise FileNotFoundError("git is not installed")
    cmd = [git, "-C", str(repo), "-c", "core.autocrlf=false", "-c", "commit.gpgsign=false",
           "-c", "core.hooksPath=/dev/null", *args]
    proc = subprocess.run(cmd, env=git_env(repo, when), capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise GitError(cmd, proc.stderr)
    return proc.stdout


def head_sha(repo: Path) -> str:
    return run_git(repo, "rev-parse", "HEAD").strip()


def add_commit(repo: Path, files: Mapping[str, str], message: str) -> str:
    """Write ``files`` (relative path -> text) into ``repo``, commit them, return the new HEAD sha.

    The commit date is BASE_TIME plus one hour per existing commit, so the sha depends only on history.
    """
    repo = Path(repo)
    for rel, text in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    try:
        count = int(run_git(repo, "rev-list", "--count", "HEAD").strip())
    except GitError:
        count = 0  # no commits yet
    run_git(repo, "add", "--", *files)
    run_git(repo, "commit", "--quiet", "--no-verify", "-m", message, when=BASE_TIME + 3600 * count)
    return head_sha(repo)


def make_source_repo(dest: Path) -> str:
    """Create a small Llama2-Chinese-like git repo at ``dest`` (two commits); return the HEAD sha."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    run_git(dest, "init", "--quiet")
    run_git(dest, "symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")  # works before git 2.28's --initial-branch
    add_commit(dest, {"README.md": README, "requirements.txt": REQUIREMENTS}, "Initial commit: README")
    return add_commit(dest, {"examples/chat_demo.py": CHAT_DEMO}, "Add chat example")
