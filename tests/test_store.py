"""The run store: keys, atomic writes, reuse, corrupt records and artifacts, failed selections."""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from selbench import Selection, SelectionRun
from selbench.bench.store import (
    RECORD,
    RunStore,
    StoreError,
    canonical_json,
    config_key,
    file_sha256,
)
from selbench.core.files import atomic_write_bytes

CONFIG = {"recipe": {"epochs": 2, "lr": 0.025}, "seed": 0, "supernet": "ab12", "selector": "alpha-magnitude"}


class Recorder:
    """A store log plus a compute function that counts its calls."""

    def __init__(self):
        self.lines: list[str] = []
        self.calls = 0

    def log(self, line: str) -> None:
        self.lines.append(line)

    def compute(self, work):
        self.calls += 1
        work.save_torch("weights.pt", {"w": torch.arange(1000.0) + self.calls})
        work.save_json("genotype.json", {"calls": self.calls})
        return {"test_accuracy": 0.5, "calls": self.calls}


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def store(tmp_path, recorder):
    return RunStore(tmp_path / "runs", log=recorder.log)


def test_key_is_the_hash_of_the_canonical_config():
    reordered = {"selector": "alpha-magnitude", "supernet": "ab12", "seed": 0, "recipe": {"lr": 0.025, "epochs": 2}}
    assert canonical_json(CONFIG) == canonical_json(reordered)
    assert config_key(CONFIG) == config_key(reordered)
    expected = hashlib.sha256(
        b'{"recipe":{"epochs":2,"lr":0.025},"seed":0,"selector":"alpha-magnitude","supernet":"ab12"}').hexdigest()
    assert config_key(CONFIG) == expected
    assert config_key({**CONFIG, "seed": 1}) != config_key(CONFIG)
    with pytest.raises(StoreError, match="not plain JSON"):
        config_key({"path": object()})
    with pytest.raises(StoreError, match="not plain JSON"):
        config_key({"lr": float("nan")})


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    atomic_write_bytes(b"old", target)

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(b"new content", target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]  # no temp file left behind


def test_unit_is_computed_once_then_reused(store, recorder):
    first = store.run_unit("retrain", CONFIG, recorder.compute)
    second = store.run_unit("retrain", dict(reversed(list(CONFIG.items()))), recorder.compute)
    assert recorder.calls == 1
    assert second.result == first.result == {"test_accuracy": 0.5, "calls": 1}
    assert second.status == "complete" and second.key == config_key(CONFIG)
    assert recorder.lines[-1] == f"reused retrain {config_key(CONFIG)[:16]}"
    assert torch.equal(torch.load(second.artifact("weights.pt"))["w"], torch.arange(1000.0) + 1)
    record = json.loads((second.directory / RECORD).read_text())
    assert record["format"] == "selbench-unit" and record["version"] == 1 and record["config"] == CONFIG
    assert record["artifacts"]["weights.pt"]["sha256"] == file_sha256(second.directory / "weights.pt")
    assert second.directory == store.root / "retrain" / config_key(CONFIG)[:16]


def test_other_config_or_kind_is_another_unit(store, recorder):
    store.run_unit("retrain", CONFIG, recorder.compute)
    store.run_unit("retrain", {**CONFIG, "seed": 1}, recorder.compute)
    store.run_unit("selection", CONFIG, recorder.compute)
    assert recorder.calls == 3
    with pytest.raises(StoreError, match="unknown unit kind"):
        store.run_unit("train", CONFIG, recorder.compute)


def test_corrupt_record_is_reported_and_recomputed(store, recorder):
    unit = store.run_unit("supernet", CONFIG, recorder.compute)
    (unit.directory / RECORD).write_text('{"format": "selbench-unit", "vers')
    again = store.run_unit("supernet", CONFIG, recorder.compute)
    assert recorder.calls == 2 and again.result["calls"] == 2
    [corrupt] = [line for line in recorder.lines if line.startswith("corrupt")]
    assert corrupt.startswith(f"corrupt supernet {unit.short_key}: record.json does not parse (JSONDecodeError")
    assert corrupt.endswith("; recomputing")
    assert (unit.directory.parent / f"{unit.short_key}.corrupt" / RECORD).exists()  # kept aside for inspection


