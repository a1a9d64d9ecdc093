"""The constitution as data: byte-exact round trip of the paper's prompt, files, ablations, errors."""

from __future__ import annotations

import json

import pytest

from harness import data
from harness.common.errors import UserError
from pipeline import constitution as const


@pytest.fixture(scope="module")
def watson_text(data_dir) -> str:
    return data.read_text(const.WATSON_PROMPT, data_dir)


@pytest.fixture(scope="module")
def watson(watson_text) -> const.Constitution:
    return const.parse_watson_prompt(watson_text)


def test_watson_prompt_round_trips_byte_for_byte(watson, watson_text):
    assert const.render(watson) == watson_text
    assert len(watson.principles) == 16
    assert len(watson.exemplars) == 5
    assert watson.assistant_name == "Watson"
    assert watson.self_identification == "I am a helpful, ethical, and reliable assistant."


def test_watson_structure_is_what_the_paper_describes(watson):
    assert watson.principle_ids()[:3] == ["ethical", "informative", "helpful"]
    first = watson.exemplars[0]
    assert first.user == "who is the president of us in 2025"
    assert first.internal_thoughts.rules == ("helpful", "candor", "dated_knowledge")
    assert first.internal_thoughts.thought.startswith("The question asks 2025")
    # Every exemplar closes with the user's feedback and an auto reply (no thoughts).
    assert all(e.follow_ups[-1].internal_thoughts is None for e in watson.exemplars)
    # The sorting exemplar has a second, reasoned turn before the auto reply.
    sort = next(e for e in watson.exemplars if e.id == "write_a_program_to_sort")
    assert sort.user == "Write a program to sort the list:\n\n1, 1, 4, 5, 1, 4"
    assert [t.internal_thoughts is not None for t in sort.follow_ups] == [True, False]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_structured_file_round_trip(watson, watson_text, tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    const.dump_file(watson, path)
    loaded = const.load_file(path)
    assert const.render(loaded) == watson_text
    assert loaded.principles == watson.principles and loaded.exemplars == watson.exemplars


def test_dropping_a_principle_renumbers_and_prunes_citations(watson):
    ablated = const.apply_ablation(watson, const.Ablation(drop_principles=["candor"]))
    text = const.render(ablated)
    assert "(candor)" not in text
    assert "7 (knowledge recitation). When a user's question" in text
    # the first exemplar cited 3 (helpful), 7 (candor), 12 (dated knowledge)
    assert "I should follow rules 3 (helpful), 11 (dated knowledge)." in text
    assert len(ablated.principles) == 15


def test_replacing_a_principle_keeps_its_place_and_citations(watson):
    ablated = const.apply_ablation(
        watson, const.Ablation(replace_principles={"candor": {"name": "honesty", "text": "Watson says when it does not know."}})
    )
    text = const.render(ablated)
    assert "7 (honesty). Watson says when it does not know." in text
    assert "3 (helpful), 7 (honesty), 12 (dated knowledge)." in text


def test_dropping_and_replacing_exemplars(watson, watson_text):
    ablated = const.apply_ablation(watson, const.Ablation(drop_exemplars=["who_is_zhiqing_sun"]))
    text = const.render(ablated)
    assert "Zhiqing" not in text and len(ablated.exemplars) == 4
    assert text.endswith("User:")
    new = {"user": "Name a prime.", "internal_thoughts": {"thought": "Easy.", "rules": ["reasoning"]}, "answer": "2."}
    replaced = const.apply_ablation(watson, const.Ablation(replace_exemplars={"tell_me_about_alpaca_s": new}))
    text = const.render(replaced)
    assert "User: Name a prime.\n\nWatson (internal thoughts): I am a helpful, ethical, and reliable assistant. Easy. I should follow rules 5 (reasoning).\n\nWatson: 2.\n\nUser:" in text
    assert "alpaca" not in text


@pytest.mark.parametrize(
    "ablation, message",
    [
        (const.Ablation(drop_principles=["candour"]), "did you mean 'candor'"),
        (const.Ablation(replace_principles={"helpfull": {"text": "x"}}), "replace_principles"),
        (const.Ablation(drop_exemplars=["weather"]), "unknown exemplar id 'weather'"),
        (const.Ablation(replace_principles={"candor": {"wording": "x"}}), "expected a mapping with 'name' and/or 'text'"),
        (const.Ablation(replace_exemplars={"who_is_zhiqing_sun": {"user": "hi", "answer": "hello"}}), "internal_thoughts"),
    ],
)
def test_bad_ablations_fail_with_one_clear_line(watson, ablation, message):
    with pytest.raises(UserError) as err:
        const.apply_ablation(watson, ablation)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dropping_every_principle_is_refused(watson):
    with pytest.raises(UserError, match="keep at least one"):
        const.apply_ablation(watson, const.Ablation(drop_principles=watson.principle_ids()))


def _minimal() -> dict:
    return {
        "format": const.FORMAT_TAG,
        "assistant_name": "Ada",
        "self_identification": "I am Ada.",
        "rules_intro": "Ada follows these rules:",
        "examples_intro": "Examples follow.",
        "principles": [{"id": "kind", "name": "kind", "text": "Ada is kind."}],
        "exemplars": [{"id": "hi", "user": "hi", "internal_thoughts": {"thought": "A greeting.", "rules": ["kind"]}, "answer": "Hello!"}],
    }


def test_custom_constitution_renders_in_the_paper_layout(tmp_path):
    path = tmp_path / "ada.json"
    path.write_text(json.dumps(_minimal()))
    text = const.render(const.load_file(path))
    assert text == (
        "# Ada\n\n## General Rules\n\nAda follows these rules:\n\n1 (kind). Ada is kind.\n\n## Examples\n\n"
        "Examples follow.\n\nUser: hi\n\nAda (internal thoughts): I am Ada. A greeting. I should follow rules 1 (kind).\n\n"
        "Ada: Hello!\n\nUser:"
    )


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("format"), "format"),
        (lambda d: d["principles"][0].pop("text"), "principles[0].text: is missing"),
        (lambda d: d["principles"].append(dict(d["principles"][0])), "principles[1].id: 'kind' is used twice"),
        (lambda d: d["exemplars"][0]["internal_thoughts"].update(rules=["kindness"]), "unknown principle id 'kindness'"),
        (lambda d: d["exemplars"][0].pop("answer"), "exemplars[0].answer: is missing"),
        (lambda d: d.update(principles=[]), "principles: must be a non-empty list"),
    ],
)
def test_malformed_constitution_files_name_the_field(tmp_path, mutate, message):
    d = _minimal()
    mutate(d)
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(d))  # JSON is valid YAML
    with pytest.raises(UserError) as err:
        const.load_file(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_malformed_text_prompt_and_yaml_syntax(tmp_path, watson_text):
    bad = tmp_path / "bad.txt"
    bad.write_text(watson_text.replace("7 (candor).", "7 candor."))
    with pytest.raises(UserError, match="principle line 7"):
        const.load_file(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("principles: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        const.load_file(broken)
    with pytest.raises(UserError, match="does not exist"):
        const.load_file(tmp_path / "missing.yaml")


def test_shipped_example_constitution_loads_and_renders():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "constitutions" / "minimal_example.yaml"
    c = const.load_file(path)
    assert c.principle_ids() == ["harmless", "honest", "stepwise"] and c.exemplar_ids() == ["train_speed", "tomorrow_lottery"]
    text = const.render(c)
    assert text.startswith("# Ada\n\n## General Rules\n\n") and text.endswith("Ada (auto reply): Thank you for understanding!\n\nUser:")
    assert "I should follow rules 3 (step-by-step)." in text
