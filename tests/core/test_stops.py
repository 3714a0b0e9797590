"""StopMatcher against a generator simulated one character at a time."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from ktx.core.runtime.stops import StopMatcher


def generated_until_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """What a client sees when generation halts as soon as the text so far ends with a stop string."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if s and text[:end].endswith(s)]
        if done:
            return text[: end - max(map(len, done))], True
    return text, False


def held_back(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of text that more text could complete into a stop string."""
    return max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


def stream(stops: list[str], chunks: list[str]) -> tuple[list[tuple[str, bool]], str]:
    m = StopMatcher(stops)
    return [m.push(c) for c in chunks], m.flush()


ALPHABET = "ab€😀\n"  # few letters, so stop strings occur often; multi-byte ones on purpose


@settings(max_examples=1500, deadline=None)
@given(
    text=st.text(ALPHABET, max_size=40),
    stops=st.lists(st.text(ALPHABET, min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(0, 40), max_size=12),
)
def test_streamed_text_is_the_text_up_to_the_first_completed_stop(text, stops, cuts):
    bounds = sorted([0, len(text), *(min(c, len(text)) for c in cuts)])  # repeats give empty chunks
    chunks = [text[a:b] for a, b in pairwise(bounds)]
    expected, should_stop = generated_until_stop(text, stops)

    m, emitted, sent = StopMatcher(stops), "", ""
    for chunk in chunks:
        out, stopped = m.push(chunk)
        sent += chunk
        emitted += out
        prefix, stopped_by_now = generated_until_stop(sent, stops)
        assert stopped == stopped_by_now  # True from the chunk that completes a stop string on
        if stopped:
            assert emitted == prefix == expected
        else:  # everything emitted that no later text can turn into a stop string, and no more
            assert emitted == sent[: len(sent) - held_back(sent, stops)]
    tail = m.flush()
    assert emitted + tail == expected
    assert m.stopped == should_stop
    assert (m.matched is not None) == should_stop
    if should_stop:
        assert tail == ""
        assert expected + m.matched == text[: len(expected) + len(m.matched)]
    # With no stop string inside another, "first completed" is simply "first found".
    if not any(a != b and a in b for a in stops for b in stops):
        hits = [i for s in stops if (i := text.find(s)) >= 0]
        assert expected == text[: min(hits, default=len(text))]


def test_stop_spanning_chunks_is_held_back_then_dropped():
    pushes, tail = stream(["</s>"], ["Hello <", "/", "s", "> world"])
    assert pushes == [("Hello ", False), ("", False), ("", False), ("", True)]
    assert tail == ""


def test_false_alarm_is_released():
    pushes, tail = stream(["</s>"], ["a <", "/b", "> c <"])
    assert pushes == [("a ", False), ("</b", False), ("> c ", False)]
    assert tail == "<"


def test_no_stops_passes_everything_through():
    assert stream([], ["x", "", "yz"]) == ([("x", False), ("", False), ("yz", False)], "")
    assert stream([""], ["x"]) == ([("x", False)], "")  # an empty stop string is ignored


def test_overlapping_prefixes_and_several_stops():
    # "aab" after "aa": the held "aa" must slide, not reset, when another "a" arrives.
    pushes, _ = stream(["aab", "zz"], ["a", "a", "a", "b", "c"])
    assert pushes == [("", False), ("", False), ("a", False), ("", True), ("", True)]
    m = StopMatcher(["bc", "abcd"])
    assert m.push("xabc") == ("xa", True) and m.matched == "bc"  # "bc" completes before "abcd" could


def test_unicode_stop_split_mid_string():
    pushes, tail = stream(["😀 fin"], ["héllo 😀", " f", "in and more"])
    assert "".join(e for e, _ in pushes) + tail == "héllo "
    assert pushes[-1][1]


def test_after_stop_nothing_more():
    m = StopMatcher(["."])
    assert m.push("end. more") == ("end", True)
    assert m.push("again") == ("", True)
    assert m.flush() == ""
