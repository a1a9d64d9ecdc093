"""Stage 1 parsing and filters against hand-written model outputs (reference edge cases included)."""

from __future__ import annotations

import pytest

from harness.common.errors import UserError
from pipeline.config import InstructionFilterConfig
from pipeline.inputs import SeedQuestion, SeedTask, load_seed_questions, load_seed_tasks
from pipeline.stages import self_instruct, tgrt
from pipeline.stages.instruction_filters import NoveltyPool, find_word, static_drop_reason

# -- Self-Instruct ------------------------------------------------------------------------------


def test_encode_prompt_matches_the_reference_layout():
    tasks = [SeedTask("Give  me\na word:", ""), SeedTask("Sort these.", "3, 1, 2")]
    prompt = self_instruct.encode_prompt("List of 20 tasks:\n", tasks)
    assert prompt == (
        "List of 20 tasks:\n\n"
        "###\n1. Instruction: Give me a word\n1. Input:\n<noinput>\n"
        "###\n2. Instruction: Sort these.\n2. Input:\n3, 1, 2\n"
        "###\n3. Instruction:"
    )


COMPLETION = (
    " Write a haiku about autumn leaves falling.\n6. Input:\n<noinput>\n###\n"
    "7. Instruction: Convert the temperature to Fahrenheit.\n7. Input:\n25 degrees Celsius\n###\n"
    "9. Instruction: Skipped number.\n9. Input:\n<noinput>\n###\n"
    "9. Instruction: Name three rivers in Europe please.\n9. Input:\n<NOINPUT>\n###\n"
    "10. Instruction: Explain why the sky"
)


def test_parse_completion_splits_numbered_blocks():
    parsed = self_instruct.parse_completion(COMPLETION, 5, "length")
    assert [(p.position, p.reason) for p in parsed] == [(6, None), (7, None), (8, "malformed"), (9, None), (10, "truncated")]
    assert parsed[0].instruction == "Write a haiku about autumn leaves falling." and parsed[0].input == ""
    assert parsed[1].input == "25 degrees Celsius"
    assert parsed[3].input == ""  # <NOINPUT> is a no-input marker too


def test_last_block_is_kept_when_the_model_stopped_by_itself():
    text = " Write a haiku about autumn leaves falling.\n6. Input:\n<noinput>\n"
    [p] = self_instruct.parse_completion(text, 5, "stop")
    assert p.reason is None and p.instruction == "Write a haiku about autumn leaves falling."
    [p] = self_instruct.parse_completion(text, 5, "length")
    assert p.reason == "truncated"


def test_block_with_fields_swapped_or_missing_is_malformed():
    text = " Input first?\n6. Instruction: x\n###\n7. Instruction: no input field at all\n###\n"
    parsed = self_instruct.parse_completion(text, 5, "stop")
    assert [p.reason for p in parsed] == ["malformed", "malformed"]


@pytest.mark.parametrize(
    "instruction, input_text, reason",
    [
        ("Name three colors.", "", "too_short"),  # 3 words: the reference rejects <= 3
        ("Name three primary colors.", "", None),
        (" ".join(["word"] * 151), "", "too_long"),
        ("Draw a cat on the sidewalk.", "", "keyword_blacklist"),
        ("Describe the sound of this AUDIO clip.", "", "keyword_blacklist"),  # case-insensitive
        ("Summarize the passage below please.", "See the attached file.", "keyword_blacklist"),  # input too
        ("Describe the mapping between two sets.", "", None),  # whole words only: mapping != map
        ("Please go to the store today.", "", "keyword_blacklist"),  # multi-word entry
        ("- Write a list of ten fruits.", "", "starts_with_punctuation"),
        ("Écris un poème sur la mer.", "", "non_ascii_start"),
    ],
)
def test_static_filters(instruction, input_text, reason):
    assert static_drop_reason(instruction, input_text, InstructionFilterConfig()) == reason


def test_find_word_matches_whole_words_and_escapes_regex_characters():
    assert find_word("go to", "then GO TO bed")
    assert not find_word("map", "roadmaps")
    # The reference built the regex unescaped, so a user keyword like "c++" raised re.error.
    assert find_word("(image)", "an (image) here") is False  # \b cannot sit next to "(": no crash, no match


