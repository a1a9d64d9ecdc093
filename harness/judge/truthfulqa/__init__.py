"""TruthfulQA generation judged as the paper does: a truth judge and an info judge, open models.

Run: ``selfalign judge truthfulqa --answers RUN_DIR --truth-judge SPEC --info-judge SPEC --output OUT``
(``run.run_truthfulqa_judge``); train judges: ``selfalign judge train-truthfulqa --kind truth|info
--base MODEL --output DIR [--config FILE]`` (``train.train_judge``). Modules: ``scoring`` (the
protocol: prompts, P(" yes") through lm-eval, judge specs), ``run``, ``train``.

Outputs under ``OUT/`` (schema_version 1):

``judgments.jsonl``: one record per answer, in question order:
    id, question_id     index of the question in TruthfulQA v0's CSV (0-816)
    question, answer    the texts the judges read (the answer as the task's ``clean`` filter left it)
    p_true, p_info      P(" yes") of the truth / info judge
    truthful, informative, truthful_informative   P > 0.5 verdicts (the last: both)
    truth_judge, info_judge   the judges' fingerprints (``summary.json`` ``judges`` describes them)

``summary.json``:
    n                   answers judged
    truthful, informative, truthful_informative   fractions of n
    <measure>_ci95      Wilson 95% interval [low, high] of each fraction
    judges              {truth|info: {kind, spec, backend, model_args, fingerprint}}; the
                        fingerprint hashes a local judge's weight files (or a remote one's args)
    n_scored            log-likelihood requests computed in this run (0 on a cached rerun)
    answers             {source: samples file, model_id}
    config, wall_time_s, provenance

``lm_cache/<fingerprint>.db``: lm-eval's response cache, one per judge.
"""
