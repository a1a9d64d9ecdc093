"""The pipeline's configuration: one typed dataclass tree, defaults = the paper's settings.

Loaded with ``harness.common.config.load_config(PipelineConfig, yaml, overrides)``. Where the
paper and the released scripts (IBM/Dromedary @ 39a2b1c) disagree, the default follows the
paper and the comment names the script's value. Counts (how many prompts to make) default to
small numbers; ``configs/pipeline/paper.yaml`` sets the paper's scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.training.config import LoraTrainConfig

# The reference's Self-Instruct keyword filter (words a text-only model cannot act on).
SELF_INSTRUCT_BLACKLIST = [
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
]  # fmt: skip

# Stage-2 exemplar-leak blacklist of the reference (merge_and_fileter_self_align_with_dummy.py):
# phrases a small model copies from the five Watson exemplars instead of answering.
SELF_ALIGN_BLACKLIST = [
    "User:", "Good job! Clear context", "Watson (auto reply):",
    "Could you please provide more details or context so I can try to assist you better?",
    "president", "President",  # first exemplar
    "Zhiqing",  # second exemplar
    "1, 1, 4",  # third exemplar
    "weather", "or by watching the news or checking your local",  # fourth exemplar
    "alpaca", "Alpaca",  # fifth exemplar
]  # fmt: skip

ZHIQING_ANSWER = (
    "As an AI language model, I lack specific information about every person in the world. Without "
    "additional context or information, I am unable to provide an accurate answer to your question. "
    "Could you please provide more details or context so I can try to assist you better?"
)

VERBOSE_INTRO = (
    "As a helpful, ethical, and reliable AI assistant, my foremost objective is to promote user safety, "
    "adhere to moral principles, and foster conscientious behavior. In the face of potentially harmful "
    "inquiries, I actively redirect users towards constructive topics by emphasizing the negative "
    "consequences and elucidating the reasoning behind my stance."
)


@dataclass
class ModelConfig:
    # alias (gemma-3-270m), Hugging Face directory or .gguf file; never fetched from the hub
    base: str = "gemma-3-270m"


@dataclass
class EngineConfig:
    backend: str = "transformers"  # or "vllm" (GPU machines; imported lazily), "fake" (dry runs)
    # extra keyword arguments for the backend (batch_size, dtype, tensor_parallel_size, ...)
    options: dict[str, Any] = field(default_factory=dict)
    # requests handed to the engine per call: the resume granularity and progress-bar step
    chunk_size: int = 32


@dataclass
class InstructionFilterConfig:
    """Stage-1 filters of the reference's post_process_gpt3_response plus the ROUGE-L dedup."""

    min_words: int = 4  # the reference drops instructions of <= 3 words
    max_words: int = 150
    keyword_blacklist: list[str] = field(default_factory=lambda: list(SELF_INSTRUCT_BLACKLIST))
    rouge_l_threshold: float = 0.7  # drop when ROUGE-L F > this against anything kept (seeds included)


@dataclass
class SelfInstructConfig:
    enabled: bool = True
    prompt: str = "dromedary/prompts/self_instruct_prompt.txt"  # data-manifest path or a file path
    seed_tasks: str = "dromedary/prompts/self_instruct_seed_tasks.jsonl"
    num_requests: int = 8  # completions to sample (paper: until 267,597 prompts)
    max_instructions: int | None = None  # cap on kept instructions (first in id order)
    seeds_per_prompt: int = 5
    max_new_tokens: int = 384  # paper; the released script uses 1024
    temperature: float = 1.0
    top_p: float = 0.98
    suppress_eos: bool = True  # the reference biases EOS by -100 so the model keeps listing


