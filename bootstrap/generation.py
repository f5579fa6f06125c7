"""Generate an answer with the loaded model: interruptible, streamable, with stop strings.

Used by ``chat`` and ``serve``. :func:`generate` blocks (run it in a worker thread, see :class:`Job`):
a stopping criterion checks a cancel event before every new token, so a client that went away or
a Ctrl-C stops the generation within one token. Streaming goes through a transformers
``TextIteratorStreamer`` (or its asyncio twin) passed in by the caller; :class:`StopFilter` turns
the streamed pieces into what may be shown: it holds back text that could be the start of a stop
string and the newline the chat format puts before ``</s>``.

Temperature 0 is greedy decoding with exactly ``smoke``'s arguments, so it gives the same answer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from bootstrap.chatformat import ANSWER_END
from bootstrap.errors import GenerationError

FINISH_STOP, FINISH_LENGTH, FINISH_CANCELLED = "stop", "length", "cancelled"
GREEDY_BELOW = 1e-5  # temperatures this small overflow the softmax: decode greedily instead


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0  # 0 (or below GREEDY_BELOW): greedy
    top_p: float = 1.0
    seed: Optional[int] = None
    stop: Tuple[str, ...] = ()


@dataclass
class Outcome:
    text: str  # the answer: up to the first stop string, without the format's final newline
    prompt_tokens: int
    completion_tokens: int  # tokens generated, including any after a stop string
    finish_reason: str  # stop | length | cancelled
    ttft_s: Optional[float]
    seconds: float
    ended_by_model: bool = False  # the last token was </s>

    @property
    def tokens_per_s(self) -> Optional[float]:
        return self.completion_tokens / self.seconds if self.seconds > 0 else None


class StopFilter:
    """Incremental text -> text that is safe to show.

    Holds back the longest tail that could begin a stop string, and a final newline (the chat
    format's end of answer, dropped when the model ended the answer itself).
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[: min(hits)], "", True
            return out
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(stop[:n]):
                    hold = n
                    break
        if self.pending.endswith(ANSWER_END):
            hold = max(hold, len(ANSWER_END))
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def finish(self, ended_by_model: bool) -> str:
        """The held-back rest; ``ended_by_model``: the model wrote </s>, so its final newline goes."""
        rest, self.pending = self.pending, ""
        if self.stopped:
            return ""
        if ended_by_model and rest.endswith(ANSWER_END):
            rest = rest[: -len(ANSWER_END)]
        return rest


def _eos_ids(loaded: Any) -> Tuple[int, ...]:
    config = getattr(loaded.model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = loaded.tokenizer.eos_token_id
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)


def _control(torch: Any, cancel: threading.Event, loaded: Any, prompt_tokens: int, stops: Sequence[str]) -> Any:
    """A StoppingCriteria: stop on ``cancel`` or when a stop string shows up; notes the first token's time."""
    from transformers import StoppingCriteria

    window = max((len(s) for s in stops), default=0) + 4  # tokens: every token is at least one character

    class Control(StoppingCriteria):
        first_at: Optional[float] = None
        stop_hit = False

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            if self.first_at is None:
                self.first_at = time.perf_counter()
            done = cancel.is_set()
            if stops and not done:
                start = max(prompt_tokens, int(input_ids.shape[1]) - window)
                tail = loaded.tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)
                self.stop_hit = done = any(s in tail for s in stops)
            return torch.full((input_ids.shape[0],), bool(done), dtype=torch.bool, device=input_ids.device)

    return Control()


def generate_kwargs(loaded: Any, sampling: Sampling) -> Dict[str, Any]:
    """``generate`` arguments; temperature 0 gives exactly smoke's greedy call."""
    kwargs: Dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "pad_token_id": loaded.pad_token_id}
    if sampling.temperature >= GREEDY_BELOW:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    else:
        kwargs["do_sample"] = False
    return kwargs


def generate(loaded: Any, inputs: Dict[str, Any], sampling: Sampling, *, cancel: threading.Event,
             streamer: Any = None) -> Outcome:
    """Generate (blocking) for tokenized ``inputs``. Raises GenerationError if transformers fails."""
    import torch
    from transformers import StoppingCriteriaList

    inputs = {k: v.to(loaded.input_device) for k, v in inputs.items()}
    prompt_tokens = int(inputs["input_ids"].shape[1])
    control = _control(torch, cancel, loaded, prompt_tokens, sampling.stop)
    kwargs = generate_kwargs(loaded, sampling)
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            output = loaded.model.generate(**inputs, **kwargs, streamer=streamer,
                                           stopping_criteria=StoppingCriteriaList([control]))
    except Exception as exc:  # noqa: BLE001 - whatever generate raises is this answer failing
        raise GenerationError(f"generation failed: {type(exc).__name__}: {exc}",
                              remedy="see the log; for out-of-memory set smoke.precision: int8 or int4") from exc
    seconds = time.perf_counter() - started
    new_ids = output[0, prompt_tokens:].tolist()
    ended_by_model = bool(new_ids) and new_ids[-1] in _eos_ids(loaded)
    if control.stop_hit:
        reason = FINISH_STOP
    elif cancel.is_set():
        reason = FINISH_CANCELLED
    elif ended_by_model or len(new_ids) < sampling.max_new_tokens:
        reason = FINISH_STOP
    else:
        reason = FINISH_LENGTH
    decoded = loaded.tokenizer.decode(new_ids, skip_special_tokens=True)
    text_filter = StopFilter(sampling.stop)
    text = text_filter.feed(decoded) + text_filter.finish(ended_by_model)
    ttft = None if control.first_at is None else control.first_at - started
    return Outcome(text, prompt_tokens, len(new_ids), reason, ttft, seconds, ended_by_model)


class Job:
    """One :func:`generate` in a daemon thread; ``cancel()`` stops it within a token.

    ``on_done`` runs in the worker thread when generation has ended (normally or not).
    """

    def __init__(self, loaded: Any, inputs: Dict[str, Any], sampling: Sampling, *, streamer: Any = None,
                 on_done: Optional[Callable[[Job], None]] = None) -> None:
        self.cancelled = threading.Event()
        self.outcome: Optional[Outcome] = None
        self.error: Optional[BaseException] = None
        self._args = (loaded, inputs, sampling)
        self.streamer = streamer
        self._on_done = on_done
        self.thread = threading.Thread(target=self._run, name="llama-bootstrap-generate", daemon=True)

    def start(self) -> Job:
        self.thread.start()
        return self

    def cancel(self) -> None:
        self.cancelled.set()

    def _run(self) -> None:
        loaded, inputs, sampling = self._args
        try:
            self.outcome = generate(loaded, inputs, sampling, cancel=self.cancelled, streamer=self.streamer)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting side
            self.error = exc
            if self.streamer is not None:
                self.streamer.end()  # the consumer must not wait for text that will never come
        finally:
            if self._on_done is not None:
                self._on_done(self)

    def result(self) -> Outcome:
        """The outcome once the thread has ended; re-raises the generation's error."""
        if self.error is not None:
            raise self.error
        assert self.outcome is not None, "result() before the generation ended"
        return self.outcome
