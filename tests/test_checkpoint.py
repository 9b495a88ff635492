"""Supernet checkpoints: selbench's own format and the DARTS / DARTS-PT ``state_dict`` + ``alpha`` form."""
from __future__ import annotations

import pytest
import torch

import selbench
from darts_reference import DARTS_OPS, DARTS_PT_OPS
from selbench import CheckpointError
from selbench.train.checkpoint import checkpoint_data, weights_state_dict
from selbench.train.darts_output import alphas_from_softmax, parse_printed_tables


def randomized_supernet(ops=DARTS_OPS, **kwargs):
    """A tiny supernet whose θ, BN statistics and α all differ from a fresh one."""
    args = {**dict(C=2, layers=3, num_classes=3, in_channels=1, ops=ops), **kwargs}
    supernet = selbench.get_space("darts").build_supernet(**args)
    with torch.no_grad():
        for tensor in supernet.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5)
    return supernet


def darts_pt_checkpoint(supernet, path, **overrides):
    """Write ``supernet`` the way the DARTS-PT code saves its search state."""
    state_dict = {k: v for k, v in supernet.state_dict().items() if not k.startswith("alphas.")}
    payload = {"epoch": 49, "state_dict": state_dict,
               "alpha": [supernet.alphas["normal"].detach().clone(), supernet.alphas["reduce"].detach().clone()],
               "optimizer": {"state": {}, "param_groups": [{"lr": 0.025}]},
               "arch_optimizer": {"state": {}, "param_groups": [{"lr": 3e-4}]},
               "scheduler": {"last_epoch": 49}}
    payload.update(overrides)
    torch.save(payload, path)
    return path


def assert_same_supernet(a, b):
    assert a.space_args == b.space_args
    assert list(a.space.ops) == list(b.space.ops)
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("ops", [DARTS_OPS, DARTS_PT_OPS], ids=["darts", "darts-pt"])
def test_save_and_load_round_trip(tmp_path, ops):
    supernet = randomized_supernet(ops)
    path = tmp_path / "runs" / "supernet.pt"
    selbench.save_supernet(supernet, path, epoch=7, recipe="demo", seed=3)
    loaded = selbench.load_supernet(path)
    assert_same_supernet(loaded, supernet)
    assert loaded.metadata == {"epoch": 7, "recipe": "demo", "seed": 3}
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), supernet.eval()(x), rtol=0, atol=0)
    assert not list(tmp_path.glob("runs/.*.tmp"))  # the atomic write left nothing behind


def test_saved_file_is_a_plain_torch_dict(tmp_path):
    supernet = randomized_supernet()
    path = tmp_path / "supernet.pt"
    selbench.save_supernet(supernet, path)
    data = torch.load(path, weights_only=True)
    assert data["format"] == "selbench-supernet" and data["space"] == "darts"
    assert not any(k.startswith("alphas.") for k in data["state_dict"])
    assert torch.equal(data["alphas"]["reduce"], supernet.alphas["reduce"].detach())


@pytest.mark.parametrize("ops", [DARTS_OPS, DARTS_PT_OPS], ids=["darts-8-ops", "darts-pt-7-ops"])
def test_darts_pt_checkpoint_loads_with_inferred_space(tmp_path, ops):
    supernet = randomized_supernet(ops, steps=4)
    path = darts_pt_checkpoint(supernet, tmp_path / "checkpoint.pt")
    loaded = selbench.load_supernet(path)
    assert list(loaded.space.ops) == ops  # 7 ops: DARTS-PT's space without `none`
    assert_same_supernet(loaded, supernet)
    assert loaded.metadata == {"source": "darts", "epoch": 49}


def test_darts_checkpoint_with_other_arguments_is_inferred(tmp_path):
    supernet = randomized_supernet(C=4, layers=5, num_classes=7, steps=3)
    loaded = selbench.load_supernet(darts_pt_checkpoint(supernet, tmp_path / "c.pt"))
    assert_same_supernet(loaded, supernet)


def test_space_arguments_given_explicitly_must_match(tmp_path):
    supernet = randomized_supernet()
    path = tmp_path / "supernet.pt"
    selbench.save_supernet(supernet, path)
    with pytest.raises(CheckpointError, match=r"does not match a darts supernet with C=4.*wrong shape"):
        selbench.load_supernet(path, C=4)


