"""`make demo` / `guardsmith demo`: everything that exists, end to end, on the bundled sample.

Steps: bundled sample -> interactions table in a local S3 (SeaweedFS on 127.0.0.1) -> tiny guard
model built locally and moved through S3 -> guard prompts answered by the model -> answers
parsed and scored (harmful F1) -> predictions and metrics tables in S3, mirrored to the output
folder. The tiny model has random weights, so its answers rarely parse; training it is the job
of the guard-training stages.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from guardsmith.errors import GuardsmithError


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run_demo(out: Path, n_rows: int = 48) -> dict:
    """Run the demo, write outputs under ``out`` and return the metrics it printed."""
    from guardsmith import storage, tables
    from guardsmith.standins.local_s3 import LocalS3, patched_env

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with LocalS3(bucket="guardsmith") as s3, patched_env(s3.env()):
        metrics = _pipeline(out, s3, n_rows, storage, tables)
    _say(f"finished in {time.monotonic() - start:.1f} s; outputs under {out}")
    return metrics


def _pipeline(out: Path, s3, n_rows: int, storage, tables) -> dict:
    from guardsmith.guard import parse_guard_output, render_guard_messages
    from guardsmith.inference import make_backend
    from guardsmith.metrics import harm_f1
    from guardsmith.standins.sample import load_sample
    from guardsmith.standins.tiny import build_tiny_causal_lm

    root = f"s3://{s3.bucket}/demo"
    _say(f"local S3 (SeaweedFS) at {s3.endpoint}, bucket {s3.bucket}")

    rows = load_sample()
    interactions = f"{root}/interactions"
    storage.write_table(interactions, tables.from_records(rows, "interactions"), schema_name="interactions")
    _say(f"bundled sample: {len(rows)} interactions -> {interactions}")

    model_dir = out / "models" / "tiny-guard"
    if not (model_dir / "config.json").exists():
        build_tiny_causal_lm(model_dir)
    model_uri = f"{root}/models/tiny-guard"
    storage.upload_dir(model_dir, model_uri)
    local_model = out / "models" / "tiny-guard-from-s3"
    storage.download_dir(model_uri, local_model)
    _say(f"tiny guard built at {model_dir}, uploaded to {model_uri}, downloaded to {local_model}")

    test_rows = [r for r in storage.read_table(interactions, schema_name="interactions").to_pylist()
                 if r["prompt_harm"] is not None][:n_rows]
    backend = make_backend(f"transformers:{local_model}")
    requests = [render_guard_messages(r, mode="NR") for r in test_rows]
    gens = backend.generate(requests, n=1, temperature=0.0, max_tokens=24, seed=0)
    preds = []
    for row, (gen,) in zip(test_rows, gens):
        ans = parse_guard_output(gen.text)
        preds.append({
            "model": "tiny-guard (untrained)", "benchmark": "bundled-sample", "task": "prompt_harm", "run": 0,
            "id": row["id"], "label": row["prompt_harm"], "prediction": ans.prompt_harm if ans.parse_ok else None,
            "parse_ok": ans.parse_ok, "latency_s": gen.latency_s,
        })
    result = harm_f1([p["label"] for p in preds], [p["prediction"] for p in preds], [p["parse_ok"] for p in preds])
    metrics = {
        "model": "tiny-guard (untrained)", "benchmark": "bundled-sample", "task": "prompt_harm", "k": 1,
        "f1_mean": result.f1, "f1_std": 0.0, "precision_mean": result.precision, "recall_mean": result.recall,
        "support": result.n, "parse_error_rate": result.parse_error_rate,
        "latency_s_mean": sum(p["latency_s"] for p in preds) / max(len(preds), 1),
    }
    pred_uri, metrics_uri = f"{root}/predictions", f"{root}/metrics"
    storage.write_table(pred_uri, tables.from_records(preds, "predictions"), schema_name="predictions")
    storage.write_table(metrics_uri, tables.from_records([metrics], "metrics"), schema_name="metrics")
    _say(f"{len(preds)} guard answers parsed and scored -> {pred_uri}, {metrics_uri}")

    # Mirror the S3 tables into the output folder (the local S3 server stops with the demo).
    for name, uri in (("interactions", interactions), ("predictions", pred_uri), ("metrics", metrics_uri)):
        storage.write_table(str(out / "tables" / name), storage.read_table(uri, schema_name=name), schema_name=name)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    example = gens[0][0].text if gens else ""
    _say(f"example raw answer: {example[:80]!r}")
    _say(f"prompt-harm F1 {result.f1:.3f}, parse-error rate {result.parse_error_rate:.2f} "
         "(random weights: train the guard to change this)")
    _say(f"tables: {out / 'tables'}; metrics: {out / 'metrics.json'}; models: {out / 'models'}")
    if not preds:
        raise GuardsmithError("the bundled sample has no labelled rows")
    return metrics
