"""selbench.testing, the test kit for plugin authors: every built-in selector passes it, a broken selection does not."""
from __future__ import annotations

import dataclasses
import textwrap

import pytest
import torch

import selbench
from selbench.testing import BUILTIN_SPACES, check_selection, run_selector, tiny_data, tiny_supernet

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("one_thread")

# options that keep each data-hungry built-in selector to one batch and no fine-tuning
CHEAP = {
    "perturbation": {"proj_intv": 0, "valid_batches": 1},
    "influential-magnitude": {"valid_batches": 1, "hessian": "hutchinson", "probes": 2},
    "cost-sign": {"batches": 1},
}


@pytest.mark.parametrize("space", BUILTIN_SPACES)
@pytest.mark.parametrize("name", selbench.list_selectors())
def test_every_installed_selector_passes_the_kit_in_every_builtin_space(name, space):
    run = run_selector(name, space=space, seed=1, **CHEAP.get(name, {}))
    assert run.selector == name and run.seed == 1 and run.genotype is not None
    if run.distribution == "selbench":  # the built-in selectors all report per-op scores
        assert set(run.scores) == set(selbench.get_space(space).cell_types)


# -- the tiny supernets and data ----------------------------------------------------------------------------------
@pytest.mark.parametrize("space, shapes", [("darts", {"normal": (5, 8), "reduce": (5, 8)}),
                                           ("nb201", {"cell": (6, 5)})])
def test_tiny_supernet_has_every_cell_type_and_classifies_tiny_data(space, shapes):
    supernet = tiny_supernet(space)
    assert {cell_type: tuple(alpha.shape) for cell_type, alpha in supernet.alphas.items()} == shapes
    images, labels = next(iter(tiny_data().batches("valid")))
    assert supernet(images).shape == (len(labels), 10)
    if space == "darts":  # the first cell is normal, the others reduce: both α tables are used
        supernet(images).sum().backward()
        assert all(alpha.grad is not None and alpha.grad.abs().sum() > 0 for alpha in supernet.alphas.values())


