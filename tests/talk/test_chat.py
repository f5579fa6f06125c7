"""chat: the real CLI driven through a pipe, on the tiny model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from typing import Dict, List

import pytest

from bootstrap.manifest import CHAT_TEMPLATE

pytestmark = pytest.mark.torch


def chat(manifest, lines: List[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bootstrap", "chat", "--manifest", str(manifest), *args],
                          input="".join(line + "\n" for line in lines), capture_output=True, text=True,
                          encoding="utf-8", timeout=300, check=False, env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def records(proc: subprocess.CompletedProcess) -> List[Dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def opening(message: str) -> str:
    return CHAT_TEMPLATE.replace("{prompt}", message)


def test_two_turns_through_a_pipe_the_second_prompt_carries_the_first(project):
    first, second = records(chat(project, ["介绍一下中国", "介绍一下北京"], "--json", "--temperature", "0"))
    assert first["prompt"] == opening("介绍一下中国")
    assert first["answer"].startswith("中国") and first["finish_reason"] == "stop"
    # The exact Llama2-Chinese multi-turn text: the first turn, closed with "\n</s>", then the new one.
    assert second["prompt"] == opening("介绍一下中国") + first["answer"] + "\n</s>" + opening("介绍一下北京")
    assert second["history_turns"] == 1 and second["dropped_turns"] == 0
    assert second["prompt_tokens"] > first["prompt_tokens"] + first["completion_tokens"]


def test_temperature_0_answer_is_the_smoke_answer(project, tiny_model_dir):
    from bootstrap.smoke import SmokeRequest, smoke

    expected = smoke(SmokeRequest(model_dir=tiny_model_dir, prompt="你好", template=CHAT_TEMPLATE,
                                  max_new_tokens=64)).answer
    (reply,) = records(chat(project, ["你好"], "--json", "--temperature", "0"))
    assert reply["answer"] + "\n" == expected


def test_a_tiny_context_drops_the_oldest_turns(project):
    messages = ["介绍一下中国", "你好", "介绍一下北京", "中国的首都是哪里？", "介绍一下长城"]
    context, max_new = 64, 24
    replies = records(chat(project, messages, "--json", "--temperature", "0", "--max-new-tokens", str(max_new),
                           "--context-tokens", str(context)))
    kept: List[str] = []  # the finished turns the chat still holds, oldest first
    for message, reply in zip(messages, replies):
        assert reply["prompt_tokens"] + max_new <= context
        assert reply["dropped_turns"] <= len(kept)
        kept = kept[reply["dropped_turns"]:]  # the oldest go first, for good
        assert reply["history_turns"] == len(kept)
        assert reply["prompt"] == "".join(kept) + opening(message)
        kept.append(opening(message) + reply["answer"] + "\n</s>")
    assert any(r["dropped_turns"] and r["history_turns"] for r in replies)  # trimmed, not cleared


def test_reset_forgets_the_history_and_plain_output_is_one_answer_per_message(project):
    proc = chat(project, ["介绍一下中国", "/reset", "你好", "", "/exit", "never read"], "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    answers = proc.stdout.splitlines()
    assert len(answers) == 2  # the blank line is no message; /exit ends before the last line
    assert answers[0].startswith("中国") and answers[1].startswith("你好")
    assert "(history cleared)" in proc.stderr
    with_json = records(chat(project, ["介绍一下中国", "/reset", "你好"], "--json", "--temperature", "0"))
    assert with_json[1]["prompt"] == opening("你好") and with_json[1]["history_turns"] == 0


def test_ctrl_c_stops_the_answer_not_the_chat(long_project):
    proc = subprocess.Popen([sys.executable, "-m", "bootstrap", "chat", "--manifest", str(long_project),
                             "--temperature", "0", "--max-new-tokens", "2000"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    try:
        proc.stdin.write("介绍一下中国\n".encode())
        proc.stdin.flush()
        first = os.read(proc.stdout.fileno(), 64)  # the answer is streaming (2000 tokens take far longer)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(input=b"/reset\n/exit\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = err.decode("utf-8")
    assert first and proc.returncode == 0, stderr
    # Stopped early, then the chat went on reading: it cleared the history and ended on /exit.
    stopped = re.search(r"\[stopped after (\d+) tokens\]", stderr)
    assert stopped and 0 < int(stopped.group(1)) < 2000, stderr
    assert stopped.start() < stderr.index("(history cleared)")
    assert "Traceback" not in stderr