@pytest.mark.parametrize("tamper, reason", [
    (lambda r: {**r, "version": 99}, "format version 99"),
    (lambda r: {**r, "status": "running"}, "status 'running' is not finished"),
    (lambda r: {**r, "config": {**r["config"], "seed": 5}}, "key does not match its configuration"),
    (lambda r: {**r, "kind": "retrain"}, "'retrain' unit, found under supernet/"),
])
def test_tampered_record_is_reported_and_recomputed(store, recorder, tamper, reason):
    unit = store.run_unit("supernet", CONFIG, recorder.compute)
    record = json.loads((unit.directory / RECORD).read_text())
    (unit.directory / RECORD).write_text(json.dumps(tamper(record)))
    store.run_unit("supernet", CONFIG, recorder.compute)
    assert recorder.calls == 2
    assert any(line.startswith(f"corrupt supernet {unit.short_key}") and reason in line and "recomputing" in line
               for line in recorder.lines), recorder.lines


def test_truncated_artifact_is_reported_and_recomputed_never_used(store, recorder):
    unit = store.run_unit("retrain", CONFIG, recorder.compute)
    weights = unit.directory / "weights.pt"
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size // 2)
    assert store.lookup("retrain", CONFIG) is None
    assert any("artifact weights.pt" in line and f"({size // 2} bytes)" in line and "truncated or modified" in line
               and line.endswith("recomputing") for line in recorder.lines), recorder.lines
    again = store.run_unit("retrain", CONFIG, recorder.compute)
    assert recorder.calls == 2 and again.result["calls"] == 2
    assert torch.equal(torch.load(again.artifact("weights.pt"))["w"], torch.arange(1000.0) + 2)


def test_missing_artifact_is_reported(store, recorder):
    unit = store.run_unit("retrain", CONFIG, recorder.compute)
    (unit.directory / "genotype.json").unlink()
    store.run_unit("retrain", CONFIG, recorder.compute)
    assert recorder.calls == 2
    assert any("artifact genotype.json is missing" in line for line in recorder.lines)


def test_interrupted_unit_leaves_no_record_and_keeps_resume_state(store, recorder):
    def interrupted(work):
        (work.directory / "last_epoch.pt").write_bytes(b"epoch 3")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.run_unit("retrain", CONFIG, interrupted)
    assert store.lookup("retrain", CONFIG) is None
    assert not [line for line in recorder.lines if line.startswith("corrupt")]

    def resumed(work):
        return {"resumed_from": (work.directory / "last_epoch.pt").read_text()}

    assert store.run_unit("retrain", CONFIG, resumed).result == {"resumed_from": "epoch 3"}


def test_registered_but_unwritten_artifact_is_an_error(store):
    def forgetful(work):
        work.add_artifact("model.pt")
        return {}

    with pytest.raises(StoreError, match="registered but never written"):
        store.run_unit("retrain", CONFIG, forgetful)
    with pytest.raises(StoreError, match="plain file name"):
        store.run_unit("retrain", CONFIG, lambda work: work.save_json("../escape.json", {}))


def test_failed_selection_is_stored_reused_and_counted(store, recorder):
    def selection(failure):
        def compute(work):
            recorder.calls += 1
            return SelectionRun(Selection(genotype=None, failure=failure), selector="cost-sign").to_dict()
        return compute

    failed = store.run_unit("selection", {**CONFIG, "selector": "cost-sign"}, selection("no edge has a negative cost"))
    assert failed.status == "failed" and failed.failed
    assert failed.result["failure"] == "no edge has a negative cost"
    store.run_unit("selection", {**CONFIG, "selector": "cost-sign"}, selection("recomputed?"))
    assert recorder.calls == 1  # a failed selection is finished work: reused, not retried
    store.run_unit("selection", CONFIG, recorder.compute)
    statuses = sorted(unit.status for unit in store.units("selection"))
    assert statuses == ["complete", "failed"]


def test_units_skip_and_report_corrupt_ones(store, recorder):
    good = store.run_unit("retrain", CONFIG, recorder.compute)
    bad = store.run_unit("retrain", {**CONFIG, "seed": 1}, recorder.compute)
    (bad.directory / "weights.pt").write_bytes(b"garbage")
    (store.root / "retrain" / "unfinished").mkdir()
    assert [unit.key for unit in store.units("retrain")] == [good.key]
    assert any(line.startswith(f"corrupt retrain {bad.short_key}") and "skipped" in line for line in recorder.lines)
    assert list(store.units("supernet")) == []