def test_novelty_pool_rejects_near_duplicates_including_within_one_batch():
    pool = NoveltyPool(0.7, ["What is the capital of France?"])
    assert pool.admit("what is the capital of France").reason == "duplicate"
    assert pool.admit("What is the capital city of Spain?").reason == "rouge_l_similar"  # 0.77 > 0.7
    similar = pool.admit("What is the capital city of Spain?")
    assert similar.reason == "duplicate" or similar.matched == "What is the capital of France?"
    first = pool.admit("Write a short story about a robot learning to paint.")
    assert first.reason is None and first.rouge_l_max is None and first.matched is None
    # The reference's cross-shard merge missed duplicates inside one shard; one pool does not.
    assert pool.admit("Write a short story about a robot learning to paint!").reason == "duplicate"
    assert pool.admit("Write a short story about a robot who learns to paint.").reason == "rouge_l_similar"
    assert len(pool) == 2


# -- TGRT ---------------------------------------------------------------------------------------


def test_topic_prompt_matches_the_reference():
    meta = "Topics for type: {}.\n\nList of 10 topics:"
    assert tgrt.topic_prompt(meta, "Questions about art", ["Painting", "Sculpture"]) == (
        "Topics for type: Questions about art.\n\nList of 10 topics:\n\n1. Painting\n2. Sculpture\n"
    )


def test_parse_topics_applies_the_reference_rules():
    text = "2. Family Traditions\n3. honeymoon\n4. Far Too Many Words\n5. Dowry.\n\n6. Rings\n7. Anci"
    parsed = tgrt.parse_topics(text, "length")
    assert [(t.topic, t.reason) for t in parsed] == [
        ("Family Traditions", None),
        ("honeymoon", "not_capitalized"),
        ("Far Too Many Words", "too_long"),
        ("Dowry.", "ends_with_punctuation"),
        ("Rings", None),
        ("Anci", "truncated"),  # the reference would have kept this cut-off topic
    ]
    assert tgrt.parse_topics("2. Rings\n3. Gold", "stop")[-1] == tgrt.ParsedTopic("Gold")


def test_parse_topics_reads_at_most_twenty_lines():
    text = "\n".join(f"{i}. Topic {chr(65 + i)}" for i in range(2, 30))
    assert len(tgrt.parse_topics(text, "stop")) == tgrt.MAX_TOPIC_LINES


def test_topic_pool_is_deduplicated_case_insensitively_and_balanced():
    pool = {"A": ["Car", "car", "Bus", "Train"], "B": ["Gold", "Silver"]}
    assert tgrt.balance_topic_pool(pool) == {"A": ["Car", "Bus"], "B": ["Gold", "Silver"]}


def test_question_prompt_and_parse():
    meta = "Hints:{}\n\nInstructions:{}"
    examples = [SeedQuestion("Wedding", "Questions that require cultural context", "How should I celebrate weddings?")]
    prompt, expected = tgrt.question_prompt(meta, examples, [("Questions that require legal expertise", "Patents"), ("Questions that require legal expertise", "Leases")])
    assert prompt == (
        "Hints:\n1. type: Instructions that require cultural context, topic: Wedding"
        "\n2. type: Instructions that require legal expertise, topic: Patents"
        "\n3. type: Instructions that require legal expertise, topic: Leases\n\n"
        "Instructions:\n1. type: Instructions that require cultural context, topic: Wedding, instruction: How should I celebrate weddings?\n"
    )
    text = (
        "1. type: Instructions that require cultural context, topic: Wedding, instruction: A copied seed line\n"
        "2. type: Instructions that require legal expertise, topic: Patents, instruction: How do I patent a recipe?\n"
        "3. type: Instructions that require legal expertise, topic: Leases\n"
        "something unrelated\n"
        "3. type: Instructions that require legal expertise, topic: Leases, instruction: Can my landlord"
    )
    parsed = tgrt.parse_questions(text, "length", expected)
    assert [(q.position, q.instruction, q.topic, q.reason) for q in parsed] == [
        (2, "How do I patent a recipe?", "Patents", None),
        (3, "3. type: Instructions that require legal expertise, topic: Leases", "Leases", "malformed"),
    ]
    assert parsed[0].question_type == "Questions that require legal expertise"  # the seed file's name
    # Stopped by itself: the last line is complete and kept.
    assert tgrt.parse_questions(text, "stop", expected)[-1].instruction == "Can my landlord"


def test_prompt_template_with_wrong_placeholders_is_a_user_error():
    with pytest.raises(UserError, match="placeholder"):
        tgrt.topic_prompt("no placeholder {} and {}", "x", [])


# -- seed files ---------------------------------------------------------------------------------


