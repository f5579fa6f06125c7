"""``chat``: a multi-turn conversation with the pulled model, streamed as it is generated.

The history is kept in the Llama2-Chinese format (:mod:`bootstrap.chatformat`); before every
answer the oldest turns are dropped until the prompt and the answer's ``max_new_tokens`` fit the
context. ``/reset`` clears the history, ``/exit`` (or the end of the input) ends the chat, Ctrl-C
stops the current answer (the turn is then forgotten). The model is loaded the way ``smoke`` loads
it (:mod:`bootstrap.loader`), once ``pull`` has completed.

The core does no I/O of its own: :func:`converse` reads with the ``read`` it is given and reports
through callbacks; the CLI decides what goes to stdout and stderr.
"""

from __future__ import annotations

import queue
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

from bootstrap import chatformat, loader
from bootstrap.errors import BootstrapError
from bootstrap.generation import Job, Outcome, Sampling, StopFilter

DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_TEMPERATURE = 0.3
DEFAULT_TOP_P = 0.95
COMMANDS = {"/reset": "reset", "/exit": "exit", "/quit": "exit"}
_POLL_S = 0.1  # how often the reading side wakes up, so Ctrl-C is seen while waiting for a token


class AnswerStopped(Exception):
    """Ctrl-C stopped an answer; ``completion_tokens`` were generated before it stopped."""

    def __init__(self, completion_tokens: int) -> None:
        super().__init__(f"stopped after {completion_tokens} tokens")
        self.completion_tokens = completion_tokens


@dataclass(frozen=True)
class ChatOptions:
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # capped at half the context
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    context_tokens: Optional[int] = None  # default (and at most): the model's context


@dataclass
class Reply:
    message: str
    answer: str
    prompt: str  # the exact text the model saw
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    dropped_turns: int  # oldest turns left out of this prompt to fit the context
    history_turns: int  # turns the prompt carried
    ttft_s: Optional[float]
    tokens_per_s: Optional[float]

    def to_json(self) -> Dict[str, Any]:
        doc = asdict(self)
        for key in ("ttft_s", "tokens_per_s"):
            doc[key] = None if doc[key] is None else round(doc[key], 4)
        return doc


@dataclass
class ChatSession:
    loaded: Any  # loader.LoadedModel
    template: str
    options: ChatOptions = field(default_factory=ChatOptions)
    history: List[chatformat.Turn] = field(default_factory=list)

    @property
    def context(self) -> int:
        limit = self.loaded.context_tokens
        return min(self.options.context_tokens or limit, limit)

    @property
    def max_new_tokens(self) -> int:
        return max(1, min(self.options.max_new_tokens, self.context // 2))

    def reset(self) -> None:
        self.history = []

    def ask(self, message: str, on_text: Callable[[str], None] = lambda _: None) -> Reply:
        """Answer ``message`` after the history, streaming the answer to ``on_text``.

        KeyboardInterrupt stops the generation (within a token) and raises AnswerStopped; the turn is not kept.
        """
        from transformers import TextIteratorStreamer

        prompt = chatformat.fit(self.loaded.tokenizer, self.template, self.history, message,
                                self.context - self.max_new_tokens)
        self.history = list(prompt.turns)  # what no longer fits will not fit later either
        sampling = Sampling(max_new_tokens=self.max_new_tokens, temperature=self.options.temperature,
                            top_p=self.options.top_p)
        streamer = TextIteratorStreamer(self.loaded.tokenizer, skip_prompt=True, timeout=_POLL_S,
                                        skip_special_tokens=True)
        shown = StopFilter()
        job = Job(self.loaded, chatformat.tokenize(self.loaded.tokenizer, prompt.text), sampling,
                  streamer=streamer).start()
        try:
            while True:
                try:
                    piece = next(streamer)
                except StopIteration:
                    break
                except queue.Empty:
                    if not job.thread.is_alive() and streamer.text_queue.empty():
                        break
                    continue
                on_text(shown.feed(piece))
            _join(job)
        except KeyboardInterrupt:
            job.cancel()
            _join(job)
            raise AnswerStopped(job.outcome.completion_tokens if job.outcome else 0) from None
        outcome: Outcome = job.result()
        on_text(shown.finish(outcome.ended_by_model))
        self.history.append(chatformat.Turn(message, outcome.text))
        return Reply(message=message, answer=outcome.text, prompt=prompt.text, prompt_tokens=outcome.prompt_tokens,
                     completion_tokens=outcome.completion_tokens, finish_reason=outcome.finish_reason,
                     dropped_turns=prompt.dropped, history_turns=len(prompt.turns), ttft_s=outcome.ttft_s,
                     tokens_per_s=outcome.tokens_per_s)


def _join(job: Job) -> None:
    while job.thread.is_alive():
        job.thread.join(_POLL_S)


def open_session(plan: Any, options: ChatOptions, log: Callable[[str], None] = lambda _: None) -> ChatSession:
    """Load ``plan``'s pulled model for a chat. Raises NotPulledError / SmokeError."""
    loaded = loader.load(loader.pulled_request(plan), log)
    return ChatSession(loaded, plan.manifest.smoke.template, options)


@dataclass
class ChatEvents:
    """What :func:`converse` reports. Every callback is optional."""

    on_text: Callable[[str], None] = lambda _: None  # a piece of the answer being generated
    on_reply: Callable[[Reply], None] = lambda _: None  # an answer is complete
    on_stopped: Callable[[str, int], None] = lambda _m, _n: None  # Ctrl-C stopped this answer after n tokens
    on_error: Callable[[str, BootstrapError], None] = lambda _m, _e: None  # this message failed
    on_command: Callable[[str], None] = lambda _: None  # "reset" or "exit"


@dataclass
class ChatSummary:
    replies: int = 0
    failed: int = 0
    stopped: int = 0


def converse(session: ChatSession, read: Callable[[], Optional[str]], events: ChatEvents, *,
             interactive: bool) -> ChatSummary:
    """Read messages until the input ends or ``/exit``; answer each one.

    ``read`` returns a line (None at the end of the input) and may raise KeyboardInterrupt: in an
    interactive chat that only clears the line; otherwise it ends the chat.
    """
    summary = ChatSummary()
    while True:
        try:
            line = read()
        except KeyboardInterrupt:
            if not interactive:
                raise
            continue
        if line is None:
            return summary
        message = line.rstrip("\r\n")
        if not message.strip():
            continue
        command = COMMANDS.get(message.strip().lower())
        if command:
            events.on_command(command)
            if command == "exit":
                return summary
            session.reset()
            continue
        try:
            reply = session.ask(message, events.on_text)
        except AnswerStopped as stop:
            summary.stopped += 1
            events.on_stopped(message, stop.completion_tokens)
            continue
        except KeyboardInterrupt:  # before the generation started
            summary.stopped += 1
            events.on_stopped(message, 0)
            continue
        except BootstrapError as exc:
            summary.failed += 1
            events.on_error(message, exc)
            continue
        summary.replies += 1
        events.on_reply(reply)
