"""The Llama2-Chinese chat format, in one place for ``smoke``, ``chat`` and ``serve``.

A conversation is turn after turn of ``<s>Human: {user}\\n</s><s>Assistant: {answer}\\n</s>``; the
prompt ends with the open turn ``<s>Human: {user}\\n</s><s>Assistant: ``, which is the manifest's
``smoke.template`` with ``{prompt}`` replaced. A finished turn is the open turn, the answer and
:data:`TURN_END`. The text carries its own ``<s>``/``</s>``, so it is tokenized with
``add_special_tokens=False``. The model ends an answer with ``\\n`` and then ``</s>``; decoded
without special tokens that is a trailing ``\\n`` (:data:`ANSWER_END`), which is not part of the
answer.

OpenAI-style messages map onto it (:func:`from_messages`): system (or developer) messages go in
front of the first user message, each user message is paired with the assistant message after it,
and the last message must be the user's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

from bootstrap.errors import ContextOverflowError

TURN_END = "\n</s>"
ANSWER_END = "\n"
SYSTEM_ROLES = ("system", "developer")


def chat_prompt(template: str, prompt: str) -> str:
    """The literal open turn (no str.format: the prompt may contain braces)."""
    return template.replace("{prompt}", prompt)


@dataclass(frozen=True)
class Turn:
    user: str
    answer: str


def finished_turn(template: str, turn: Turn) -> str:
    return chat_prompt(template, turn.user) + turn.answer + TURN_END


def render(template: str, turns: Sequence[Turn], user: str) -> str:
    """The whole prompt: the finished turns, oldest first, then the open turn for ``user``."""
    return "".join(finished_turn(template, t) for t in turns) + chat_prompt(template, user)


def answer_of(text: str) -> str:
    """The answer in a decoded generation that ended with </s>: without the format's trailing newline."""
    return text[: -len(ANSWER_END)] if text.endswith(ANSWER_END) else text


def from_messages(messages: Sequence[Tuple[str, str]]) -> Tuple[List[Turn], str]:
    """(finished turns, the open user message) for ``(role, content)`` pairs.

    Raises ValueError (the caller's 400) when there is no user message last.
    """
    system = "\n".join(c for r, c in messages if r in SYSTEM_ROLES and c)
    turns: List[Turn] = []
    user: List[str] = []
    answer: List[str] = []
    for role, content in messages:
        if role in SYSTEM_ROLES:
            continue
        if role == "user":
            if answer:
                turns.append(Turn("\n".join(user), "\n".join(answer)))
                user, answer = [], []
            user.append(content)
        elif role == "assistant":
            answer.append(content)
        else:
            raise ValueError(f"unsupported role {role!r}; use system, user or assistant")
    if answer or not user:
        raise ValueError("the last message must be the user's (role 'user')")
    current = "\n".join(user)
    if system:
        if turns:
            turns[0] = Turn(system + "\n" + turns[0].user, turns[0].answer)
        else:
            current = system + "\n" + current
    return turns, current


def tokenize(tokenizer: Any, text: str) -> Dict[str, Any]:
    """``text`` as a batch of one (torch tensors), without added special tokens."""
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class Prompt:
    text: str
    tokens: int
    turns: List[Turn]  # the finished turns it carries
    dropped: int  # oldest turns left out to fit


def fit(tokenizer: Any, template: str, turns: Sequence[Turn], user: str, budget: int, *,
        trim: bool = True) -> Prompt:
    """The prompt for ``user`` after ``turns`` in at most ``budget`` tokens, dropping the oldest turns.

    Raises ContextOverflowError when it cannot fit (with ``trim=False``: when the whole does not fit).
    """
    sizes = [count_tokens(tokenizer, finished_turn(template, t)) for t in turns]
    opening = count_tokens(tokenizer, chat_prompt(template, user))
    start = 0
    if trim:
        total = opening + sum(sizes)
        while start < len(turns) and total > budget:
            total -= sizes[start]
            start += 1
    while True:
        kept = list(turns[start:])
        text = render(template, kept, user)
        n = count_tokens(tokenizer, text)
        if n <= budget:
            return Prompt(text, n, kept, start)
        if not trim or start >= len(turns):
            raise ContextOverflowError(
                f"the prompt is {n} tokens; only {budget} fit", prompt_tokens=n, limit=budget,
                remedy="write a shorter message (or ask for fewer new tokens)")
        start += 1  # the segments' token counts differ from the whole text's: drop one more

