"""precision = fp32 | bf16: autocast forward passes, fp32 weights, recipe keys, device checks, records, leaderboard."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import selbench
from conftest import tiny_data, tiny_supernet
from selbench import OptionError, SelbenchError, SelectionRun
from selbench.bench.grid import Grid
from selbench.bench.leaderboard import build_rows, text_table
from selbench.bench.records import RetrainRecord, SelectionRecord
from selbench.cli import main
from selbench.core.genotype import Genotype
from selbench.core.precision import for_loss
from selbench.recipes.recipe import Recipe
from selbench.retrain.training import retrain
from selbench.select.contract import Selection
from selbench.train.driver import train_supernet
from selbench.train.loop import evaluate_supernet, search_epoch

pytestmark = pytest.mark.usefixtures("one_thread")

MICRO = {
    "name": "micro",
    "supernet": {"space": "darts", "C": 2, "layers": 3, "steps": 2},
    "data": {"dataset": "digits", "subset": 32, "batch_size": 8, "crop_padding": 1, "flip": False, "cutout": 0},
    "search": {"mode": "bilevel-1st", "epochs": 1, "lr": 0.05, "arch_lr": 0.01},
    "retrain": {"C": 4, "layers": 2, "auxiliary": False, "drop_path_prob": 0.0, "cutout": 0, "epochs": 1,
                "batch_size": 8},
}
CELL = Genotype.parse("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('max_pool_3x3', 0), "
                      "('sep_conv_3x3', 2)], normal_concat=[2, 3], reduce=[('max_pool_3x3', 0), "
                      "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0)], reduce_concat=[2, 3])")


def micro(search: str = "fp32", retrain_precision: str = "fp32") -> Recipe:
    return Recipe.from_dict({**MICRO, "search": {**MICRO["search"], "precision": search},
                             "retrain": {**MICRO["retrain"], "precision": retrain_precision}})


@pytest.fixture
def conv_output_dtypes():
    """The dtypes every Conv2d in any module produced while the test ran."""
    seen: set[torch.dtype] = set()

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield seen
    handle.remove()


@pytest.fixture
def cuda_without_bf16(monkeypatch):
    """A CUDA device older than Ampere: present, but without bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)


def assert_all_fp32(tensors):
    assert all(t.dtype == torch.float32 for t in tensors)


# -- the recipe keys ---------------------------------------------------------------------------------
def test_precision_at_its_default_leaves_the_sections_and_the_config_hash_unchanged():
    plain = Recipe.from_dict(MICRO)
    assert "precision" not in plain.search and "precision" not in plain.retrain
    assert micro().to_dict() == plain.to_dict() and micro().config_hash() == plain.config_hash()
    assert (plain.precision("search"), plain.precision("retrain")) == ("fp32", "fp32")
    assert plain.retrain_training()["precision"] == "fp32"
    bf16 = micro("bf16", "bf16")
    assert (bf16.precision("search"), bf16.precision("retrain")) == ("bf16", "bf16")
    assert bf16.config_hash("search") != plain.config_hash("search")
    assert bf16.config_hash("retrain") != plain.config_hash("retrain")
    assert micro("bf16").config_hash("retrain") == plain.config_hash("retrain")


@pytest.mark.parametrize("section", ["search", "retrain"])
def test_an_unknown_precision_is_one_clear_error(section):
    with pytest.raises(SelbenchError, match=rf"{section}\.precision 'fp16' is not one of fp32, bf16"):
        micro(**{"search" if section == "search" else "retrain_precision": "fp16"})
    with pytest.raises(SelbenchError, match="is not one of fp32, bf16"):
        selbench.load_recipe("demo", [f"{section}.precision=half"])
    with pytest.raises(SelbenchError, match="precision = 'fp16' is not one of"):
        selbench.check_precision("fp16", "cpu")


def test_bf16_on_a_device_without_it_is_refused_before_any_work(cuda_without_bf16, tmp_path):
    selbench.check_precision("fp32", "cuda")
    with pytest.raises(SelbenchError, match="cannot compute in bf16"):
        selbench.check_precision("bf16", "cuda")
    with pytest.raises(SelbenchError, match=r"recipe 'micro': retrain\.precision = bf16: device cuda"):
        micro(retrain_precision="bf16").check_precisions("cuda")
    with pytest.raises(SelbenchError, match=r"search\.precision = bf16"):
        train_supernet(micro("bf16"), seed=0, device="cuda", out_dir=tmp_path / "train", progress=False)
    with pytest.raises(SelbenchError, match=r"retrain\.precision = bf16"):
        retrain(CELL, micro(retrain_precision="bf16"), seed=0, device="cuda", out_dir=tmp_path / "retrain")
    assert not (tmp_path / "train").exists() and not (tmp_path / "retrain").exists()


