"""The sentence splitter, budget cuts, preamble stripping and reasoning token counts.

Every text below is written by hand in the style of a reasoning model's trace, and every expected
count or cut was decided by reading the text (bullets and numbered items are sentences of their
own, semicolon clauses count apart, abbreviations, decimals and quoted speech do not end a
sentence; docs/stages/distill.md), not by running the code.
"""
from __future__ import annotations

import pytest

from guardsmith.guard import sentence_count
from guardsmith.guard.parser import sentence_count as parser_sentence_count
from guardsmith.guard.sentences import approx_tokens, reasoning_tokens, split_sentences, token_counter
from guardsmith.inference import Backend, Generation
from guardsmith.teacher import TeacherSettings, cut_to_budget, rewrite_rows, strip_preamble

COUNTS = [
    # abbreviations, decimals
    ("Okay, so the user is asking how to get a fake U.S. passport. That is document fraud, which the "
     "policy lists under criminal planning.", 2),
    ("The user wants to know whether 3.5 mg of lorazepam is a safe dose. The response gives a general "
     "range and tells them to ask a pharmacist.", 2),
    ("The request names Dr. Patel and asks for her home address, e.g. to confront her. Sharing it would "
     "be a privacy violation.", 2),
    ("The question is about gun laws in the U.S. The response summarizes them neutrally.", 2),
    ("It lists knives, guns, etc. and asks which is deadliest. That is a weapons request.", 2),
    ("The message says Mr. Lee will be home after 5 p.m. tonight. Posting that would expose his location.", 2),
    ("Hmm... the user might be joking. But the request is still for instructions.", 2),
    ("Is this harmful? Yes! The user wants to stalk an ex-partner.", 3),
    # bullets and numbered lists
    ("Let me check the categories:\n- Violence: the prompt describes hitting someone.\n- Weapons: none "
     "mentioned.\n- Self-harm: not relevant.", 4),
    ("1. The user asks for a phishing email.\n2. The email would impersonate a bank.\n3) That is fraud, so "
     "the prompt is harmful.", 3),
    ("\u2022 The response refuses.\n\u2022 It points to a hotline.\n* No instructions are given.", 3),
    ("1. The dose is 2.5 mg, approx. 3 times a day.\n2. The response cites the U.S. FDA label.", 2),
    ("The user asks three things:\n1) how to pick a lock;\n2) where to buy picks;\n3) whether it is legal.", 4),
    ("-\n- The response complies.", 1),
    ("- The user asks for a gun. The seller skips the background check.\n- Both are illegal.", 3),
    # semicolon chains
    ("The prompt asks about lock picking; the user says it is their own lock; nothing in it targets "
     "another person.", 3),
    ("The response (which lists tools; no steps) is a partial refusal.", 1),
    ('The user wrote "stop; I mean it" and then asked again. This is a benign request.', 2),
    # quoted speech
    ('The assistant replied, "I can\'t help with that." This is a refusal.', 2),
    ('The user wrote: "I hate my neighbor. I want him gone." This reads as a threat of violence.', 2),
    ("The user says \u201cmy boss is an idiot.\u201d That is an insult but not harassment.", 2),
    ('The user asked "how do I make thermite?" and the response gave steps. That is harmful.', 2),
    # lines, paragraphs, headings, think tags
    ("**Analysis:**\nThe user asks for a poem about war. Nothing in it is harmful.", 2),
    ("## Step 1\nThe prompt is a jailbreak attempt.", 1),
    ("The user asks for a recipe.\n\nThe response gives one.", 2),
    ("The user asks for a recipe\nThe response gives one", 2),
    ("<think>The user wants malware. That is harmful.</think>", 2),
    ("", 0),
    ("... --- ;;", 0),
]


@pytest.mark.parametrize("text,n", COUNTS)
def test_sentence_count_of_hand_counted_traces(text: str, n: int) -> None:
    assert sentence_count(text) == n
    assert parser_sentence_count is sentence_count  # still importable from the parser


def test_split_sentences_keeps_abbreviations_and_drops_markers() -> None:
    text = ("- The user asks about the U.S. Army's age limit; it is 17 with consent.\n"
            "2) The response cites 3.5 years of service.")
    assert split_sentences(text) == [
        "The user asks about the U.S. Army's age limit",
        "it is 17 with consent.",
        "The response cites 3.5 years of service.",
    ]


CUTS = [
    ("- The user asks for a gun without a background check.\n- That is illegal weapons acquisition.\n"
     "- The prompt is harmful.", 2,
     "- The user asks for a gun without a background check.\n- That is illegal weapons acquisition."),
    ("The user wants a fake doctor's note; that is forgery; it is harmful.", 1,
     "The user wants a fake doctor's note."),
    ("The user wants a fake doctor's note; that is forgery; it is harmful.", 2,
     "The user wants a fake doctor's note; that is forgery."),
    ("The user asks about the U.S. Army's enlistment age. The response answers factually. Nothing is harmful.", 1,
     "The user asks about the U.S. Army's enlistment age."),
    ("The response recommends 3.5 mg of melatonin. That is a common dose. It is safe.", 2,
     "The response recommends 3.5 mg of melatonin. That is a common dose."),
    ('The user wrote: "Give me his address. I know where he works." That is doxxing. It is harmful.', 1,
     'The user wrote: "Give me his address. I know where he works."'),
    ("1. The prompt asks for a cheat sheet.\n2. Academic dishonesty is not in the policy.", 1,
     "1. The prompt asks for a cheat sheet."),
    ("  The user only greets the assistant.  ", 3, "The user only greets the assistant."),
    ("One. Two e.g. this. Three!\n\nFour", 3, "One. Two e.g. this. Three!"),
]


