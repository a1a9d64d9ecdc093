"""Re-parse a recorded FastChat GPT-4 review file: the check that our parser meets reality.

``review_<A>_<B>.jsonl`` holds, per question, GPT-4's raw text and the ``score`` pair FastChat
stored (A = answer1 = the baseline, B = answer2 = the judged model). ``reparse_reviews``
parses every text again and reports, per ``question_id``, our two scores next to the stored
ones, plus the win/tie/loss tallies (from B's side) and total-score ratio B/A, both from our
parse and from the stored scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.common.errors import UserError
from harness.common.jsonl import read_records
from harness.data import data_file, manifest
from harness.judge.aggregate import relative_score, tally
from harness.judge.parse import DEFAULT_PARSER, parse_scores


def resolve_review_file(spec: str, data_dir: str | Path | None = None) -> Path:
    """A path, or a data-relative name such as ``vicuna_bench/.../review_gpt35_vicuna-7b.jsonl``."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if spec in manifest():
        return data_file(spec, data_dir)
    raise UserError(f"review file {spec}: no such file; pass a review_<A>_<B>.jsonl path (see vicuna_bench/fastchat/eval/table/review/)")


def _names(path: Path) -> tuple[str | None, str | None]:
    stem = path.stem
    if stem.startswith("review_") and stem.count("_") >= 2:
        a, b = stem.removeprefix("review_").split("_", 1)
        return a, b
    return None, None


def reparse_reviews(path: str | Path, parser: str = DEFAULT_PARSER) -> dict[str, Any]:
    path = Path(path)
    records = read_records(path, strict=True)
    if not records or "text" not in records[0] or "score" not in records[0]:
        raise UserError(f"{path}: not a FastChat review file (records need 'text' and 'score')")
    per_question: dict[str, dict[str, Any]] = {}
    parsed_pairs, recorded_pairs, disagreements, failed = [], [], [], []
    for r in records:
        qid = int(r["question_id"])
        parsed = parse_scores(r["text"], parser)
        recorded = [float(s) for s in r["score"]]
        per_question[str(qid)] = {
            "scores": list(parsed.scores) if parsed.ok else None,
            "rule": parsed.rule,
            "error": parsed.error,
            "recorded": recorded,
        }
        recorded_pairs.append((recorded[1], recorded[0]))
        if not parsed.ok:
            failed.append(qid)
            continue
        parsed_pairs.append((parsed.scores[1], parsed.scores[0]))
        if list(parsed.scores) != recorded:
            disagreements.append(qid)
    answer1, answer2 = _names(path)
    return {
        "file": str(path),
        "answer1": answer1,  # Assistant 1 in every review: the baseline
        "answer2": answer2,  # Assistant 2: the model being compared; wins are its wins
        "parser": parser,
        "n_reviews": len(records),
        "n_failed": len(failed),
        "failed_question_ids": failed,
        **tally(parsed_pairs),
        "relative_score": relative_score(parsed_pairs),
        "recorded": {**tally(recorded_pairs), "relative_score": relative_score(recorded_pairs)},
        "n_disagreeing": len(disagreements),
        "disagreeing_question_ids": disagreements,
        "per_question": per_question,
    }
