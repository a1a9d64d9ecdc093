"""Pieces shared by the selfalign lm-eval tasks: runtime options and a base for class-based tasks.

``selfalign eval`` passes runtime options to every task through lm-eval's task metadata
(``TaskManager(metadata=...)``); lm-eval hands the same dict to ``custom_dataset`` loaders
as keyword arguments. Keys:

- ``data_dir``: directory laid out like shared/data (None: $SELFALIGN_DATA_DIR or download)
- ``meta_prompt``: which Dromedary inference prompt wraps each question (see harness.prompts)
- ``tokenizer``: the evaluated model's tokenizer directory (HHH truncates by tokens, as the reference)
- ``reference_half_candidates``: TruthfulQA true/false scores only the reference's first half
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.metrics import mean
from lm_eval.api.task import ConfigurableTask

from harness.prompts import DEFAULT_EVAL_META_PROMPT, meta_prompt_text


class PaperProtocolTask(ConfigurableTask):
    """A loglikelihood task whose documents expand to several scored (context, target) pairs.

    Subclasses implement ``requests_for(doc) -> list[(context, target)]`` and
    ``metrics_for(doc, loglikelihoods) -> dict``; every metric is a per-document value averaged
    over documents. Declaring the metrics here (instead of a YAML ``metric_list``) keeps lm-eval
    from looking custom metric names up on the Hugging Face hub.
    """

    METRICS: tuple[str, ...] = ("acc",)

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        config = dict(config or {})
        config.pop("class", None)  # lm-eval's factory passes it through; TaskConfig rejects it
        super().__init__(config=config, **kwargs)
        meta = self.config.metadata or {}
        self.options: dict[str, Any] = dict(meta)
        self.meta_prompt_name: str = meta.get("meta_prompt") or DEFAULT_EVAL_META_PROMPT
        self.meta_prompt: str = meta_prompt_text(self.meta_prompt_name, meta.get("data_dir"))

    # -- subclass hooks -------------------------------------------------------------------
    def requests_for(self, doc: dict) -> list[tuple[str, str]]:
        raise NotImplementedError

    def metrics_for(self, doc: dict, loglikelihoods: list[float]) -> dict[str, float]:
        raise NotImplementedError

    # -- lm-eval interface ----------------------------------------------------------------
    def construct_requests(self, doc: dict, ctx: str, **kwargs: Any):
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        return [
            Instance(request_type="loglikelihood", doc=doc, arguments=pair, idx=i, **kwargs)
            for i, pair in enumerate(self.requests_for(doc))
        ]

    def process_results(self, doc: dict, results: list[tuple[float, bool]]) -> dict[str, float]:
        loglikelihoods = [float(ll) for ll, _ in results]
        return self.metrics_for(doc, loglikelihoods)

    def aggregation(self) -> dict:
        return {name: mean for name in self.METRICS}

    def higher_is_better(self) -> dict:
        return {name: True for name in self.METRICS}
