"""List prices of hosted judge models, USD per 1,000 tokens (prompt, completion).

Data, not logic: OpenAI's published list prices (checked 2024-08; update when they change).
A model name matches its longest listed prefix (``gpt-4-0613`` -> ``gpt-4``); anything else,
including every local model, has no known price and its cost is recorded as null.
"""

from __future__ import annotations

PRICES_PER_1K: dict[str, tuple[float, float]] = {
    "gpt-4": (0.03, 0.06),  # the paper's judge (gpt-4-0314 / -0613)
    "gpt-4-32k": (0.06, 0.12),
    "gpt-4-turbo": (0.01, 0.03),
    "gpt-4-1106-preview": (0.01, 0.03),
    "gpt-4-0125-preview": (0.01, 0.03),
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-2024-05-13": (0.005, 0.015),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-3.5-turbo": (0.0005, 0.0015),
}


def price_per_1k(model: str) -> tuple[float, float] | None:
    matches = [name for name in PRICES_PER_1K if model == name or model.startswith(name + "-")]
    return PRICES_PER_1K[max(matches, key=len)] if matches else None


def cost_usd(model: str, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    price = price_per_1k(model)
    if price is None or prompt_tokens is None or completion_tokens is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1000.0
