"""Subnet search: the parameterisation, budgets, caching, resume, and the `supersam search` command."""

import json
import random

import pytest
import torch

from supersam_min.build import build
from supersam_min.data import synthetic_blobs
from supersam_min.search import (
    Budget,
    Evaluator,
    evaluations_to_reach,
    search,
    search_parameters,
    to_subnet,
    to_values,
)
from supersam_min.supernet import SuperSAM


@pytest.fixture(scope="module")
def evaluator():
    torch.manual_seed(0)
    sup = SuperSAM(build("sam_tiny"), "sam_tiny")
    return Evaluator(sup, synthetic_blobs(2, seed=3), prompt="both")


def test_parameters_cover_the_space_and_round_trip(evaluator):
    space = evaluator.sup.space
    params = search_parameters(space)
    assert {k for k in params if k.startswith("keep_")} == {f"keep_{b}" for b in space.removable}
    rng = random.Random(0)
    for _ in range(50):
        cfg = to_subnet(space, {k: rng.choice(v) for k, v in params.items()})
        space.validate(cfg)
        assert to_subnet(space, to_values(space, cfg)) == cfg
    assert to_subnet(space, to_values(space, space.min_subnet())) == space.min_subnet()
    assert to_subnet(space, to_values(space, space.max_subnet())) == space.max_subnet()


@pytest.mark.parametrize("method", ["random", "opentuner"])
def test_search_respects_budget_and_evaluates_each_subnet_once(evaluator, method, tmp_path):
    budget = Budget("params", 0.8)
    result = search(evaluator, budget, method, evaluations=6, seed=1, out_dir=tmp_path)
    assert result.evaluations == 6
    evaluated = [t for t in result.trials if t["evaluation"] is not None]
    assert [t["evaluation"] for t in evaluated] == list(range(1, 7))
    assert len({json.dumps(t["subnet"]) for t in evaluated}) == 6  # no subnet twice
    for t in result.trials:
        assert t["feasible"] == (t["cost"] <= 0.8)
        assert ("score" in t) == t["feasible"]  # over budget: never evaluated
        assert t["parameters"] == evaluator.params(_cfg(t))
    assert evaluator.cost(result.best, budget) <= 0.8
    assert result.best_score == max(t["score"] for t in evaluated)
    assert result.convergence()[-1] == result.best_score
    assert evaluations_to_reach(result, result.best_score) <= 6
    saved = json.loads((tmp_path / "trials.json").read_text())
    assert saved["method"] == method and len(saved["trials"]) == len(result.trials)


def _cfg(trial):
    from supersam_min.supernet import SubnetConfig

    return SubnetConfig.from_dict(trial["subnet"])


def test_resumed_random_search_continues_exactly(evaluator, tmp_path):
    budget = Budget("params", 0.85)
    straight = search(evaluator, budget, "random", 5, seed=2, out_dir=tmp_path / "a")
    search(evaluator, budget, "random", 2, seed=2, out_dir=tmp_path / "b")
    resumed = search(evaluator, budget, "random", 5, seed=2, out_dir=tmp_path / "b", resume=True)
    assert [t["subnet"] for t in resumed.trials] == [t["subnet"] for t in straight.trials]
    assert resumed.best == straight.best and resumed.evaluations == 5


def test_resumed_opentuner_search_reuses_earlier_evaluations(evaluator, tmp_path):
    budget = Budget("params", 0.85)
    first = search(evaluator, budget, "opentuner", 3, seed=0, out_dir=tmp_path)
    resumed = search(evaluator, budget, "opentuner", 5, seed=0, out_dir=tmp_path, resume=True)
    assert resumed.evaluations == 5
    assert resumed.trials[: len(first.trials)] == first.trials
    assert resumed.best_score >= first.best_score
    with pytest.raises(ValueError, match="another budget"):
        search(evaluator, Budget("params", 0.9), "opentuner", 5, out_dir=tmp_path, resume=True)


def test_latency_budget_measures_extracted_subnets(evaluator):
    budget = Budget("latency", 1.0)
    space = evaluator.sup.space
    assert evaluator.cost(space.max_subnet(), budget) == 1.0
    result = search(evaluator, budget, "random", 2, seed=0, progress=False)
    assert all(t["latency_ms"] > 0 for t in result.trials)


def test_bad_budgets_and_methods_are_clear(evaluator):
    with pytest.raises(ValueError, match="must lie in"):
        Budget("params", 1.5)
    with pytest.raises(ValueError, match="unknown budget kind"):
        Budget("flops", 0.5)
    with pytest.raises(ValueError, match="no subnet fits the budget"):
        search(evaluator, Budget("params", 0.1), "random", 2)
    with pytest.raises(ValueError, match="unknown search method"):
        search(evaluator, Budget("params", 0.9), "grid", 2)
    with pytest.raises(FileNotFoundError, match="no trials.json"):
        search(evaluator, Budget("params", 0.9), "random", 2, out_dir="/nonexistent", resume=True)


def test_parallel_workers_score_the_same_subnets_the_same(evaluator):
    budget = Budget("params", 0.85)
    one = search(evaluator, budget, "random", 4, seed=3, progress=False)
    fresh = Evaluator(evaluator.sup, evaluator.samples, "both", workers=2)
    two = search(fresh, budget, "random", 4, seed=3, progress=False)
    scored = [
        [(json.dumps(t["subnet"]), t["score"]) for t in r.trials if t["evaluation"]]
        for r in (one, two)
    ]
    assert scored[0] == scored[1] and len(scored[0]) == 4
    with pytest.raises(ValueError, match="workers"):
        Evaluator(evaluator.sup, evaluator.samples, workers=0)


def test_search_comparison_needs_a_clear_difference():
    from supersam_min.analysis import compare_searches, curve_quantiles

    fast = {s: [0.5 + 0.01 * s] * 10 for s in range(8)}  # good subnets from the first evaluation
    slow = {s: [0.1] * 9 + [0.5] for s in range(8)}
    verdict = compare_searches({"a": fast, "b": slow}, "a", "b", 10)
    assert verdict["verdict"] == "a" and verdict["p_value"] < 0.05
    same = compare_searches({"a": fast, "b": fast}, "a", "b", 10)
    assert same["verdict"] == "no significant difference"
    q = curve_quantiles({0: [0.1, 0.2], 1: [0.3]}, 3)  # short curves keep their best
    assert q[2][1] == 0.25 and len(q) == 3