def test_the_grid_checks_the_recipes_and_the_selectors_precision_before_any_unit(cuda_without_bf16):
    Grid((micro(),), ("perturbation",), (0,), (0,), device="cuda").check()
    with pytest.raises(SelbenchError, match=r"search\.precision = bf16: device cuda"):
        Grid((micro("bf16"),), ("alpha-magnitude",), (0,), (0,), device="cuda").check()
    with pytest.raises(SelbenchError, match="selector 'perturbation' option precision = bf16: device cuda"):
        Grid((micro(),), ("perturbation",), (0,), (0,), {"perturbation": {"precision": "bf16"}}, device="cuda").check()


def test_the_train_command_says_so_in_one_line(cuda_without_bf16, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("selbench.cli.train.check_device", torch.device)  # this machine may have no CUDA at all
    code = main(["train", "demo", "--set", "search.precision=bf16", "--device", "cuda", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "search.precision = bf16: device cuda cannot compute in bf16" in err


# -- the training loop ----------------------------------------------------------------------------------
def optimizers(supernet):
    return (torch.optim.SGD(supernet.weight_parameters(), lr=0.1, momentum=0.9),
            torch.optim.Adam(supernet.arch_parameters(), lr=0.01))


def test_fp32_is_the_plain_step_bit_for_bit():
    data = tiny_data()
    supernet, reference = tiny_supernet(), tiny_supernet()
    w_optimizer = torch.optim.SGD(supernet.weight_parameters(), lr=0.1)
    search_epoch(supernet, data.batches("train"), None, w_optimizer=w_optimizer, mode="frozen-alpha",
                 precision="fp32")
    by_hand = torch.optim.SGD(reference.weight_parameters(), lr=0.1)
    reference.train()
    for images, labels in data.batches("train"):
        by_hand.zero_grad(set_to_none=True)
        F.cross_entropy(reference(images), labels).backward()
        nn.utils.clip_grad_norm_(list(reference.weight_parameters()), 5.0)
        by_hand.step()
    assert all(torch.equal(a, b) for a, b in zip(supernet.parameters(), reference.parameters()))


def test_a_bf16_search_step_autocasts_the_forward_and_keeps_fp32_masters(conv_output_dtypes):
    data = tiny_data()
    supernet = tiny_supernet()
    alphas = [a.detach().clone() for a in supernet.arch_parameters()]
    w_optimizer, a_optimizer = optimizers(supernet)
    metrics = search_epoch(supernet, data.batches("train"), lambda: data.batches("valid"), w_optimizer=w_optimizer,
                           a_optimizer=a_optimizer, mode="bilevel-1st", precision="bf16")
    assert conv_output_dtypes == {torch.bfloat16}
    assert metrics["loss"].dtype == torch.float32 and torch.isfinite(metrics["loss"])
    assert_all_fp32(supernet.parameters())
    assert_all_fp32(p.grad for p in supernet.parameters() if p.grad is not None)
    assert_all_fp32(v for optimizer in (w_optimizer, a_optimizer) for state in optimizer.state.values()
                    for v in state.values() if torch.is_tensor(v) and v.is_floating_point())
    assert any(not torch.equal(a, b) for a, b in zip(supernet.arch_parameters(), alphas))  # α learnt


def test_a_loss_widens_bf16_logits_only():
    assert for_loss(torch.zeros(2, dtype=torch.bfloat16)).dtype == torch.float32
    logits = torch.zeros(2, dtype=torch.float64)
    assert for_loss(logits) is logits  # a float64 model's loss stays float64


def test_a_bf16_evaluation_is_close_to_fp32(conv_output_dtypes):
    data, supernet = tiny_data(), tiny_supernet()
    exact = evaluate_supernet(supernet, data.batches("valid"))
    assert conv_output_dtypes == {torch.float32}
    rounded = evaluate_supernet(supernet, data.batches("valid"), precision="bf16")
    assert torch.bfloat16 in conv_output_dtypes and rounded["loss"].dtype == torch.float32
    assert rounded["loss"].item() == pytest.approx(exact["loss"].item(), rel=0.05)


# -- training, retraining and their records ------------------------------------------------------------
def test_a_bf16_supernet_run_records_its_precision_and_saves_fp32_weights(tmp_path, conv_output_dtypes):
    path = train_supernet(micro("bf16"), seed=0, device="cpu", out_dir=tmp_path / "bf16", progress=False)
    assert conv_output_dtypes == {torch.bfloat16}
    assert json.loads((tmp_path / "bf16" / "supernet.json").read_text())["precision"] == "bf16"
    checkpoint = selbench.read_checkpoint(path)
    assert_all_fp32(t for t in [*checkpoint["state_dict"].values(), *checkpoint["alphas"].values()]
                    if t.is_floating_point())
    with pytest.raises(SelbenchError, match="another configuration"):  # an fp32 run never reuses a bf16 one
        train_supernet(micro(), seed=0, device="cpu", out_dir=tmp_path / "bf16", progress=False)


def test_a_bf16_retrain_scores_in_bf16_and_says_so(tmp_path, conv_output_dtypes):
    score = retrain(CELL, micro(retrain_precision="bf16"), seed=0, device="cpu", out_dir=tmp_path)
    assert torch.bfloat16 in conv_output_dtypes  # (and fp32: counting the multiply-adds takes an fp32 forward)
    assert score["precision"] == "bf16" and 0 <= score["test_accuracy"] <= 1
    assert_all_fp32(v for v in torch.load(tmp_path / "network.pt").values() if v.is_floating_point())


def test_records_carry_the_precision_and_older_records_read_as_fp32():
    selection = SelectionRun(Selection(genotype=CELL), selector="perturbation", options={"precision": "bf16"})
    record = SelectionRecord("demo", "sup0", 0, selection, supernet_precision="bf16")
    assert SelectionRecord.from_result(json.loads(json.dumps(record.to_result()))).to_result() == record.to_result()
    older = {k: v for k, v in record.to_result().items() if k != "supernet_precision"}
    assert SelectionRecord.from_result(older).supernet_precision == "fp32"
    retrained = RetrainRecord.from_score(record, selection_key="sel0", retrain_seed=0, scorer="retrain",
                                         score={"test_accuracy": 0.9, "precision": "bf16"})
    assert retrained.precision == "bf16" and "precision" not in retrained.extra
    assert RetrainRecord.from_result(json.loads(json.dumps(retrained.to_result()))) == retrained
    older = {k: v for k, v in retrained.to_result().items() if k != "precision"}
    assert RetrainRecord.from_result(older).precision == "fp32"


def leaderboard_records(supernet: str, select: str, retrain_precisions: list[str]):
    options = {"precision": select} if select else {}
    selection = SelectionRecord("demo", "sup0", 0, SelectionRun(Selection(genotype=CELL), selector="perturbation",
                                                                 options=options), supernet_precision=supernet)
    retrains = [RetrainRecord.from_score(selection, selection_key="sel0", retrain_seed=seed, scorer="retrain",
                                         score={"test_accuracy": 0.9, "precision": precision})
                for seed, precision in enumerate(retrain_precisions)]
    return [selection], retrains


def test_the_leaderboard_shows_precision_only_when_not_all_fp32():
    rows = build_rows(*leaderboard_records("fp32", "", ["fp32"]))
    assert rows[0].precision == "fp32" and "precision" not in text_table(rows)[0]
    rows = build_rows(*leaderboard_records("bf16", "fp32", ["bf16", "fp32"]))
    assert rows[0].precision == "search bf16, retrain bf16/fp32"
    headers, table = text_table(rows)
    assert headers[-1] == "precision" and table[0][-1] == "search bf16, retrain bf16/fp32"


# -- the selector option ----------------------------------------------------------------------------------
def test_perturbation_measures_and_finetunes_in_bf16(conv_output_dtypes):
    run = selbench.select(tiny_supernet(), "perturbation", data=tiny_data(), proj_intv=1, valid_batches=1,
                          precision="bf16")
    assert run.options["precision"] == "bf16" and run.genotype is not None
    assert conv_output_dtypes == {torch.bfloat16}


def test_perturbation_refuses_an_unknown_precision_and_a_device_without_bf16():
    with pytest.raises(OptionError, match="'fp16' is not one of fp32, bf16"):
        selbench.select(tiny_supernet(), "perturbation", data=tiny_data(), precision="fp16")
    with pytest.raises(SelbenchError, match="perturbation option precision = bf16: device meta cannot"):
        selbench.select(tiny_supernet(), "perturbation", data=tiny_data(), device="meta", precision="bf16")