@dataclass
class TGRTConfig:
    enabled: bool = True
    topic_prompt: str = "dromedary/prompts/tgrt_self_instruct_topic_brainstorm_prompt.txt"
    question_prompt: str = "dromedary/prompts/tgrt_self_instruct_question_generation_prompt.txt"
    seed_questions: str = "dromedary/prompts/tgrt_self_instruct_seed_questions.jsonl"
    # question types to use (exact names from the seed file); empty = all 20
    question_types: list[str] = field(default_factory=list)
    # Topic brainstorming grows the pool over rounds; the released script used the pool after
    # round 5 (file "epoch5") of 9, i.e. six rounds.
    topic_rounds: int = 6
    topics_per_prompt: int = 5  # shown topics once a type has >= 2x this many
    max_topic_prompts_per_type: int | None = None  # cap per type and round (demo); None = reference
    max_topics_per_type: int | None = None  # cap after dedup (demo); None = reference
    topic_max_new_tokens: int = 128
    topic_temperature: float = 1.0
    topic_top_p: float = 0.98
    questions_per_prompt: int = 5
    seed_examples_per_prompt: int = 5
    question_max_new_tokens: int = 384
    question_temperature: float = 1.0
    question_top_p: float = 0.95
    max_questions: int | None = None  # cap on kept TGRT prompts (first in id order)
    suppress_eos: bool = True
    # The reference keeps the first question per (topic, question type) and nothing else
    # (merge_tgrt_question.py): the Self-Instruct word bounds, keyword blacklist and ROUGE-L
    # novelty filter (stage1.filters) never see TGRT questions. True also runs them on TGRT
    # questions (this pipeline's behaviour before issue 11).
    self_instruct_filters: bool = False


@dataclass
class SyntheticPromptsConfig:
    """Stage 1: Topic-Guided Red-Teaming Self-Instruct."""

    self_instruct: SelfInstructConfig = field(default_factory=SelfInstructConfig)
    tgrt: TGRTConfig = field(default_factory=TGRTConfig)
    filters: InstructionFilterConfig = field(default_factory=InstructionFilterConfig)


@dataclass
class ConstitutionConfig:
    # A structured constitution (.yaml/.json, see `selfalign pipeline constitution --export`) or
    # a Watson-style .txt prompt; None = the paper's prompt from the data directory.
    path: str | None = None
    drop_principles: list[str] = field(default_factory=list)
    drop_exemplars: list[str] = field(default_factory=list)
    replace_principles: dict[str, dict[str, str]] = field(default_factory=dict)
    replace_exemplars: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SelfAlignConfig:
    """Stage 2: Principle-Driven Self-Alignment."""

    # Prompts to answer: None = stage 1's output; or a JSONL file of {id, instruction, input}.
    prompts_file: str | None = None
    max_prompts: int | None = None
    max_new_tokens: int = 256
    temperature: float = 0.5
    top_p: float = 0.95  # the released script; the paper's table says 0.9
    logit_bias: dict[str, float] = field(default_factory=lambda: {"Sorry": -100.0})  # script, not paper
    # Stop at the next "\n\nUser:" instead of sampling the full 256 tokens and cutting there
    # afterwards (the reference). The stop string is put back before the repetition cut and the
    # turn rule, so the kept answers are the reference's (tested on its edge cases), except for
    # an output that ends its turn before any answer: dropped here, while the reference could
    # take the answer of a later turn the model invented. False reproduces that too.
    stop_at_next_turn: bool = True
    rename_to: str = "Dromedary"  # the assistant's name in kept answers
    blacklist: list[str] = field(default_factory=lambda: list(SELF_ALIGN_BLACKLIST))
    blacklist_prefixes: list[str] = field(default_factory=lambda: ["I'm sorry", "I am sorry"])
    min_chars_when_turn_ended: int = 160
    # Compat: the reference drops the last word of every answer that did not end its turn,
    # even when the model stopped on its own (only truncated answers need it).
    drop_final_word_always: bool = False


