"""A tiny pipeline run in a child process (scripted engine, tiny model), for tests that kill it or
vary its interpreter (``PYTHONHASHSEED``).

    python -m tests.fault_child OUT MODEL_DIR DATA_DIR STAGES [KEY=VALUE ...]

``SELFALIGN_TEST_ENGINE_DELAY_S`` slows every engine call, so a test can kill it mid-stage.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tests.pipeline_fakes import PipelineScript, ScriptedEngine
from tests.test_pipeline_runner import make_cfg

TRAIN = "train: {max_steps: 2, micro_batch_size: 2, effective_batch_size: 2, warmup_steps: 1, max_length: 640, lr: 0.01, gradient_checkpointing: false, checkpoint_every: 1}"
TINY_STAGES = ("stage2.max_prompts=6", f"stage3={{max_identity_examples: 2, {TRAIN}}}")


class SlowEngine(ScriptedEngine):
    def generate(self, requests, params, *, shared_prefix: str = ""):
        time.sleep(float(os.environ.get("SELFALIGN_TEST_ENGINE_DELAY_S", "0")))
        return super().generate(requests, params, shared_prefix=shared_prefix)


def main(argv: list[str]) -> int:
    from pipeline.runner import run

    out, model, data, stages, *overrides = argv
    cfg = make_cfg(Path(model), *TINY_STAGES, *overrides)
    run(cfg, out, stages, data_dir=data, engine_factory=lambda m, p: SlowEngine(PipelineScript()), eos_tokens=lambda m: ["</s>"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
