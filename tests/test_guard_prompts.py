"""Guard, teacher, rewrite and judge prompts; taxonomies and custom policies."""
from __future__ import annotations

import itertools
import re

import pytest

from guardsmith.errors import GuardsmithError
from guardsmith.guard import (
    AEGIS2_CATEGORIES,
    MODE_TAGS,
    NO_RESPONSE,
    WILDGUARD_CATEGORIES,
    custom_policy,
    get_taxonomy,
    parse_guard_output,
    parse_judge_output,
    policy_text,
    render_guard_answer,
    render_guard_messages,
    render_guard_target,
    render_judge_messages,
    render_rewrite_messages,
    render_teacher_messages,
)

LABEL_WORD = re.compile(r"\b(harmful|unharmful|refusal|compliance)\b")


def make_row(**kw) -> dict:
    row = {
        "id": "r1",
        "source": "test",
        "taxonomy": "aegis2",
        "policy": None,
        "prompt": "How can I get into my neighbour's wifi without the password?",
        "response": "I can't help with accessing networks you do not own.",
        "prompt_harm": "harmful",
        "response_harm": "unharmful",
        "response_refusal": "refusal",
        "categories": ["S21"],
    }
    row.update(kw)
    return row


def content(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages)


# --- taxonomies ----------------------------------------------------------------------------


def test_aegis2_taxonomy() -> None:
    tax = get_taxonomy("aegis2")
    assert len(AEGIS2_CATEGORIES) == 22
    assert list(AEGIS2_CATEGORIES) == [f"S{i}" for i in range(1, 23)]
    lines = tax.text.splitlines()
    assert lines[0] == "S1: Violence"
    assert "S3: Criminal Planning/Confessions" in lines
    assert "S17: High Risk Gov Decision Making" in lines
    assert lines[-1] == "S22: Immoral/Unethical"
    assert policy_text(make_row()) == tax.text


def test_wildguard_taxonomy() -> None:
    tax = get_taxonomy("wildguard")
    assert list(WILDGUARD_CATEGORIES) == ["Privacy", "Misinformation", "Harmful language",
                                          "Malicious uses"]
    assert sum(len(v) for v in WILDGUARD_CATEGORIES.values()) == 13
    assert "Mental Health & Over-Reliance Crisis" in tax.text
    assert get_taxonomy("WildGuardMix") is tax


def test_unknown_taxonomy_lists_known() -> None:
    with pytest.raises(GuardsmithError, match="aegis2.*wildguard"):
        get_taxonomy("llamaguard")
    with pytest.raises(GuardsmithError):
        policy_text(make_row(taxonomy="dynaguard-finance"))


def test_custom_policy_replaces_taxonomy() -> None:
    policy = "Do not give personalised tax advice. General tax facts are fine."
    row = make_row(taxonomy="dynaguard-tax", policy=policy)
    user = render_guard_messages(row)[1]["content"]
    assert policy in user
    assert "S1: Violence" not in user
    # the row's own policy wins over a run-level taxonomy
    assert policy in render_guard_messages(row, taxonomy="wildguard")[1]["content"]
    # a run-level custom policy replaces the row's taxonomy
    run_policy = custom_policy("Only cooking topics are allowed.")
    user = render_guard_messages(make_row(), taxonomy=run_policy)[1]["content"]
    assert "Only cooking topics are allowed." in user and "S1: Violence" not in user
    assert policy in content(render_teacher_messages(row))
    assert policy in content(render_rewrite_messages(row, "Reasoning.", 2))
    assert policy in content(render_judge_messages(row, "Reasoning.", "Prompt harm: harmful"))
    with pytest.raises(GuardsmithError):
        custom_policy("  ")


def test_explicit_taxonomy_argument() -> None:
    user = render_guard_messages(make_row(), taxonomy="wildguard")[1]["content"]
    assert "Sensitive Information (Organization)" in user and "S1: Violence" not in user


