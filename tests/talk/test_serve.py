"""serve: the official openai client against a real uvicorn server with the tiny model."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple

import pytest

from bootstrap.chatformat import answer_of
from bootstrap.demo.scenario import DEMO_MODEL_KEY, DEMO_REPO_ID
from bootstrap.manifest import CHAT_TEMPLATE, DEFAULT_PROMPT
from tests.talk.conftest import client, serving, wait_for

pytestmark = pytest.mark.torch
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

USER = [{"role": "user", "content": DEFAULT_PROMPT}]


def raw(service, method: str, path: str, body: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, Any]]:
    """A plain HTTP request (for what the openai client never sends): (status, JSON body)."""
    req = urllib.request.Request(service.url + path, data=body, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback test server
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def assert_openai_error(doc: Dict[str, Any], *, code: Optional[str] = None, param: Optional[str] = None) -> None:
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert doc["error"]["message"] and doc["error"]["type"]
    if code is not None:
        assert doc["error"]["code"] == code
    if param is not None:
        assert doc["error"]["param"] == param


# -- answers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_tokens", [24, 6])
def test_temperature_0_gives_the_smoke_tests_greedy_answer(project, tiny_model_dir, max_tokens):
    from bootstrap.smoke import SmokeRequest, smoke

    expected = smoke(SmokeRequest(model_dir=tiny_model_dir, prompt=DEFAULT_PROMPT, template=CHAT_TEMPLATE,
                                  max_new_tokens=max_tokens))
    with serving(project) as service:
        reply = client(service).chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0,
                                                        max_tokens=max_tokens)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == answer_of(expected.answer)  # the format's "\n" before </s> is not content
    assert reply.usage.completion_tokens == expected.new_tokens
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    assert reply.usage.total_tokens == expected.prompt_tokens + expected.new_tokens
    assert choice.finish_reason == ("stop" if expected.new_tokens < max_tokens else "length")
    assert reply.model == DEMO_MODEL_KEY and reply.id.startswith("chatcmpl-")


def test_streaming_sends_the_same_answer_in_pieces_then_done(project):
    with serving(project) as service:
        api = client(service)
        whole = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0)
        stream = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0, stream=True,
                                             stream_options={"include_usage": True})
        chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_streamed_text_arrives_while_the_model_is_still_generating(long_project):
    with serving(long_project) as service:
        stream = client(service).chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0,
                                                         max_tokens=3000, stream=True)
        texts = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
                if len(texts) == 2:
                    break
        assert service.engine.health()["generating"]  # two pieces out, thousands of tokens still to come
        stream.close()
    assert all(texts)


def test_stream_ends_with_done_on_the_wire(project):
    body = json.dumps({"model": DEMO_MODEL_KEY, "messages": USER, "stream": True, "max_tokens": 4}).encode()
    with serving(project) as service:
        req = urllib.request.Request(service.url + "/v1/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback test server
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events = [line for line in resp.read().decode("utf-8").split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_models_lists_the_served_model_and_repo_id_is_an_alias(project):
    with serving(project) as service:
        api = client(service)
        models = api.models.list()
        assert [m.id for m in models.data] == [DEMO_MODEL_KEY]
        assert models.data[0].owned_by == DEMO_REPO_ID.split("/")[0]
        assert api.models.retrieve(DEMO_MODEL_KEY).id == DEMO_MODEL_KEY
        reply = api.chat.completions.create(model=DEMO_REPO_ID, messages=USER, temperature=0, max_tokens=3)
        assert reply.usage.completion_tokens == 3
        status, health = raw(service, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == DEMO_MODEL_KEY


def test_stop_strings_end_the_answer_before_them(project):
    with serving(project) as service:
        api = client(service)
        whole = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0)
        full = whole.choices[0]
        cut = full.message.content.index("北京")
        stopped = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0, stop=["北京"])
        streamed = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0, stop="北京",
                                               stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert stopped.choices[0].message.content == full.message.content[:cut] == text
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage.completion_tokens < whole.usage.completion_tokens  # generation stopped there too


def test_same_seed_same_sample(project):
    ask = dict(model=DEMO_MODEL_KEY, messages=[{"role": "user", "content": "介绍一下"}], temperature=1.5,
               max_tokens=20)
    with serving(project) as service:
        api = client(service)
        first = api.chat.completions.create(seed=7, **ask).choices[0].message.content
        second = api.chat.completions.create(seed=7, **ask).choices[0].message.content
    assert first == second


def test_history_and_system_messages_reach_the_prompt(project):
    messages = [{"role": "system", "content": "你是助手"}, {"role": "user", "content": "你好"},
                {"role": "assistant", "content": "你好！"}, {"role": "user", "content": "介绍一下中国"}]
    with serving(project) as service:
        prepared = service.engine.prepare([(m["role"], m["content"]) for m in messages], None)
        reply = client(service).chat.completions.create(model=DEMO_MODEL_KEY, messages=messages, temperature=0,
                                                        max_tokens=2)
    assert prepared.text == ("<s>Human: 你是助手\n你好\n</s><s>Assistant: 你好！\n</s>"
                             "<s>Human: 介绍一下中国\n</s><s>Assistant: ")
    assert reply.usage.prompt_tokens == prepared.prompt_tokens


# -- errors in OpenAI's shape -----------------------------------------------------------------------------


def test_unknown_model_is_404(project):
    with serving(project) as service:
        with pytest.raises(openai.NotFoundError) as info:
            client(service).chat.completions.create(model="gpt-4o", messages=USER)
        with pytest.raises(openai.NotFoundError):
            client(service).models.retrieve("gpt-4o")
        status, doc = raw(service, "GET", "/v1/no-such-path")
    assert info.value.status_code == 404
    assert_openai_error(info.value.response.json(), code="model_not_found", param="model")
    assert status == 404
    assert_openai_error(doc)


@pytest.mark.parametrize("extra, param", [
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
])
def test_invalid_fields_are_422_naming_the_field(project, extra, param):
    with serving(project) as service:
        with pytest.raises(openai.UnprocessableEntityError) as info:
            client(service).chat.completions.create(**{"model": DEMO_MODEL_KEY, "messages": USER, **extra})
    assert info.value.status_code == 422
    assert_openai_error(info.value.response.json(), param=param)


def test_requests_the_model_cannot_take_are_400(project):
    with serving(project) as service:
        api = client(service)
        context = service.engine.context_tokens
        with pytest.raises(openai.BadRequestError) as too_long:
            api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, max_tokens=context)
        with pytest.raises(openai.BadRequestError) as not_user_last:
            api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER + [{"role": "assistant", "content": "x"}])
        with pytest.raises(openai.BadRequestError) as many:
            api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, n=2)
        bad_json = raw(service, "POST", "/v1/chat/completions", b"{not json")
    assert_openai_error(too_long.value.response.json(), code="context_length_exceeded")
    assert str(context) in too_long.value.response.json()["error"]["message"]
    assert_openai_error(not_user_last.value.response.json(), param="messages")
    assert_openai_error(many.value.response.json(), param="n")
    assert bad_json[0] == 400
    assert_openai_error(bad_json[1])


def test_body_over_the_limit_is_413(project):
    big = json.dumps({"model": DEMO_MODEL_KEY, "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    with serving(project, max_body_bytes=4096) as service:
        status, doc = raw(service, "POST", "/v1/chat/completions", big)
        assert service.engine.recent() == []  # refused before any generation
    assert status == 413
    assert_openai_error(doc, code="request_too_large")


# -- the API key -----------------------------------------------------------------------------------------


def test_with_a_key_set_a_wrong_or_missing_key_is_401(project):
    key = "sk-test-0123456789abcdef"
    lines = []
    with serving(project, log=lines, api_key=key) as service:
        with pytest.raises(openai.AuthenticationError) as wrong:
            client(service, api_key="sk-wrong").chat.completions.create(model=DEMO_MODEL_KEY, messages=USER)
        with pytest.raises(openai.AuthenticationError):
            client(service, api_key="sk-wrong").models.list()
        missing = raw(service, "GET", "/v1/models")
        not_bearer = raw(service, "GET", "/v1/models", headers={"Authorization": f"Basic {key}"})
        ok = client(service, api_key=key).chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, max_tokens=2)
        health = raw(service, "GET", "/health")
    assert wrong.value.status_code == 401
    assert_openai_error(wrong.value.response.json(), code="invalid_api_key")
    assert key not in json.dumps(wrong.value.response.json())
    assert missing[0] == 401 and not_bearer[0] == 401
    assert_openai_error(missing[1], code="invalid_api_key")
    assert ok.usage.completion_tokens == 2
    assert health[0] == 200  # liveness needs no key and tells nothing secret
    assert not any(key in line for line in lines)


# -- one at a time: the queue, 429, a client going away -----------------------------------------------------


def test_a_client_that_disconnects_mid_stream_stops_its_generation(long_project):
    max_tokens = 3000
    with serving(long_project) as service:
        stream = client(service).chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0,
                                                         max_tokens=max_tokens, stream=True)
        received = 0
        for chunk in stream:
            received += bool(chunk.choices and chunk.choices[0].delta.content)
            if received >= 3:
                break
        stream.close()
        wait_for(lambda: service.engine.recent(), "the server to end the generation", timeout=120)
        done = service.engine.recent()[0]
        assert service.engine.health()["generating"] is False
    assert done.client_gone and done.finish_reason == "cancelled"
    assert 3 <= done.completion_tokens < max_tokens  # measured by the server: it stopped early


def test_a_non_streaming_client_that_goes_away_stops_its_generation(long_project):
    import http.client

    body = json.dumps({"model": DEMO_MODEL_KEY, "messages": USER, "max_tokens": 3000})
    with serving(long_project) as service:
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        wait_for(lambda: service.engine.health()["generating"], "the generation to start")
        conn.close()
        wait_for(lambda: service.engine.recent(), "the server to end the generation", timeout=120)
        done = service.engine.recent()[0]
    assert done.client_gone and done.finish_reason == "cancelled" and done.completion_tokens < 3000


def test_one_generation_at_a_time_a_bounded_queue_then_429(long_project):
    with serving(long_project, queue_size=1) as service:
        api = client(service)
        first = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, max_tokens=3000, stream=True)
        next(iter(first))  # the first generation holds the slot
        waiting: Dict[str, Any] = {}

        def second() -> None:
            waiting["reply"] = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0,
                                                           max_tokens=4)

        thread = threading.Thread(target=second)
        thread.start()
        wait_for(lambda: service.engine.health()["waiting"] == 1, "the second request to wait in the queue")
        with pytest.raises(openai.RateLimitError) as busy:
            api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, max_tokens=4)
        assert "reply" not in waiting  # still waiting behind the first
        first.close()
        thread.join(120)
        served = service.engine.recent()
    assert busy.value.status_code == 429
    assert busy.value.response.headers.get("retry-after") == "1"
    assert_openai_error(busy.value.response.json(), code="rate_limit_exceeded")
    assert waiting["reply"].usage.completion_tokens == 4
    assert [s.finish_reason for s in served] == ["cancelled", "length"]  # one after the other, never together


def test_the_demo_points_at_chat_and_serve_and_its_manifest_serves(tiny_model_dir, tmp_path):
    import shutil

    from bootstrap.demo.scenario import run_demo

    workdir = tmp_path / "llama-bootstrap-demo"
    shutil.copytree(tiny_model_dir, workdir / "cache" / tiny_model_dir.name)  # the demo reuses a built model
    lines = []
    result = run_demo(workdir, echo=lines.append)
    assert result.first.ok
    manifest = workdir / "manifest.yaml"
    assert f"llama-bootstrap serve --manifest {manifest}" in "\n".join(lines)
    assert f"llama-bootstrap chat --manifest {manifest}" in "\n".join(lines)
    with serving(manifest) as service:  # the demo's Hub is gone: serving needs none
        reply = client(service).chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0)
    smoke_answer = next(s.result["answer"] for s in result.first.steps if s.step == "smoke")
    assert reply.choices[0].message.content == answer_of(smoke_answer)


def test_edge_values_are_handled_not_crashed(project):
    with serving(project) as service:
        api = client(service)
        tiny_t = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=1e-9, max_tokens=6)
        greedy = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, temperature=0, max_tokens=6)
        with pytest.raises(openai.UnprocessableEntityError) as seed:
            api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, seed=2**70)
        with pytest.raises(openai.BadRequestError) as image:
            api.chat.completions.create(model=DEMO_MODEL_KEY, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:,"}}]}])
        parts = api.chat.completions.create(model=DEMO_MODEL_KEY, temperature=0, max_tokens=6, messages=[
            {"role": "user", "content": [{"type": "text", "text": "介绍一下"}, {"type": "text", "text": "中国"}]}])
    assert tiny_t.choices[0].message.content == greedy.choices[0].message.content
    assert_openai_error(seed.value.response.json(), param="seed")
    assert_openai_error(image.value.response.json(), param="messages[0].content")
    assert parts.choices[0].message.content == greedy.choices[0].message.content


def test_a_streaming_client_that_leaves_while_queued_does_not_hold_the_model(long_project):
    import http.client

    with serving(long_project, queue_size=1) as service:
        api = client(service)
        first = api.chat.completions.create(model=DEMO_MODEL_KEY, messages=USER, max_tokens=3000, stream=True)
        next(iter(first))
        queued = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
        queued.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"}, body=json.dumps(
            {"model": DEMO_MODEL_KEY, "messages": USER, "max_tokens": 3000, "stream": True}))
        wait_for(lambda: service.engine.health()["waiting"] == 1, "the second request to wait in the queue")
        queued.close()  # gone before its stream ever started
        first.close()
        wait_for(lambda: len(service.engine.recent()) == 2, "both generations to end", timeout=120)
        second = service.engine.recent()[1]
    assert second.client_gone and second.finish_reason == "cancelled" and second.completion_tokens < 3000


def test_malformed_bodies_get_openai_errors_not_tracebacks(project):
    lines = []
    with serving(project, log=lines) as service:
        deep = raw(service, "POST", "/v1/chat/completions", b"[" * 200_000)
        not_object = raw(service, "POST", "/v1/chat/completions", b"[1, 2]")
        bad_utf8 = raw(service, "POST", "/v1/chat/completions", b'{"model": "\xff"}')
        wrong_method = raw(service, "GET", "/v1/chat/completions")
    assert deep[0] == 400 and not_object[0] == 422 and bad_utf8[0] == 400 and wrong_method[0] == 405
    for _, doc in (deep, not_object, bad_utf8, wrong_method):
        assert_openai_error(doc)