@dataclass
class EngraveConfig:
    """Stage 3: Principle Engraving (LoRA on the stage-2 answers, under a short prompt)."""

    # Inference prompts wrapping each pair, chosen by example index (reference step3: standard).
    meta_prompts: list[str] = field(default_factory=lambda: ["standard_distill"])
    include_identity_data: bool = True  # the paper adds 910 identity examples
    max_identity_examples: int | None = None
    max_examples: int | None = None
    train: LoraTrainConfig = field(default_factory=LoraTrainConfig)


@dataclass
class VerboseCloneConfig:
    """Stage 4: Verbose Cloning (the engraved model answers verbosely; a new LoRA learns it)."""

    prompt: str = "dromedary/prompts/verbose_dromedary_prompt.txt"
    include_identity_prompts: bool = True
    max_identity_prompts: int | None = None
    max_prompts: int | None = None
    max_new_tokens: int = 512
    temperature: float = 0.3
    top_p: float = 0.7
    # The reference's n-gram frequency penalties (verbose_response_generate_65b_dromedary_non_verbose.sh:
    # tri-token 1.0, quad-token 2.0; the paper does not mention them): a candidate's logit drops
    # by penalty x how often it already followed the last 2 (3) generated tokens. Only word-initial
    # pieces with an id above frequency_penalty_min_id are penalised (the reference's rule for
    # LLaMA, whose ids <= 1024 are bytes and the commonest words). Set both to 0.0 to turn off.
    tritoken_frequency_penalty: float = 1.0
    quadtoken_frequency_penalty: float = 2.0
    frequency_penalty_min_id: int = 1024
    stop_at_next_turn: bool = True
    min_chars: int = 128
    # answers to these (substring of the prompt) are replaced by a fixed answer (reference: Zhiqing)
    canned_answers: dict[str, str] = field(default_factory=lambda: {"Zhiqing": ZHIQING_ANSWER})
    bad_markers: list[str] = field(
        default_factory=lambda: ["## See also", "## External links", "Dromedary (extensive)", VERBOSE_INTRO]
    )
    drop_final_word_always: bool = False
    # reference step4 glob dromedary_*prompt_distill.txt: concise and standard, by example index
    meta_prompts: list[str] = field(default_factory=lambda: ["concise_distill", "standard_distill"])
    train: LoraTrainConfig = field(default_factory=lambda: LoraTrainConfig(max_length=768))


# The reference scripts' (max_seq_len, max_shared_seq_len) per generation step, for
# generation_budgets: reference (the *_65b_*.sh scripts of IBM/Dromedary 39a2b1c).
REFERENCE_SEQ_LENS = {
    "self_instruct": (1024, 512),  # vanilla_self_instruct_65b_base.sh (its generate_max_len: 1024)
    "tgrt_topics": (128, 256),  # tgrt_topic_generate_65b_base.sh
    "tgrt_questions": (512, 256),  # tgrt_question_generate_65b_base.sh
    "self_align": (256, 1792),  # self_align_generate_65b_base.sh
    "verbose_clone": (512, 640),  # verbose_response_generate_65b_dromedary_non_verbose.sh
}
GENERATION_BUDGETS = ("paper", "reference")


@dataclass
class PipelineConfig:
    seed: int = 42
    # "paper" (default): every request may generate its stage's max_new_tokens, the paper's flat
    # figures. "reference": the released generator's effective budgets, where max_seq_len also
    # counts the prompt's tokens after the shared prefix: min(max_new_tokens, max_seq_len - those
    # tokens) per request (REFERENCE_SEQ_LENS), e.g. stage 2 ~ 256 - (question + ~9) tokens.
    # For Self-Instruct also set stage1.self_instruct.max_new_tokens=1024 (the script's).
    generation_budgets: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    constitution: ConstitutionConfig = field(default_factory=ConstitutionConfig)
    stage1: SyntheticPromptsConfig = field(default_factory=SyntheticPromptsConfig)
    stage2: SelfAlignConfig = field(default_factory=SelfAlignConfig)
    stage3: EngraveConfig = field(default_factory=EngraveConfig)
    stage4: VerboseCloneConfig = field(default_factory=VerboseCloneConfig)