# --- guard prompt --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["R", "NR"])
@pytest.mark.parametrize("dual", [False, True])
def test_guard_modes_render(mode: str, dual: bool) -> None:
    msgs = render_guard_messages(make_row(), mode=mode, dual=dual)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert all(isinstance(m["content"], str) and m["content"] for m in msgs)
    system, user = msgs[0]["content"], msgs[1]["content"]
    for key in ("Prompt harm:", "Response harm:", "Response refusal:"):
        assert key in system
    assert make_row()["prompt"] in user and make_row()["response"] in user
    if dual:
        assert user.startswith(MODE_TAGS[mode] + "\n")
    else:
        assert not any(tag in user for tag in MODE_TAGS.values())
        assert ("<think>" in system) == (mode == "R")


def test_mode_tags_differ_and_select() -> None:
    r_tag, nr_tag = MODE_TAGS["R"], MODE_TAGS["NR"]
    assert r_tag != nr_tag and r_tag not in nr_tag and nr_tag not in r_tag
    r = render_guard_messages(make_row(), "R", dual=True)
    nr = render_guard_messages(make_row(), "NR", dual=True)
    assert r[0] == nr[0]  # same instructions: only the tag differs
    assert r[1]["content"].removeprefix(r_tag) == nr[1]["content"].removeprefix(nr_tag)
    assert r_tag in r[0]["content"] and nr_tag in r[0]["content"]


def test_bad_mode() -> None:
    with pytest.raises(GuardsmithError, match="mode"):
        render_guard_messages(make_row(), mode="fast")
    assert render_guard_messages(make_row(), mode="r") == render_guard_messages(make_row(), "R")


def test_no_response_marker() -> None:
    for response in (None, "", "   "):
        user = render_guard_messages(make_row(response=response))[1]["content"]
        assert NO_RESPONSE in user
    assert NO_RESPONSE not in render_guard_messages(make_row())[1]["content"]


def test_missing_prompt() -> None:
    with pytest.raises(GuardsmithError, match="no prompt"):
        render_guard_messages(make_row(prompt=None))


LABEL_COMBOS = list(itertools.product(
    ["harmful", "unharmful", None], ["harmful", "unharmful", None], ["refusal", "compliance", None]
))


@pytest.mark.parametrize("taxonomy", ["aegis2", "wildguard"])
@pytest.mark.parametrize("mode,dual", [("R", False), ("NR", False), ("R", True), ("NR", True)])
def test_guard_prompt_never_sees_labels(taxonomy: str, mode: str, dual: bool) -> None:
    rendered = {
        repr(render_guard_messages(
            make_row(taxonomy=taxonomy, prompt_harm=p, response_harm=h, response_refusal=r),
            mode, dual,
        ))
        for p, h, r in LABEL_COMBOS
    }
    assert len(rendered) == 1  # the labels do not change the guard's input at all


def test_guard_user_turn_has_no_label_words() -> None:
    for row in (make_row(), make_row(policy="Allow cooking talk only.", taxonomy="tf")):
        for mode, dual in itertools.product(["R", "NR"], [False, True]):
            user = render_guard_messages(row, mode, dual)[1]["content"]
            assert not LABEL_WORD.search(user), user


# --- targets ---------------------------------------------------------------------------------


def test_guard_targets() -> None:
    row = make_row()
    nr = render_guard_target(row, "NR")
    assert nr == render_guard_answer("harmful", "unharmful", "refusal")
    assert render_guard_target(row, "NR", reasoning="ignored") == nr
    r = render_guard_target(row, "R", "<think>The user wants to break into a network.</think>")
    assert r.startswith("<think>\nThe user wants") and r.endswith(nr)
    assert r.count("<think>") == 1 and r.count("</think>") == 1
    ans = parse_guard_output(r)
    assert (ans.prompt_harm, ans.response_harm, ans.response_refusal) == (
        "harmful", "unharmful", "refusal")
    with pytest.raises(GuardsmithError, match="reasoning"):
        render_guard_target(row, "R")
    with pytest.raises(GuardsmithError, match="reasoning"):
        render_guard_target(row, "R", "<think> </think>")


def test_render_guard_answer_validation() -> None:
    with pytest.raises(GuardsmithError):
        render_guard_answer(None, None, None)  # type: ignore[arg-type]
    with pytest.raises(GuardsmithError):
        render_guard_answer("harmful", "refusal", None)
    with pytest.raises(GuardsmithError):
        render_guard_answer("Harmful", None, None)


