"""lm-eval's model registry with our backends added, and the LM built from it.

What ``selfalign eval``, ``selfalign lm-eval``, the TruthfulQA judges and ``selfalign ls backends``
load a model through. It sits with the backends (not in ``harness.models``, which only resolves
names and paths) because registering ``selfalign-hf`` imports it.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.registry import MODEL_REGISTRY, get_model

from harness.common.errors import UserError
from harness.common.registry import unknown_name_error
from harness.models import format_model_args


def register_backends() -> None:
    """Import lm-eval's own backends, then ours (registration happens on import)."""
    # deferred: lm-eval's model zoo and our selfalign-hf (torch, transformers) take seconds to
    # import; only the commands that build or list models pay for them.
    import lm_eval.models  # noqa: F401  (fills lm-eval's registry before ours is added)

    import harness.backends.selfalign_hf  # noqa: F401  (deferred: as above)


def build_lm(backend: str, args: dict[str, Any], *, batch_size: int | str = 8, device: str = "cpu"):
    """The lm-eval LM of ``backend`` for resolved ``args`` (what ``selfalign eval`` and the
    TruthfulQA judges score with); a load failure is one line naming the backend and args."""
    register_backends()
    try:
        cls = get_model(backend)
    except (KeyError, ValueError):
        raise unknown_name_error("model backend", backend, list(MODEL_REGISTRY.keys())) from None
    extra = {"batch_size": batch_size, "device": device}
    try:
        return cls.create_from_arg_string(format_model_args(args), extra)
    except UserError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"--model {backend} --model_args {format_model_args(args)}: cannot load ({type(exc).__name__}: {exc})") from None


def backend_names() -> list[str]:
    """Every name ``--model`` takes: lm-eval's backends and ours."""
    register_backends()
    return sorted(MODEL_REGISTRY.keys())