MISMATCHES = {
    "α with 5 ops": (dict(alpha=[torch.zeros(14, 5), torch.zeros(14, 5)]),
                     r"α of shape 14×5 fits no DARTS space \(expected 14×8 for DARTS or 14×7 for DARTS-PT\)"),
    "α of 8 ops for a 7-op state dict": (
        dict(alpha=[torch.zeros(14, 8), torch.zeros(14, 8)]),
        r"does not match a darts supernet .*\(missing: cells\.0\._ops\..*unexpected: "),
    "reduce α of another shape": (dict(alpha=[torch.zeros(14, 7), torch.zeros(9, 7)]),
                                  r"wrong shape: alpha\[reduce\]"),
    "one α only": (dict(alpha=[torch.zeros(14, 7)]), r"'alpha' must be a list of 2 tensors \(normal, reduce\)"),
    "flat α": (dict(alpha=[torch.zeros(98), torch.zeros(98)]),
               r"must be a 2-D tensor \[edges, ops\], got shape \(98,\)"),
    "state dict of another network": (dict(state_dict={"features.0.weight": torch.zeros(3)}),
                                      r"not a DARTS supernet state dict: it has no 'stem\.0\.weight'"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_checkpoint_of_another_shape_is_one_clear_error(tmp_path, case):
    overrides, message = MISMATCHES[case]
    path = darts_pt_checkpoint(randomized_supernet(DARTS_PT_OPS), tmp_path / "checkpoint.pt", **overrides)
    with pytest.raises(CheckpointError, match=message) as info:
        selbench.load_supernet(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_state_dict_from_another_C_is_refused(tmp_path):
    """θ of a C=4 supernet behind a selbench header that says C=2."""
    small, large = randomized_supernet(C=2), randomized_supernet(C=4)
    path = tmp_path / "supernet.pt"
    selbench.save_supernet(small, path)
    data = torch.load(path, weights_only=True)
    data["state_dict"] = {k: v for k, v in large.state_dict().items() if not k.startswith("alphas.")}
    torch.save(data, path)
    with pytest.raises(CheckpointError,
                       match=r"does not match a darts supernet with C=2.*wrong shape: stem\.0\.weight"):
        selbench.load_supernet(path)


def test_truncated_missing_and_foreign_files(tmp_path):
    supernet = randomized_supernet()
    path = tmp_path / "supernet.pt"
    selbench.save_supernet(supernet, path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt cannot be read \(truncated or not a torch checkpoint"):
        selbench.load_supernet(truncated)
    with pytest.raises(CheckpointError, match=r"absent\.pt: no such file"):
        selbench.load_supernet(tmp_path / "absent.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.pt is not a torch checkpoint \(it starts with b'not '\)"):
        selbench.load_supernet(text)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    with pytest.raises(CheckpointError, match=r"list\.pt holds a list, not a checkpoint dict"):
        selbench.load_supernet(listing)
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    with pytest.raises(CheckpointError, match=r"neither a selbench supernet nor a DARTS/DARTS-PT checkpoint"):
        selbench.load_supernet(other)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "supernet.pt"
    selbench.save_supernet(randomized_supernet(), path)
    data = torch.load(path, weights_only=True)
    data["version"] = 99
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"format version 99.*upgrade selbench"):
        selbench.load_supernet(path)


# -- the reference's key set ---------------------------------------------------------------------------

@pytest.mark.parametrize("ops", [DARTS_OPS, DARTS_PT_OPS], ids=["darts-8-ops", "darts-pt-7-ops"])
def test_paper_supernet_has_the_reference_state_dict(ops):
    """quark0/darts and DARTS-PT at C=16, 8 cells: 4,186 θ keys (929 BN batch counters), 1,930,618 θ parameters."""
    supernet = selbench.get_space("darts").build_supernet(C=16, layers=8, ops=ops)
    keys = weights_state_dict(supernet)
    assert len(keys) == 4186
    assert sum(k.endswith(".num_batches_tracked") for k in keys) == 929
    assert sum(p.numel() for p in supernet.weight_parameters()) == 1930618
    assert {k.split(".")[0] for k in keys} == {"stem", "cells", "classifier"}


# -- the original DARTS output: weights.pt + softmax(α) printed to stdout ---------------------------------

def printed_old(probabilities: torch.Tensor) -> list[str]:
    """``print(F.softmax(alpha))`` under PyTorch 0.3: fixed point, or scientific in blocks of 6 columns."""
    rows, cols = probabilities.shape
    lines = ["Variable containing:"]
    if probabilities.min() >= 1e-5:
        lines += [" " + " ".join(f"{v:7.4f}" for v in row) for row in probabilities.tolist()]
    else:
        for start in range(0, cols, 6):
            stop = min(start + 6, cols)
            lines += ["", f"Columns {start} to {stop - 1} "]
            lines += [" ".join(f"{v:11.4e}" for v in row[start:stop]) for row in probabilities.tolist()]
    return lines + [f"[torch.cuda.FloatTensor of size {rows}x{cols} (GPU 0)]", ""]


def printed_new(probabilities: torch.Tensor) -> list[str]:
    """``print(F.softmax(alpha, dim=-1))`` under PyTorch >= 0.4; scientific rows wrap after 6 values."""
    form = "{:.4e}" if probabilities.max() / probabilities.min() > 1000 else "{:.4f}"
    per_line = 6 if "e" in form else probabilities.shape[1]
    rows = []
    for row in probabilities.tolist():
        values = [form.format(v) for v in row]
        rows.append((",\n" + " " * 9).join(", ".join(values[k:k + per_line]) for k in range(0, len(values), per_line)))
    text = "tensor([[" + "],\n        [".join(rows) + "]], device='cuda:0', grad_fn=<SoftmaxBackward0>)"
    return text.splitlines()


def darts_stdout(epochs: list[tuple[torch.Tensor, torch.Tensor]], forms: list) -> str:
    """What train_search.py writes to stdout: per epoch the logged lines, then the two softmax tables."""
    lines = ["12/02 09:30:00 AM gpu device = 0", "12/02 09:30:01 AM param size = 1.930618MB"]
    for epoch, ((normal, reduce), form) in enumerate(zip(epochs, forms)):
        lines += [f"12/02 09:3{epoch}:02 AM epoch {epoch} lr 2.500000e-02",
                  "12/02 09:30:02 AM genotype = Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1)], "
                  "normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0)], reduce_concat=range(2, 6))"]
        lines += form(torch.softmax(normal, dim=-1)) + form(torch.softmax(reduce, dim=-1))
        lines += [f"12/02 09:3{epoch}:09 AM train 000 2.302585e+00 9.375000 18.750000",
                  f"12/02 09:3{epoch}:59 AM train_acc 41.250000", f"12/02 09:3{epoch}:59 AM valid_acc 40.125000"]
    return "\n".join(lines) + "\n"


def darts_alphas(seed: int, ops=DARTS_OPS) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    normal, reduce = (torch.randn(14, len(ops), generator=g) for _ in range(2))
    reduce[3, 2] = -20.0  # a probability below 1e-5: the old print turns scientific, in column blocks
    return normal, reduce


@pytest.mark.parametrize("form", [printed_old, printed_new], ids=["pytorch-0.3", "pytorch-later"])
def test_printed_tables_parse_back_to_the_softmax(form):
    normal, reduce = darts_alphas(0)
    tables = parse_printed_tables(darts_stdout([(normal, reduce)], [form]))
    assert len(tables) == 2
    for table, alpha in zip(tables, (normal, reduce)):
        torch.testing.assert_close(table, torch.softmax(alpha, dim=-1).double(), rtol=1e-3, atol=5e-5)
        recovered = alphas_from_softmax(table)
        torch.testing.assert_close(torch.softmax(recovered, dim=-1), torch.softmax(alpha, dim=-1),
                                   rtol=1e-3, atol=1e-4)


def write_darts_run(tmp_path, *, old_pytorch: bool):
    """A quark0/darts search output: weights.pt (a bare state dict) and the captured stdout with the
    softmax(α) of two epochs, one printed in each form; the last α printed is ``final``."""
    supernet = randomized_supernet(steps=4)
    first, final = darts_alphas(1), darts_alphas(2)
    with torch.no_grad():
        for cell_type, alpha in zip(("normal", "reduce"), final):
            supernet.alphas[cell_type].copy_(alpha)
    state = {k: v.clone() for k, v in weights_state_dict(supernet).items()
             if not (old_pytorch and k.endswith("num_batches_tracked"))}
    torch.save(state, tmp_path / "weights.pt")
    stdout = tmp_path / "search.out"
    stdout.write_text(darts_stdout([first, final], [printed_old, printed_new]))
    return supernet, tmp_path / "weights.pt", stdout


@pytest.mark.parametrize("old_pytorch", [False, True], ids=["state-dict", "no-num_batches_tracked"])
def test_darts_weights_and_printed_alphas_select_like_the_selbench_checkpoint(tmp_path, old_pytorch):
    supernet, weights, stdout = write_darts_run(tmp_path, old_pytorch=old_pytorch)
    assert len(torch.load(weights, weights_only=True)) == len(weights_state_dict(supernet)) - (
        sum(k.endswith("num_batches_tracked") for k in weights_state_dict(supernet)) if old_pytorch else 0)
    with pytest.warns(selbench.DartsOutputWarning, match="one epoch older than the weights"):
        loaded = selbench.load_supernet(weights, alphas=stdout)
    selbench.save_supernet(supernet, tmp_path / "supernet.pt")
    own = selbench.load_supernet(tmp_path / "supernet.pt")
    assert loaded.metadata["source"] == "darts" and list(loaded.space.ops) == DARTS_OPS
    for cell_type in ("normal", "reduce"):
        torch.testing.assert_close(torch.softmax(loaded.alphas[cell_type], -1),
                                   torch.softmax(own.alphas[cell_type], -1), rtol=1e-3, atol=1e-4)
    theta = loaded.state_dict()
    for name, tensor in own.state_dict().items():
        if not name.startswith("alphas.") and not (old_pytorch and name.endswith("num_batches_tracked")):
            assert torch.equal(theta[name], tensor), name
    assert (selbench.select(loaded, "alpha-magnitude").genotype
            == selbench.select(own, "alpha-magnitude").genotype)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.eval()(x), own.eval()(x), rtol=1e-3, atol=1e-3)  # α rounded to 4 digits


def test_bare_darts_weights_without_alphas_say_what_is_missing(tmp_path):
    _, weights, stdout = write_darts_run(tmp_path, old_pytorch=False)
    with pytest.raises(CheckpointError, match=r"bare DARTS state dict \(weights\.pt\).*no α.*--alphas FILE") as info:
        selbench.load_supernet(weights)
    assert "\n" not in str(info.value)
    log_txt = tmp_path / "log.txt"  # the logged lines only: no tables
    log_txt.write_text("\n".join(line for line in stdout.read_text().splitlines() if " AM " in line))
    with pytest.raises(CheckpointError, match=r"found 0 softmax\(α\) table\(s\).*not log\.txt"):
        selbench.load_supernet(weights, alphas=log_txt)


def test_darts_pt_projection_checkpoints_are_refused_with_what_they_are(tmp_path):
    path = darts_pt_checkpoint(randomized_supernet(DARTS_PT_OPS), tmp_path / "checkpoint_5.pth.tar", epoch=5,
                               proj_weights={"normal": torch.zeros(14, 7)}, candidate_flags={"normal": torch.ones(14)},
                               nid2selected_eids={"normal": {}})
    with pytest.raises(CheckpointError, match=r"DARTS-PT projection checkpoint .*epoch 5.*candidate_flags.*"
                                              r"does not resume"):
        selbench.load_supernet(path)


def test_darts_checkpoints_get_the_ordered_split():
    data = checkpoint_data({"source": "darts"}, recipe=selbench.load_recipe("demo"))
    count = len(selbench.get_dataset("digits").load(None).train_labels)
    assert torch.equal(data._indices["train"], torch.arange(count // 2))
    assert torch.equal(data._indices["valid"], torch.arange(count // 2, count))