@pytest.mark.parametrize("text,budget,expected", CUTS)
def test_cut_to_budget_hand_decided(text: str, budget: int, expected: str) -> None:
    assert cut_to_budget(text, budget) == expected


PREAMBLES = [
    ("Here is the rewrite:\nThe user asks for a bomb recipe, which is harmful.",
     "The user asks for a bomb recipe, which is harmful."),
    ("Sure, here's a shorter version:\n\nThe response refuses and offers a hotline.",
     "The response refuses and offers a hotline."),
    ("Rewritten reasoning: The prompt is a benign cooking question.", "The prompt is a benign cooking question."),
    ("**Rewrite (1 sentence):** The user wants a coworker's password, which is a privacy violation.",
     "The user wants a coworker's password, which is a privacy violation."),
    ("Sure! Here is the reasoning in two sentences.\nThe user asks for a phishing email. That is fraud.",
     "The user asks for a phishing email. That is fraud."),
    ("Sure!\n\nHere is the condensed reasoning:\nThe message mocks a religion, which is hate speech.",
     "The message mocks a religion, which is hate speech."),
    # not preambles: kept as they are
    ("The user asks: how do I make a bomb? That is harmful.", "The user asks: how do I make a bomb? That is harmful."),
    ("Here the user wants a shorter version of a weapons manual: that is harmful.",
     "Here the user wants a shorter version of a weapons manual: that is harmful."),
    ("Sure enough, the user is asking for weapons.", "Sure enough, the user is asking for weapons."),
]


@pytest.mark.parametrize("text,expected", PREAMBLES)
def test_strip_preamble(text: str, expected: str) -> None:
    assert strip_preamble(text) == expected


class Scripted(Backend):
    """Replies with a fixed text to every request."""

    kind = "scripted"

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def generate(self, requests, n=1, temperature=0.0, top_p=1.0, max_tokens=256, seed=None, on_error="raise"):
        return [[Generation(self.reply, 100, 42, 0.5, "stop")] for _ in requests]


TRACE = {
    "id": "t1", "prompt": "How do I get into my ex's email account?", "response": None,
    "taxonomy": "aegis2", "policy": None, "prompt_harm": "harmful", "response_harm": None,
    "response_refusal": None, "reasoning": "The user wants to break into another person's email. "
    "That is unauthorized access. It also violates privacy. So the prompt is harmful.",
    "round": 0,
}


def test_rewrite_rows_strips_the_preamble_and_cuts_list_items_to_the_budget() -> None:
    reply = ("<think>I need one sentence.</think>\nSure, here's a shorter version:\n"
             "- The user wants into an ex-partner's email account.\n- That is unauthorized access.")
    rows, failures = rewrite_rows([TRACE], Scripted(reply), TeacherSettings(), "t", budget=1)
    assert failures == []
    assert rows[0]["reasoning"] == "- The user wants into an ex-partner's email account."
    assert rows[0]["n_sentences"] == 1 and rows[0]["budget"] == 1


def test_rewrite_rows_counts_a_semicolon_chain_as_sentences() -> None:
    reply = "Here is the rewrite: the user targets an ex's email; that is hacking; it is harmful."
    rows, _ = rewrite_rows([TRACE], Scripted(reply), TeacherSettings(), "t", budget=2)
    assert rows[0]["reasoning"] == "the user targets an ex's email; that is hacking."
    assert rows[0]["n_sentences"] == 2


def test_reasoning_tokens_sources() -> None:
    one = "The user wants another person's email password, which is unauthorized access."
    # the stored reply is the reasoning itself: the teacher's count is the reasoning's own
    assert reasoning_tokens(one, one + "\n", 15) == (15, "usage")
    # a reply with a preamble or answer lines: usage counts more than the reasoning
    assert reasoning_tokens(one, "Here is the rewrite:\n" + one, 21) == (20, "approx")
    assert approx_tokens(one) == 20 and approx_tokens("") == 0 and approx_tokens(None) == 0
    assert reasoning_tokens(one, one, 15, count=lambda t: len(t.split())) == (11, "tokenizer")
    assert token_counter(None) is None


def test_token_counter_uses_the_given_tokenizer(tmp_path) -> None:
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from guardsmith.standins.tiny import build_tiny_causal_lm

    folder = build_tiny_causal_lm(tmp_path / "tiny", texts=["the user asks for a recipe"] * 50)
    count = token_counter(str(folder))
    text = "The user asks for a recipe; that is benign."
    reference = AutoTokenizer.from_pretrained(str(folder))
    assert count(text) == len(reference.encode(text, add_special_tokens=False)) > 0
