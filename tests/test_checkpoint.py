"""Supernet checkpoints: selbench's own format and the DARTS / DARTS-PT ``state_dict`` + ``alpha`` form."""
from __future__ import annotations

import pytest
import torch

import selbench
from darts_reference import DARTS_OPS, DARTS_PT_OPS
from selbench import CheckpointError


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
    with pytest.raises(CheckpointError, match=r"notes\.pt cannot be read"):
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
