"""Text generation for the pipeline's generation stages: one interface, several backends.

``make_engine(backend, model, peft=None, dtype="float32", batch_size=8, **kwargs)`` builds one
(``transformers``: this machine; ``vllm``: GPU); stages call ``engine.generate(requests, params,
shared_prefix=...)`` with the types from ``pipeline.engine.base``.
"""

from pipeline.engine.base import Completion, GenerationEngine, GenerationRequest, SamplingParams
from pipeline.engine.registry import make_engine

__all__ = ["Completion", "GenerationEngine", "GenerationRequest", "SamplingParams", "make_engine"]
