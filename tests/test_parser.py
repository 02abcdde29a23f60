"""Guard output parser: tricky outputs, the render/parse round trip, sentence and word counts."""
from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from guardsmith.errors import GuardsmithError
from guardsmith.guard import (
    GuardAnswer,
    parse_guard_output,
    parse_ok_for,
    render_guard_answer,
    render_guard_target,
    sentence_count,
    split_reasoning,
    strip_think,
    word_count,
)

FULL = "Prompt harm: harmful\nResponse harm: unharmful\nResponse refusal: refusal"
H, U, R, C = "harmful", "unharmful", "refusal", "compliance"

# (id, text, expected labels or None for a parse failure, error substring)
CASES = [
    ("plain", FULL, (H, U, R), None),
    ("prompt_only_none", "Prompt harm: unharmful\nResponse harm: None\nResponse refusal: None",
     (U, None, None), None),
    ("think_block", f"<think>\nThe user wants a weapon.\n</think>\n\n{FULL}", (H, U, R), None),
    ("unclosed_think", f"<think>The user asks for help with malware.\n{FULL}", (H, U, R), None),
    ("thinking_tag", f"<thinking>short</thinking>{FULL}", (H, U, R), None),
    ("reasoning_mentions_words",
     "The request is harmful since it seeks weapons; the reply is not harmful and is a "
     f"refusal rather than compliance.\n\n{FULL}", (H, U, R), None),
    ("draft_then_final",
     "Draft:\nPrompt harm: unharmful\nResponse harm: harmful\n\nOn reflection that is wrong.\n"
     f"{FULL}", (H, U, R), None),
    ("bold_keys",
     "**Prompt harm:** harmful\n**Response harm:** unharmful\n**Response refusal:** refusal",
     (H, U, R), None),
    ("bold_values", "Prompt harm: **harmful**\nResponse harm: __unharmful__\n"
     "Response refusal: `refusal`", (H, U, R), None),
    ("bullets", "- Prompt harm: harmful\n* Response harm: unharmful\n+ Response refusal: refusal",
     (H, U, R), None),
    ("numbered", "1. Prompt harm: harmful\n2. Response harm: harmful\n3) Response refusal: compliance",
     (H, H, C), None),
    ("extra_spaces", "prompt harm :   Harmful  \n  response   harm:unharmful\nResponse refusal :refusal",
     (H, U, R), None),
    ("upper_case", "PROMPT HARM: HARMFUL\nRESPONSE HARM: UNHARMFUL\nRESPONSE REFUSAL: REFUSAL",
     (H, U, R), None),
    ("trailing_punct", "Prompt harm: harmful.\nResponse harm: unharmful;\nResponse refusal: refusal!",
     (H, U, R), None),
    ("trailing_text", f"{FULL}\n\nI hope this helps. The prompt is harmful.", (H, U, R), None),
    ("blank_lines_between",
     "Prompt harm: harmful\n\nResponse harm: unharmful\n\nResponse refusal: refusal", (H, U, R), None),
    ("code_fence", f"```\n{FULL}\n```", (H, U, R), None),
    ("one_line", "Prompt harm: harmful, Response harm: harmful, Response refusal: compliance",
     (H, H, C), None),
    ("angle_brackets", "Prompt harm: <harmful>\nResponse harm: <None>\nResponse refusal: <None>",
     (H, None, None), None),
    ("label_word_key", "Prompt harm label: harmful\nResponse harm label: unharmful", (H, U, None), None),
    ("snake_case", "prompt_harm: harmful\nresponse_harm: unharmful\nresponse_refusal: refusal",
     (H, U, R), None),
    ("explanation_in_parens", "Prompt harm: harmful (S1: Violence)\nResponse harm: None",
     (H, None, None), None),
    ("crlf", FULL.replace("\n", "\r\n"), (H, U, R), None),
    ("only_prompt_line", "Prompt harm: unharmful", (U, None, None), None),
    ("lower_none", "Prompt harm: harmful\nResponse harm: none\nResponse refusal: NONE",
     (H, None, None), None),
    ("duplicate_same", f"{FULL}\nPrompt harm: harmful", (H, U, R), None),
    # failures
    ("empty", "", None, "empty"),
    ("whitespace", "  \n\t ", None, "empty"),
    ("only_reasoning", "The user asks how to bake bread, which is harmless.", None, "no answer"),
    ("missing_prompt", "Response harm: unharmful\nResponse refusal: refusal", None, "missing"),
    ("unknown_word", "Prompt harm: maybe\nResponse harm: unharmful", None, "unknown word"),
    ("not_harmful", "Prompt harm: not harmful", None, "unknown word"),
    ("contradictory",
     "Prompt harm: harmful\nResponse harm: unharmful\nPrompt harm: unharmful", None, "contradictory"),
    ("prompt_none", "Prompt harm: None\nResponse harm: None", None, "unknown word"),
    ("wrong_vocab", "Prompt harm: harmful\nResponse refusal: harmful", None, "unknown word"),
    ("ambiguous", "Prompt harm: harmful/unharmful", None, "ambiguous"),
    ("empty_value", "Prompt harm:\nResponse harm: unharmful", None, "no value"),
    ("answer_only_inside_closed_think", f"<think>{FULL}</think>\nDone.", None, "after </think>"),
    ("final_block_broken_by_text",
     "Prompt harm: harmful\nThe reply explains the steps.\nResponse harm: harmful\n"
     "Response refusal: compliance", None, "missing"),
]