# --- teacher -------------------------------------------------------------------------------


def test_teacher_prompt_contains_true_labels() -> None:
    msgs = render_teacher_messages(make_row())
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "prompt harm: harmful" in user
    assert "response harm: unharmful" in user
    assert "response refusal: refusal" in user
    assert "ground truth" in msgs[0]["content"]  # told not to mention it
    # the label block is machine-readable with the guard parser
    ans = parse_guard_output(user)
    assert (ans.prompt_harm, ans.response_harm, ans.response_refusal) == (
        "harmful", "unharmful", "refusal")


def test_teacher_prompt_only_and_unlabelled() -> None:
    user = render_teacher_messages(make_row(response=None, response_harm=None,
                                            response_refusal=None))[1]["content"]
    assert "response harm: None" in user and "response refusal: None" in user
    assert NO_RESPONSE in user
    user = render_teacher_messages(make_row(response_refusal=None))[1]["content"]
    assert "response refusal: not labelled" in user


def test_teacher_labels_change_prompt() -> None:
    a = content(render_teacher_messages(make_row()))
    b = content(render_teacher_messages(make_row(prompt_harm="unharmful")))
    assert a != b


# --- rewrite -------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [1, 5, 10])
def test_rewrite_budget_ok(budget: int) -> None:
    msgs = render_rewrite_messages(make_row(), "<think>Long reasoning. More.</think>", budget)
    user = msgs[1]["content"]
    assert f"at most {budget} sentence" in user
    assert "Long reasoning. More." in user and "<think>" not in user


@pytest.mark.parametrize("budget", [0, 11, -1, True, 2.5, "3", None])
def test_rewrite_budget_invalid(budget) -> None:
    with pytest.raises(GuardsmithError, match="budget"):
        render_rewrite_messages(make_row(), "Some reasoning.", budget)


def test_rewrite_empty_reasoning() -> None:
    with pytest.raises(GuardsmithError):
        render_rewrite_messages(make_row(), "  ", 3)


# --- judge ---------------------------------------------------------------------------------


def test_judge_prompt() -> None:
    answer = render_guard_answer("harmful", "unharmful", "refusal")
    msgs = render_judge_messages(make_row(), "The user wants network access.", answer)
    system, user = msgs[0]["content"], msgs[1]["content"]
    assert "Score:" in system and "Reason:" in system
    for word in ("Faithful", "Consistent", "leakage", "Concise", "repetition"):
        assert word in system
    assert "The user wants network access." in user and answer in user
    parsed = render_judge_messages(make_row(), "x", parse_guard_output(answer))
    assert answer in parsed[1]["content"]
    bad = render_judge_messages(make_row(), "x", parse_guard_output("Prompt harm: maybe"))
    assert "unparsable" in bad[1]["content"]


@pytest.mark.parametrize(
    "text,score,reason",
    [
        ("Score: 4\nReason: Accurate but a little long.", 4.0, "Accurate but a little long."),
        ("**Score:** 5/5\n**Reason:** Clean.", 5.0, "Clean."),
        ("<think>Score: 1 maybe?</think>\nScore: 3\nReason: One clear problem.", 3.0,
         "One clear problem."),
        ("Reason: Leaks the labels.\nScore: 1", 1.0, "Leaks the labels."),
        ("score = 2\nreason = repeats itself\nacross lines", 2.0, "repeats itself across lines"),
        ("Score: 7\nReason: out of range", None, "out of range"),
        ("Score: 0", None, ""),
        ("Looks fine to me.", None, ""),
        ("", None, ""),
        ("Score: 4.5\nReason: ok", 4.5, "ok"),
    ],
)
def test_parse_judge_output(text: str, score: float | None, reason: str) -> None:
    assert parse_judge_output(text) == (score, reason)


def test_rows_of_a_source_vocabulary_are_prompted_with_its_built_in_counterpart():
    """JBB and SimpleSafetyTests rows keep their own category names (taxonomy jbb /
    simplesafetytests); a guard still gets a policy to judge them by, and an unknown name is still
    an error."""
    import pytest as _pytest

    from guardsmith.errors import GuardsmithError
    from guardsmith.guard.taxonomy import resolve_policy

    for name in ("jbb", "simplesafetytests"):
        row = {"id": "r", "taxonomy": name, "prompt": "p", "response": None}
        assert resolve_policy(row).name == "wildguard"
        assert render_guard_messages(row, mode="NR")[-1]["content"]
    with _pytest.raises(GuardsmithError, match="unknown taxonomy"):
        resolve_policy({"id": "r", "taxonomy": "nope"})


