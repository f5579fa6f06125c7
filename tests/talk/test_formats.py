"""The chat format, OpenAI messages onto it, the stop filter, the server's option checks (no torch)."""

from __future__ import annotations

import pytest

from bootstrap import chatformat
from bootstrap.chatformat import Turn, from_messages, render
from bootstrap.errors import UsageError
from bootstrap.generation import StopFilter
from bootstrap.manifest import CHAT_TEMPLATE
from bootstrap.serve import ServeOptions, check_options, is_loopback


def test_render_is_the_literal_multi_turn_llama2_chinese_format():
    text = render(CHAT_TEMPLATE, [Turn("你好", "你好！"), Turn("a{b}", "c")], "再见")
    assert text == ("<s>Human: 你好\n</s><s>Assistant: 你好！\n</s>"
                    "<s>Human: a{b}\n</s><s>Assistant: c\n</s>"
                    "<s>Human: 再见\n</s><s>Assistant: ")
    assert render(CHAT_TEMPLATE, [], "介绍一下中国") == chatformat.chat_prompt(CHAT_TEMPLATE, "介绍一下中国")


def test_smoke_keeps_its_chat_prompt_name():
    from bootstrap import smoke

    assert smoke.chat_prompt is chatformat.chat_prompt


@pytest.mark.parametrize("messages, turns, user", [
    ([("user", "hi")], [], "hi"),
    ([("system", "be brief"), ("user", "hi")], [], "be brief\nhi"),
    ([("developer", "be brief"), ("user", "q1"), ("assistant", "a1"), ("user", "q2")],
     [Turn("be brief\nq1", "a1")], "q2"),
    ([("user", "q1"), ("user", "more"), ("assistant", "a1"), ("assistant", "a2"), ("user", "q2")],
     [Turn("q1\nmore", "a1\na2")], "q2"),
    ([("assistant", "hello, how can I help?"), ("user", "q")], [Turn("", "hello, how can I help?")], "q"),
])
def test_openai_messages_map_onto_turns(messages, turns, user):
    assert from_messages(messages) == (turns, user)


@pytest.mark.parametrize("messages", [[], [("system", "x")], [("user", "q"), ("assistant", "a")],
                                      [("tool", "x"), ("user", "q")]])
def test_messages_that_do_not_end_with_the_user_are_refused(messages):
    with pytest.raises(ValueError):
        from_messages(messages)


def test_answer_of_drops_only_the_formats_final_newline():
    assert chatformat.answer_of("a\nb\n") == "a\nb"
    assert chatformat.answer_of("a") == "a"


def feed_all(f: StopFilter, pieces) -> str:
    return "".join(f.feed(p) for p in pieces)


def test_stop_filter_cuts_at_a_stop_string_split_across_pieces():
    f = StopFilter(["END"])
    shown = feed_all(f, ["abc E", "N", "D more"])
    assert shown + f.finish(ended_by_model=False) == "abc "
    assert f.stopped


def test_stop_filter_releases_a_false_alarm():
    f = StopFilter(["END"])
    assert f.feed("abc EN") == "abc "
    assert f.feed("X") == "ENX"
    assert f.finish(ended_by_model=False) == ""


def test_stop_filter_holds_back_the_final_newline_until_more_text_comes():
    f = StopFilter()
    assert f.feed("line one\n") == "line one"
    assert f.feed("line two\n") == "\nline two"
    assert f.finish(ended_by_model=True) == ""  # the format's end of answer

    g = StopFilter()
    assert g.feed("cut off\n") == "cut off"
    assert g.finish(ended_by_model=False) == "\n"  # max_tokens hit: the newline is content


def test_stop_filter_earliest_stop_wins():
    f = StopFilter(["bb", "a"])
    assert f.feed("xxbbya") == "xx"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True),
                                            ("::1", True), ("[::1]", True), ("0.0.0.0", False),
                                            ("192.168.1.5", False), ("::", False), ("example.org", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_non_loopback_needs_a_key_and_a_key_must_not_be_empty():
    with pytest.raises(UsageError) as info:
        check_options(ServeOptions(host="0.0.0.0"))
    assert info.value.argument == "--host" and "--api-key" in str(info.value)
    check_options(ServeOptions(host="0.0.0.0", api_key="k"))
    check_options(ServeOptions())
    with pytest.raises(UsageError) as empty:
        check_options(ServeOptions(api_key="  "))
    assert empty.value.argument == "--api-key"


def test_the_key_is_not_in_the_options_repr():
    assert "s3cret" not in repr(ServeOptions(api_key="s3cret"))
