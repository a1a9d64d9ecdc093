"""Stage 2 and stage 4 answer parsing and filters against hand-written model outputs."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from pipeline.config import SelfAlignConfig, VerboseCloneConfig
from pipeline.stages.answer_filters import VERBOSE_BOUNDARIES, cut_repetition
from pipeline.stages.self_align import parse_self_align_output, self_align_prompt
from pipeline.stages.verbose_clone import parse_verbose_output, verbose_prompt

SELF_ID = "I am a helpful, ethical, and reliable assistant."
THOUGHTS = f" {SELF_ID} The user asks about tides. I should follow rules 2 (informative)."
LONG = (
    "Tides are caused mainly by the gravitational pull of the Moon on Earth's oceans. "
    "The Sun contributes too, which is why spring tides and neap tides alternate over a month."
)  # > 160 characters


def parse2(raw: str, finish: str = "stop", **cfg):
    return parse_self_align_output(raw, finish, assistant_name="Watson", self_identification=SELF_ID, cfg=SelfAlignConfig(**cfg))


# -- stage 2 ------------------------------------------------------------------------------------


def test_prompt_fills_the_open_user_slot():
    assert self_align_prompt("...\n\nUser:", "Watson", "Why?", "Context.") == "...\n\nUser: Why?\n\nContext.\n\nWatson (internal thoughts):"
    assert self_align_prompt("...\n\nUser:", "Watson", "Why?") == "...\n\nUser: Why?\n\nWatson (internal thoughts):"


def test_answer_that_ends_its_turn_is_kept_with_the_turn_marker():
    raw = f"{THOUGHTS}\n\nWatson: {LONG}\n\nUser: Good job! Clear context\n\nWatson (auto reply): Thanks"
    v = parse2(raw, "length")
    assert v.reason is None
    assert v.answer == LONG + "\n\n### User\n"


def test_stop_string_cut_is_the_same_as_the_reference_cut():
    # With stop_at_next_turn the engine stops before "\n\nUser:"; the kept answer is identical.
    assert parse2(f"{THOUGHTS}\n\nWatson: {LONG}", "stop").answer == LONG + "\n\n### User\n"


def test_short_answer_that_ends_its_turn_is_dropped():
    assert parse2(f"{THOUGHTS}\n\nWatson: Tides come from the Moon.\n\nUser: ok", "length").reason == "too_short"


def test_truncated_answer_loses_only_its_partial_last_word():
    v = parse2(f"{THOUGHTS}\n\nWatson: Tides are caused by the Mo", "length")
    assert v.reason is None and v.answer == "Tides are caused by the"


def test_reference_compat_flag_drops_the_last_word_even_after_eos():
    raw = f"{THOUGHTS}\n\nWatson: Tides are caused by the Moon"
    assert parse2(raw, "stop", drop_final_word_always=True).answer == "Tides are caused by the"
    assert parse2(raw, "stop").reason == "too_short"  # fixed behaviour: a complete, ended turn


def test_missing_self_identification_or_answer():
    assert parse2(" I am Watson. The user asks.\n\nWatson: hi").reason == "no_self_identification"
    assert parse2(THOUGHTS + " I will now answer.").reason == "no_answer"


def test_leading_whitespace_of_hf_decoding_is_ignored():
    assert parse2(f"\n  {SELF_ID}\n\nWatson: {LONG}").reason is None


@pytest.mark.parametrize(
    "answer, reason, detail",
    [
        (LONG + " The president said so.", "exemplar_leak", "president"),
        (LONG + " Could you please provide more details or context so I can try to assist you better?", "exemplar_leak", None),
        ("I'm sorry, but " + LONG, "apology_prefix", "I'm sorry"),
        (LONG + " The list [1, 1, 4, 5] sorted.", "exemplar_leak", "1, 1, 4"),
    ],
)
def test_blacklists(answer, reason, detail):
    v = parse2(f"{THOUGHTS}\n\nWatson: {answer}")
    assert v.reason == reason
    if detail:
        assert v.detail == detail


def test_rename_and_wikipedia_rewrite():
    answer = "According to my knowledge from Wikipedia, here is what Watson knows about tides: " + LONG
    v = parse2(f"{THOUGHTS}\n\nWatson: {answer}")
    assert v.reason is None
    assert v.answer.startswith("Here is what Dromedary knows about tides: ")


def test_repetition_is_cut_at_the_first_repeated_segment():
    looping = "Intro. Tides rise. Tides fall. Tides rise. Tides fall."
    assert cut_repetition(looping) == "Intro. Tides rise. Tides fall."
    # Segments keep their leading space, so the very first sentence never matches a repeat of it.
    assert cut_repetition("Rise. Fall. Rise. Fall.") == "Rise. Fall. Rise."
    # Segments made only of boundary characters may repeat (blank lines, lone periods).
    assert cut_repetition("A.\n\nB.\n\nC.") == "A.\n\nB.\n\nC."
    # Stage 4 also splits at backticks.
    assert cut_repetition("x = 1`\ny = 2`\nx = 1`", VERBOSE_BOUNDARIES) == "x = 1`\ny = 2`"


def test_empty_answer():
    assert parse2(f"{THOUGHTS}\n\nWatson:", "length").reason == "empty"


# -- stage 4 ------------------------------------------------------------------------------------

VERBOSE = (
    "Tides are the regular rise and fall of sea level. They are caused by the Moon and the Sun, "
    "and they matter for shipping, fishing and coastal ecosystems alike."
)


def parse4(raw: str, finish: str = "stop", instruction: str = "Explain tides.", **cfg):
    return parse_verbose_output(raw, finish, instruction=instruction, input_text="", cfg=replace(VerboseCloneConfig(), **cfg))


def test_verbose_prompt_ends_with_the_extensive_role():
    assert verbose_prompt("META", "Explain tides.") == "META\nExplain tides.\n\n### Dromedary (extensive)"


def test_verbose_answer_ending_its_turn():
    v = parse4(f"\n{VERBOSE}\n\n### User\nthanks", "length")
    # The repetition cut's final strip removes the marker's newline, exactly as in the reference.
    assert v.reason is None and v.answer == VERBOSE + "\n\n### User"
    assert parse4(VERBOSE, "stop").answer == VERBOSE + "\n\n### User"


def test_verbose_truncated_and_short():
    assert parse4(VERBOSE + " and mo", "length").answer == VERBOSE + " and"
    assert parse4("Tides are caused by the Moon and", "length").reason == "too_short"
    # A short answer that ended its turn is kept (the reference only drops short unended ones).
    assert parse4("Tides come from the Moon.", "stop").reason is None


def test_verbose_list_is_capped_at_twelve_items():
    items = "\n".join(f"{i}. Item number {i} about tides and the sea" for i in range(1, 16))
    v = parse4(items, "stop")
    assert "\n12. " in v.answer and "\n13. " not in v.answer and "### User" not in v.answer


@pytest.mark.parametrize("marker", ["## See also", "## External links", "Dromedary (extensive)"])
def test_verbose_bad_markers(marker):
    assert parse4(f"{VERBOSE}\n\n{marker}\n* Moon", "stop").reason == "bad_marker"


def test_verbose_canned_answer_and_leak():
    v = parse4(VERBOSE, "stop", instruction="Who is Zhiqing Sun?")
    assert v.reason is None and v.answer.startswith("As an AI language model, I lack specific information")
    assert parse4(VERBOSE + " Zhiqing agrees.", "stop").reason == "exemplar_leak"


# -- the stop at the next turn against the reference's post-hoc cut (issue 11 item 8) -----------


def reference_self_align_answer(original_output: str) -> str | None:
    """IBM/Dromedary 39a2b1c merge_and_fileter_self_align_with_dummy.py lines 50-62 (dedup) and
    88-147, for one output (the Watson prompt, so the name is "Watson"); None = skipped."""

    def dedup(line_output):
        line_output = re.split(r"(?<=[\n.?!;:,])", line_output)
        filtered_line_output = []
        for splitted_line in line_output:
            if splitted_line not in filtered_line_output or splitted_line == "" or splitted_line in "\n.?!;:,":
                filtered_line_output.append(splitted_line)
            else:
                break
        return "".join(filtered_line_output).strip()

    if not original_output.startswith("I am a helpful, ethical, and reliable assistant."):
        return None
    if "\n\nWatson:" not in original_output:
        return None
    output_text = dedup(original_output.split("\n\nWatson:", 1)[1].strip())
    if "\n\nUser:" in output_text:
        output_text = output_text.split("\n\nUser:", 1)[0].strip() + "\n\n### User\n"
        if len(output_text) < 160:
            return None
    else:
        output_text = output_text.rsplit(" ", 1)[0]
    if any(word in output_text for word in SelfAlignConfig().blacklist):
        return None
    if any(output_text.startswith(p) for p in ("I'm sorry", "I am sorry")) or not output_text:
        return None
    output_text = output_text.replace("Watson", "Dromedary")
    if output_text.startswith("According to my knowledge from Wikipedia, here"):
        output_text = "Here" + output_text[len("According to my knowledge from Wikipedia, here") :]
    return output_text


AFTER = "\n\nUser: Good job! Clear context\n\nWatson (auto reply): Thank you."
EDGE_CASES = {
    "plain": f"{THOUGHTS}\n\nWatson: {LONG}",
    # the last sentence repeats: the cut takes the turn end with it, so the reference drops the
    # last word instead of adding "### User"
    "repeat_ends_at_the_turn": f"{THOUGHTS}\n\nWatson: {LONG}\nTides.\nMoon and Sun.\nTides.",
    # the last line repeats an earlier one, but only the reference's text, with "\n\nUser:" after
    # it, makes it the segment "see the Moon\n" again
    "repeat_line_ends_at_the_turn": f"{THOUGHTS}\n\nWatson: {LONG}\nsee the Moon\nand the Sun\nsee the Moon",
    # a repeated sentence before the turn: cut there, and the last word goes, as for a truncation
    "repeat_before_the_turn": f"{THOUGHTS}\n\nWatson: {LONG} The Moon pulls. Water rises. The Moon pulls. Water",
    # "User:" already began a segment: the turn's own "User:" repeats it
    "user_segment_earlier": f"{THOUGHTS}\n\nWatson: {LONG}\nUser: is a word here.",
    "short": f"{THOUGHTS}\n\nWatson: Tides come from the Moon.",
    "wikipedia": f"{THOUGHTS}\n\nWatson: According to my knowledge from Wikipedia, here is why. {LONG}",
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_stopping_at_the_next_turn_keeps_what_the_reference_keeps(case):
    before_turn = EDGE_CASES[case]
    expected = reference_self_align_answer((before_turn + AFTER).lstrip())
    verdict = parse_self_align_output(
        before_turn, "stop", assistant_name="Watson", self_identification=SELF_ID, cfg=SelfAlignConfig(),
        stop_string="\n\nUser:",
    )
    assert verdict.answer == expected, verdict


def test_reference_edge_cases_differ_from_the_old_rule():
    # Without the stop string put back, three of the cases above kept a different answer.
    old = {case: parse2(text, "stop").answer for case, text in EDGE_CASES.items()}
    ref = {case: reference_self_align_answer((text + AFTER).lstrip()) for case, text in EDGE_CASES.items()}
    assert {c for c in EDGE_CASES if old[c] != ref[c]} >= {"repeat_ends_at_the_turn", "repeat_line_ends_at_the_turn", "repeat_before_the_turn"}