def test_tiny_supernet_is_drawn_from_its_seed_only():
    before = torch.random.get_rng_state()
    first, again, other = tiny_supernet(seed=0), tiny_supernet(seed=0), tiny_supernet(seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random stream is left alone
    same, different = again.state_dict(), other.state_dict()
    for key, value in first.state_dict().items():
        assert torch.equal(value, same[key]), key
    assert not torch.equal(first.alphas["normal"], other.alphas["normal"])
    assert not torch.equal(first.state_dict()["stem.0.weight"], different["stem.0.weight"])  # θ too
    # α is spread out (standard normal), not DARTS's 1e-3·randn start, so the ops' weights clearly differ
    assert first.alphas["normal"].std() > 0.5


def test_tiny_supernet_overrides_build_arguments():
    supernet = tiny_supernet("darts", steps=4, ops=["none", "skip_connect", "sep_conv_3x3"])
    assert supernet.space.steps == 4 and supernet.space.ops == ("none", "skip_connect", "sep_conv_3x3")
    assert tuple(supernet.alphas["reduce"].shape) == (14, 3)


def test_tiny_data_has_seeded_train_and_valid_splits():
    data = tiny_data(n=12, image_size=6, channels=3, classes=5, batch_size=8, seed=4)
    for split in ("train", "valid"):
        batches = list(data.batches(split))
        assert [tuple(images.shape) for images, _ in batches] == [(8, 3, 6, 6), (4, 3, 6, 6)]
        labels = torch.cat([labels for _, labels in batches])
        assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < 5
    again, other = tiny_data(n=12, image_size=6, channels=3, classes=5, seed=4), tiny_data(n=12, seed=5)
    assert torch.equal(data.splits["valid"][0], again.splits["valid"][0])
    assert not torch.equal(data.splits["train"][1], other.splits["train"][1])


# -- check_selection rejects what breaks the contract -----------------------------------------------------------------
@pytest.fixture(scope="module")
def good_run() -> selbench.SelectionRun:
    return run_selector("alpha-magnitude")


def with_selection(run: selbench.SelectionRun, **changes) -> selbench.SelectionRun:
    return dataclasses.replace(run, selection=dataclasses.replace(run.selection, **changes))


def test_a_valid_run_passes(good_run):
    check_selection(good_run, tiny_supernet().space)


@pytest.mark.parametrize("scores, message", [
    ({"normal": torch.zeros(14, 8), "reduce": torch.zeros(5, 8)},
     r"scores for the normal cell have shape \(14, 8\), expected \(5, 8\)"),
    ({"normal": torch.zeros(5, 8)}, r"scores for cell types \['normal'\], the darts space has \['normal', 'reduce'\]"),
    ({"normal": torch.zeros(5, 8), "reduce": torch.full((5, 8), float("nan"))},
     "scores for the reduce cell are not all finite"),
    ({"normal": torch.zeros(5, 8), "reduce": [[0.0] * 8] * 5}, "scores for the reduce cell are a list, not a Tensor"),
], ids=["shape", "cell-types", "nan", "not-a-tensor"])
def test_bad_scores_are_caught(good_run, scores, message):
    with pytest.raises(AssertionError, match=r"selection by 'alpha-magnitude' \(seed 0\): " + message):
        check_selection(with_selection(good_run, scores=scores), tiny_supernet().space)


def test_a_cell_of_another_space_is_caught(good_run):
    full_darts = selbench.get_space("darts")  # 4 intermediate nodes; the run's supernet has 2
    with pytest.raises(AssertionError, match="invalid cell: darts genotype, normal cell: 2 nodes, the space has 4"):
        check_selection(good_run, full_darts)
    with pytest.raises(AssertionError, match="invalid cell: genotype has cell types"):
        check_selection(good_run, "nb201")


def test_in_degree_is_checked_as_the_run_declares():
    space = tiny_supernet().space
    one_input_into_node_3 = {0: "skip_connect", 1: "sep_conv_3x3", 2: "max_pool_3x3"}
    genotype = space.genotype_from_choices({"normal": one_input_into_node_3, "reduce": one_input_into_node_3})
    run = selbench.SelectionRun(selbench.Selection(genotype=genotype), selector="probe")
    with pytest.raises(AssertionError, match="node 3: 1 inputs, a valid cell has exactly 2"):
        check_selection(run, space)
    check_selection(dataclasses.replace(run, variable_in_degree=True), space)


def test_failure_and_genotype_must_agree(good_run):
    space = tiny_supernet().space
    failed = with_selection(good_run, genotype=None, failure="no edge selected")
    with pytest.raises(AssertionError, match=r"failed: no edge selected \(pass allow_failure=True"):
        check_selection(failed, space)
    check_selection(failed, space, allow_failure=True)
    with pytest.raises(AssertionError, match="no genotype and no failure reason"):
        check_selection(with_selection(good_run, genotype=None), space, allow_failure=True)
    with pytest.raises(AssertionError, match="has a genotype and a failure reason"):
        check_selection(with_selection(good_run, failure="no edge selected"), space)


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_counters_must_be_non_negative_ints(good_run, value):
    with pytest.raises(AssertionError, match=f"counter 'hvps' is {value!r}, expected a non-negative int"):
        check_selection(dataclasses.replace(good_run, counters={"forward_passes": 2, "hvps": value}),
                        tiny_supernet().space)


def test_run_selector_checks_what_the_selector_returns():
    def wrong_scores(ctx):
        scores = {cell_type: torch.zeros(3, len(ctx.space.ops)) for cell_type in ctx.space.cell_types}
        return selbench.Selection(genotype=ctx.space.genotype_from_scores(ctx.mixing_weights()), scores=scores)

    with pytest.raises(AssertionError, match=r"selection by 'wrong-scores' \(seed 0\): scores for the cell cell"):
        run_selector(selbench.Selector(name="wrong-scores", run=wrong_scores), space="nb201")


@pytest.mark.parametrize("needs_data", [False, True])
def test_run_selector_gives_tiny_data_to_selectors_that_need_it(needs_data):
    seen = []

    def probe(ctx):
        seen.append(ctx.data)
        if needs_data:
            ctx.evaluate(limit=1)  # the tiny data fits the tiny supernet
        return ctx.space.genotype_from_scores(ctx.mixing_weights())

    run_selector(selbench.Selector(name="probe", run=probe, needs_data=needs_data), seed=2)
    assert (seen[0] is not None) == needs_data


# -- the fixtures, as a plugin's test suite gets them --------------------------------------------------------------
PLUGIN_TESTS = '''
import selbench
from selbench.testing import run_selector


def test_each_builtin_space(builtin_space):
    assert run_selector("alpha-magnitude", space=builtin_space).genotype is not None


def test_tiny_supernets_and_data(tiny_darts_supernet, tiny_nb201_supernet, tiny_search_data):
    images, labels = next(iter(tiny_search_data.batches("valid")))
    assert set(tiny_darts_supernet.alphas) == {"normal", "reduce"} and set(tiny_nb201_supernet.alphas) == {"cell"}
    for supernet in (tiny_darts_supernet, tiny_nb201_supernet):
        assert supernet(images).shape == (len(labels), 10)


class Probe:
    @staticmethod
    @selbench.hookimpl
    def selbench_register_selectors(register):
        register(selbench.Selector(name="kit-probe",
                                   run=lambda ctx: ctx.space.genotype_from_scores(ctx.mixing_weights())))


def test_a_plugin_module_loaded_for_one_test(selbench_plugins):
    host = selbench_plugins(("kit-probe", Probe))
    assert selbench.plugin_host() is host and "alpha-magnitude" in selbench.list_selectors()
    assert run_selector("kit-probe", space="nb201").selector == "kit-probe"


def test_is_gone_after_it():
    assert "kit-probe" not in selbench.list_selectors()
'''


def test_fixtures_through_pytest_plugins(pytester):
    pytester.makeconftest('pytest_plugins = ["selbench.testing"]')
    pytester.makepyfile(test_plugin=textwrap.dedent(PLUGIN_TESTS))
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*test_each_builtin_space[[]darts[]] PASSED*",
                                 "*test_each_builtin_space[[]nb201[]] PASSED*"])
