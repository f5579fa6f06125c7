"""The model behind ``serve``: prompts, one generation at a time, a bounded queue, cancellation.

Requests arrive on the asyncio loop; the generation itself runs in a worker thread
(:class:`bootstrap.generation.Job`). One generation runs at a time: a request waits for the slot
(at most ``queue_size`` wait; one more is refused with :class:`ServerBusyError`, HTTP 429). The slot
is freed by the worker thread when ``generate`` has really returned, so a cancelled generation
never overlaps the next one. Nothing here imports FastAPI.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from bootstrap import chatformat
from bootstrap.errors import ContextOverflowError, ServerBusyError
from bootstrap.generation import Job, Outcome, Sampling

KEEP_FINISHED = 100  # finished requests remembered for /health and the tests
STREAM_INTERVAL_S = 0.02  # streamed text leaves at most every 20 ms (the first piece and the end at once)


def text_batches(tokenizer: Any, interval_s: float = STREAM_INTERVAL_S) -> Any:
    """A transformers ``TextStreamer`` whose text the event loop reads in batches (``async for``).

    transformers' AsyncTextIteratorStreamer wakes the event loop for every token; on a small model
    on the CPU that is one chunk encoded, sent and written per token, and the loop thread competing
    with the generating thread for the GIL. Here the generating thread appends to a deque and wakes
    the loop for the first text, then at most every ``interval_s`` (checked at every token), and at
    the end. The loop sleeps in between: no polling.
    """
    from transformers import TextStreamer

    loop = asyncio.get_running_loop()

    class TextBatches(TextStreamer):
        def __init__(self) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.pieces: Deque[str] = collections.deque()
            self.ended = False
            self.last_wake = float("-inf")
            self.wake = asyncio.Event()

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:  # the generating thread
            if text:
                self.pieces.append(text)
            if stream_end:
                self.ended = True
            now = time.monotonic()
            if stream_end or (self.pieces and now - self.last_wake >= interval_s):
                self.last_wake = now
                try:
                    loop.call_soon_threadsafe(self.wake.set)
                except RuntimeError:  # the loop is closed: the server has stopped
                    pass

        def __aiter__(self) -> Any:
            return self._batches()

        async def _batches(self) -> Any:
            while True:
                await self.wake.wait()
                self.wake.clear()
                ended = self.ended  # read before draining: text appended before the end is drained too
                text = "".join(self.pieces.popleft() for _ in range(len(self.pieces)))
                if text:
                    yield text
                if ended and not self.pieces:
                    return

    return TextBatches()


@dataclass
class Prepared:
    text: str  # the exact prompt text
    inputs: Dict[str, Any]
    prompt_tokens: int
    max_new_tokens: int


@dataclass
class Served:
    """What one finished generation did (logged; the last ones kept in ``Engine.finished``)."""

    id: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    max_new_tokens: int
    finish_reason: str
    client_gone: bool
    seconds: float
    ttft_s: Optional[float]
    error: Optional[str]


class Running:
    """A generation in progress for one request."""

    def __init__(self, request_id: str, stream: bool, max_new_tokens: int) -> None:
        self.id = request_id
        self.stream = stream
        self.max_new_tokens = max_new_tokens
        self.client_gone = False
        self.done = asyncio.Event()
        self.job: Optional[Job] = None

    def abandon(self) -> None:
        """The client went away: stop generating for it."""
        self.client_gone = True
        if self.job is not None:
            self.job.cancel()

    async def outcome(self) -> Outcome:
        await self.done.wait()
        assert self.job is not None
        return self.job.result()


class Engine:
    def __init__(self, loaded: Any, template: str, *, model_id: str, aliases: Sequence[str] = (),
                 queue_size: int = 4, log: Callable[[str], None] = lambda _: None) -> None:
        self.loaded = loaded
        self.template = template
        self.model_id = model_id
        self.names = {model_id, *aliases}
        self.queue_size = queue_size
        self.log = log
        self.admitted = 0  # running + waiting; touched on the loop only
        self.running: Set[Running] = set()
        self.finished: Deque[Served] = collections.deque(maxlen=KEEP_FINISHED)
        self._slot: Optional[asyncio.Lock] = None  # made on the loop (Python 3.9 binds it at creation)

    @property
    def context_tokens(self) -> int:
        return int(self.loaded.context_tokens)

    def knows(self, model: str) -> bool:
        return model in self.names

    def prepare(self, messages: Sequence[Tuple[str, str]], max_tokens: Optional[int]) -> Prepared:
        """Prompt and token budget. ValueError: bad messages; ContextOverflowError: does not fit."""
        turns, user = chatformat.from_messages(messages)
        text = chatformat.render(self.template, turns, user)
        inputs = chatformat.tokenize(self.loaded.tokenizer, text)
        n = int(inputs["input_ids"].shape[1])
        context = self.context_tokens
        wanted = max_tokens if max_tokens is not None else context - n
        if n + max(wanted, 1) > context:
            asked = f" and max_tokens asks for {wanted} more" if max_tokens is not None else ""
            raise ContextOverflowError(
                f"this model's maximum context length is {context} tokens; the messages take {n} tokens{asked}",
                prompt_tokens=n, limit=context,
                remedy="send fewer or shorter messages, or a smaller max_tokens")
        return Prepared(text, inputs, n, wanted)

    async def start(self, request_id: str, prepared: Prepared, sampling: Sampling, *, stream: bool,
                    streamer_factory: Optional[Callable[[], Any]] = None) -> Running:
        """Wait for the slot (or raise ServerBusyError at once), then start generating."""
        if self.admitted >= 1 + self.queue_size:
            raise ServerBusyError(f"busy: one generation is running and {self.queue_size} are waiting",
                                  queue_size=self.queue_size, remedy="retry later")
        if self._slot is None:
            self._slot = asyncio.Lock()
        self.admitted += 1
        try:
            await self._slot.acquire()
        except BaseException:
            self.admitted -= 1
            raise
        running = Running(request_id, stream, sampling.max_new_tokens)
        loop = asyncio.get_running_loop()

        def finished(job: Job) -> None:  # in the worker thread, once generate has returned
            self._record(running, job)
            try:
                loop.call_soon_threadsafe(self._release, running)
            except RuntimeError:  # the loop is closed: the server has stopped
                pass

        try:
            streamer = streamer_factory() if streamer_factory else None
            running.job = Job(self.loaded, prepared.inputs, sampling, streamer=streamer, on_done=finished)
            self.running.add(running)
            running.job.start()
        except BaseException:
            self._release(running)
            raise
        return running

    def _release(self, running: Running) -> None:
        """Free the slot: once per started request, after its generation ended (or never began)."""
        self.running.discard(running)
        running.done.set()
        self.admitted -= 1
        assert self._slot is not None
        self._slot.release()

    def _record(self, running: Running, job: Job) -> None:
        out, err = job.outcome, job.error
        served = Served(id=running.id, stream=running.stream, prompt_tokens=out.prompt_tokens if out else 0,
                        completion_tokens=out.completion_tokens if out else 0,
                        max_new_tokens=running.max_new_tokens,
                        finish_reason=out.finish_reason if out else "error", client_gone=running.client_gone,
                        seconds=round(out.seconds, 3) if out else 0.0,
                        ttft_s=None if out is None or out.ttft_s is None else round(out.ttft_s, 4),
                        error=None if err is None else f"{type(err).__name__}: {err}")
        self.finished.append(served)
        why = " (client gone)" if running.client_gone else ""
        self.log(f"{served.id}: {served.finish_reason}{why}, {served.prompt_tokens} prompt + "
                 f"{served.completion_tokens}/{served.max_new_tokens} new tokens in {served.seconds}s"
                 + (f"; error {served.error}" if served.error else ""))

    def cancel_all(self) -> None:
        """Stop every generation (the server is shutting down)."""
        for running in list(self.running):
            running.abandon()

    def health(self) -> Dict[str, Any]:
        busy = bool(self.running)
        return {"status": "ok", "model": self.model_id, "generating": busy,
                "waiting": max(0, self.admitted - (1 if busy else 0)), "queue_size": self.queue_size,
                "context_tokens": self.context_tokens}

    def recent(self) -> List[Served]:
        return list(self.finished)