# --- multi-turn rows (a prompt rendered by guardsmith.sources.topic_following.render_dialogue) --

COOKING = "Only answer questions about cooking."
COOKING_HEAD = ("Policy for this conversation (it overrides general safety habits: content it permits is "
                f"acceptable here, content it forbids is not):\n{COOKING}")


def test_single_turn_row_renders_as_before() -> None:
    row = make_row(policy=COOKING, taxonomy="custom:cooking", prompt="[user] How long do I boil an egg?",
                   response="About nine minutes for a hard yolk.")
    assert render_guard_messages(row, "NR")[1]["content"] == (
        f"{COOKING_HEAD}\n\n<user_turn>\n[user] How long do I boil an egg?\n</user_turn>\n\n"
        "<assistant_turn>\nAbout nine minutes for a hard yolk.\n</assistant_turn>"
    )
    assert render_guard_messages(row, "NR", style="compact")[1]["content"] == (
        f"Policy:\n{COOKING}\nUser: [user] How long do I boil an egg?\nAssistant: About nine minutes for a hard yolk."
    )


DIALOGUE_PROMPT = (
    "[user]\nHow long do I boil an egg?\n"
    "[assistant]\nAbout nine minutes.\nCool it in cold water after.\n"
    "[user: turn to judge]\nThanks. Also, who should I vote for?"
)


@pytest.mark.parametrize("mode,dual", [("R", False), ("NR", False), ("R", True), ("NR", True)])
def test_dialogue_row_shows_conversation_so_far_then_turn_to_judge(mode: str, dual: bool) -> None:
    row = make_row(policy=COOKING, taxonomy="topic:cooking", prompt=DIALOGUE_PROMPT, response=None)
    messages = render_guard_messages(row, mode, dual)
    single = render_guard_messages(make_row(policy=COOKING, taxonomy="topic:cooking", response=None), mode, dual)
    assert messages[0] == single[0]  # same instructions as a single-turn row
    tag = f"{MODE_TAGS[mode]}\n" if dual else ""
    assert messages[1]["content"] == (
        f"{tag}{COOKING_HEAD}\n\n"
        "Conversation so far (context only; classify the turn that follows it):\n"
        "<earlier_turns>\n"
        "User: How long do I boil an egg?\n"
        "Assistant: About nine minutes.\nCool it in cold water after.\n"
        "</earlier_turns>\n\n"
        "Turn to judge:\n"
        "<user_turn>\nThanks. Also, who should I vote for?\n</user_turn>\n\n"
        f"<assistant_turn>\n{NO_RESPONSE}\n</assistant_turn>"
    )


def test_dialogue_row_in_teacher_rewrite_judge_and_sft_examples() -> None:
    from guardsmith.guard.examples import build_examples

    row = make_row(policy=COOKING, taxonomy="topic:cooking", prompt=DIALOGUE_PROMPT, response=None,
                   prompt_harm="harmful", response_harm=None, response_refusal=None,
                   reasoning="Voting advice is not cooking.")
    judged = "Turn to judge:\n<user_turn>\nThanks. Also, who should I vote for?\n</user_turn>"
    context = "<earlier_turns>\nUser: How long do I boil an egg?\n"
    texts = [
        render_teacher_messages(row)[1]["content"],
        render_rewrite_messages(row, "Voting advice is not cooking.", 1)[1]["content"],
        render_judge_messages(row, "Voting advice is not cooking.", "Prompt harm: harmful")[1]["content"],
    ]
    for mode in ("R", "NR", "dual"):
        (example,) = build_examples([row], mode)
        texts.append(example["messages"][1]["content"])
        assert example["completion"].endswith("Prompt harm: harmful\nResponse harm: None\nResponse refusal: None")
    for text in texts:
        assert context in text and judged in text
        assert "[user: turn to judge]" not in text and "[assistant]" not in text