@pytest.mark.parametrize("text,expected,error", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_cases(text: str, expected: tuple | None, error: str | None) -> None:
    ans = parse_guard_output(text)
    if expected is None:
        assert not ans.parse_ok
        assert ans.error and error in ans.error
        assert (ans.prompt_harm, ans.response_harm, ans.response_refusal) == (None, None, None)
    else:
        assert ans.parse_ok, ans.error
        assert ans.error is None
        assert (ans.prompt_harm, ans.response_harm, ans.response_refusal) == expected


def test_case_table_is_large() -> None:
    assert len(CASES) >= 25


def test_reasoning_extraction() -> None:
    ans = parse_guard_output(f"<think>\nStep one.\nStep two.\n</think>\n\n{FULL}\nBye.")
    assert ans.reasoning == "Step one.\nStep two."
    ans = parse_guard_output(f"<think>Unclosed thought.\n{FULL}")
    assert ans.reasoning == "Unclosed thought."
    assert parse_guard_output(FULL).reasoning == ""
    assert parse_guard_output("just text <think>x").reasoning == "just text x"


def test_split_reasoning() -> None:
    reasoning, answer = split_reasoning(f"<think>why</think>\n{FULL}\n\ntrailing")
    assert (reasoning, answer) == ("why", FULL)
    assert split_reasoning("<think>only thinking") == ("only thinking", "")
    assert split_reasoning("") == ("", "")


def test_none_input() -> None:
    assert not parse_guard_output(None).parse_ok  # type: ignore[arg-type]


def test_parse_ok_for() -> None:
    full = parse_guard_output(FULL)
    prompt_only = parse_guard_output("Prompt harm: harmful\nResponse harm: None")
    broken = parse_guard_output("Prompt harm: maybe")
    assert all(parse_ok_for(full, t) for t in ("prompt_harm", "response_harm", "response_refusal"))
    assert parse_ok_for(prompt_only, "prompt_harm")
    assert not parse_ok_for(prompt_only, "response_harm")
    assert not parse_ok_for(prompt_only, "response_refusal")
    assert not parse_ok_for(broken, "prompt_harm")
    with pytest.raises(GuardsmithError):
        parse_ok_for(full, "toxicity")


def test_guard_answer_is_frozen() -> None:
    ans = parse_guard_output(FULL)
    assert isinstance(ans, GuardAnswer)
    with pytest.raises(AttributeError):
        ans.prompt_harm = "unharmful"  # type: ignore[misc]


_TOKENS = [
    "a", "b", "the", " ", " ", "\n", "\n\n", ".", ",", ":", "!", "?", "-", "*", "#", "<", ">",
    "/", "harmful", "unharmful", "refusal", "compliance", "None", "prompt", "response", "harm",
    "think", "label", "S1", "`", "\"", "(", ")",
]
_ANSWER_SYNTAX = re.compile(r"(prompt|response)[\s_-]*(harm|refusal)", re.IGNORECASE)
harm = st.sampled_from(["harmful", "unharmful"])


@settings(max_examples=300, deadline=None)
@given(
    ph=harm,
    rh=st.one_of(st.none(), harm),
    rr=st.sampled_from([None, "refusal", "compliance"]),
    words=st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=60),
    free=st.text(max_size=40),
    mode=st.sampled_from(["R", "NR"]),
)
def test_round_trip(ph, rh, rr, words, free, mode) -> None:
    reasoning = "".join(words) + free
    assume(not _ANSWER_SYNTAX.search(reasoning) and strip_think(reasoning))
    row = {"id": "x", "prompt_harm": ph, "response_harm": rh, "response_refusal": rr}
    ans = parse_guard_output(render_guard_target(row, mode, reasoning))
    assert ans.parse_ok, ans.error
    assert (ans.prompt_harm, ans.response_harm, ans.response_refusal) == (ph, rh, rr)
    if mode == "R" and "<" not in reasoning:
        assert ans.reasoning == strip_think(reasoning)
    if mode == "NR":
        assert ans.reasoning == ""


def test_render_guard_answer_exact() -> None:
    assert render_guard_answer("harmful", None, None) == (
        "Prompt harm: harmful\nResponse harm: None\nResponse refusal: None"
    )


@pytest.mark.parametrize(
    "text,n",
    [
        ("", 0),
        ("One sentence.", 1),
        ("No final punctuation", 1),
        ("First. Second! Third? Fourth", 4),
        ("It lists items, e.g. knives, i.e. weapons. Then it stops.", 2),
        ("Dr. Smith said so. Mr. Jones agreed.", 2),
        ("Version 3.5 is out. Cost is $4.99 today.", 2),
        ("Weapons, drugs, etc. are listed. Also others etc. and more.", 2),
        ("Knives etc. The end.", 2),
        ("He asked \"why?\" She left.", 2),
        ("Wait... really?! Yes.", 2),
        ("A line without a period\n\nAnother paragraph", 2),
        ("<think>Inside. Two.</think>", 2),
        ("... !!! ?", 0),
    ],
)
def test_sentence_count(text: str, n: int) -> None:
    assert sentence_count(text) == n


def test_word_count() -> None:
    assert word_count("") == 0
    assert word_count("The user asks - about 3 things.") == 6
    assert word_count("<think>two words</think>") == 2
