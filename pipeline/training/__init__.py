"""LoRA training for stages 3 and 4 (Principle Engraving, Verbose Cloning).

    from pipeline.training import LoraTrainConfig, train_lora
    result = train_lora(LoraTrainConfig(max_steps=2), [{"prompt": ..., "answer": ...}], base_dir, out_dir)

Multi-process: ``accelerate launch --config_file configs/accelerate/<cfg>.yaml -m pipeline.training ...``
(see ``pipeline/training/__main__.py``).
"""

from pipeline.training.config import LoraTrainConfig
from pipeline.training.data import TrainExample, load_examples_jsonl
from pipeline.training.model import merge_adapter
from pipeline.training.trainer import TRAINER_VERSION, TrainResult, train_lora

__all__ = [
    "TRAINER_VERSION", "LoraTrainConfig", "TrainExample", "TrainResult", "load_examples_jsonl", "merge_adapter", "train_lora",
]
