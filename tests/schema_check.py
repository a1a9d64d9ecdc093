"""Check written outputs against the exported JSON Schemas (``selfalign ls schemas --output``), with
jsonschema, as a user's own tool would read them: independent of the pydantic models that wrote them."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema

from harness.common.records import json_schema


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_file(path: Path, name: str) -> int:
    """Validate every record of a JSONL file (or the one record of a .json file); returns the count."""
    text = Path(path).read_text(encoding="utf-8")
    records = [json.loads(text)] if Path(path).suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
    for i, record in enumerate(records):
        errors = sorted(_validator(name).iter_errors(record), key=str)
        assert not errors, f"{path} record {i}: {errors[0].message} at {list(errors[0].absolute_path)}"
    return len(records)