def test_real_seed_files_load(data_dir):
    tasks = load_seed_tasks("dromedary/prompts/self_instruct_seed_tasks.jsonl", data_dir)
    questions = load_seed_questions("dromedary/prompts/tgrt_self_instruct_seed_questions.jsonl", data_dir)
    assert len(tasks) + len(questions) == 195  # the paper's 195 seed prompts
    assert len({q.question_type for q in questions}) == 20


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"instruction": "x"}\n', "field 'instances' must be a non-empty list"),
        ('{"instances": [{"input": ""}]}\n', "field 'instruction' is missing"),
        ('{"instruction": "x", "instances": [{"output": "y"}]}\n', "field 'input'"),
        ('{"instruction": "x", "instances": [{"input": ""}]}\nnot json\n', ":2: not valid JSON"),
        ("", "no seed task records"),
    ],
)
def test_malformed_seed_tasks_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "seeds.jsonl"
    path.write_text(content)
    with pytest.raises(UserError) as err:
        load_seed_tasks(str(path), None)
    assert message in str(err.value) and str(path) in str(err.value)


def test_malformed_seed_questions_and_missing_file(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"topic": "T", "question_type": "Q"}\n')
    with pytest.raises(UserError, match=r"q.jsonl:1: field 'question'"):
        load_seed_questions(str(path), None)
    with pytest.raises(UserError, match="stage1.tgrt.seed_questions='nope.jsonl': neither a known data file"):
        load_seed_questions("nope.jsonl", None)


def test_keyword_blacklist_pattern_agrees_with_find_word_per_word():
    from pipeline.config import InstructionFilterConfig

    cfg = InstructionFilterConfig()
    texts = ["Draw a map of Paris", "Go to the roadmaps page", "an (image) here", "MUSIC theory basics",
             "Explain fileserver design", "Plot twist: write a story", "Describe the audio-visual era"]
    for text in texts:
        expected = any(find_word(w, text) for w in cfg.keyword_blacklist)
        assert (static_drop_reason("Write about " + text, "", cfg) == "keyword_blacklist") == expected
        assert (static_drop_reason("Write about this topic", text, cfg) == "keyword_blacklist") == expected


# -- which filters TGRT questions pass (issue 11 item 2) ------------------------------------------


def _tgrt(i: int, question: str, qtype: str, topic: str) -> dict:
    return {"id": f"tgrt-q-{i:06d}-00", "instruction": question, "input": "", "parse_error": None,
            "origin": {"source": "tgrt", "question_type": qtype, "topic": topic}}  # fmt: skip


@pytest.mark.parametrize("self_instruct_filters", [False, True], ids=["reference", "all-filters"])
def test_tgrt_questions_are_deduplicated_by_topic_and_type_only(data_dir, self_instruct_filters):
    """merge_tgrt_question.py (lines 30-37) keeps the first question per (topic, question_type)
    and applies nothing else; stage1.tgrt.self_instruct_filters adds the Self-Instruct filters."""
    from pipeline.config import PipelineConfig
    from pipeline.stages.tgrt_self_instruct import TGRTSelfInstructStage

    tasks = load_seed_tasks("dromedary/prompts/self_instruct_seed_tasks.jsonl", data_dir)
    seeds = load_seed_questions("dromedary/prompts/tgrt_self_instruct_seed_questions.jsonl", data_dir)
    cfg = PipelineConfig()
    cfg.stage1.tgrt.self_instruct_filters = self_instruct_filters
    blacklisted = cfg.stage1.filters.keyword_blacklist[0]  # the reference's first word: "image"
    candidates = [
        _tgrt(0, seeds[0].question, seeds[0].question_type, "a new topic"),  # ROUGE-L 1.0 vs a seed
        _tgrt(1, "Why?", "Questions about art", "Painting"),  # under the reference's 4 words
        _tgrt(2, f"Can you describe this {blacklisted} of a painting for me?", "Questions about art", "Sculpture"),
        _tgrt(3, "What makes a sculpture valuable to collectors today?", "Questions about art", "Sculpture"),
        _tgrt(4, "How long does the paint on an oil painting take to dry?", "Questions about art", "Oil"),
    ]
    progress = []
    kept, counters, pairs_exact = TGRTSelfInstructStage()._filter(
        cfg, candidates, tasks, seeds, lambda done, total: progress.append((done, total))
    )
    assert progress[0] == (0, 5) and progress[-1] == (5, 5)
    if not self_instruct_filters:
        assert pairs_exact == 0  # TGRT questions never reach the novelty index then
    reasons = [c["drop_reason"] for c in candidates]
    if self_instruct_filters:
        assert reasons == ["duplicate", "too_short", "keyword_blacklist", None, None]
    else:
        # The blacklisted question took (Sculpture, art) first, so the later one is the duplicate.
        assert reasons == [None, None, None, "duplicate_topic", None]
        assert counters["tgrt"].kept == 4 and "rouge_l_max" not in candidates[0]
    assert [k["id"] for k in kept] == [c["id"] for c in candidates if c["kept"]]
