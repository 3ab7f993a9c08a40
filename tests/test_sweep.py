"""Sweeps without hosts: the file model, the space, derived keys, key resolution with "did
you mean", trial identities, the pruning rules, the leaderboard's order, the packing choice."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from launcher.core import sweep as sw
from launcher.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["runner_config", "runner_config.epochs", "lr_schedule", "lr_schedule.learning_rate", "model",
        "model.model_config", "model.model_config.pet_config", "model.model_config.pet_config.lora_rank",
        "model.model_config.pet_config.lora_alpha", "model.model_config.seq_length", "seed"]


def parse(**top) -> sw.Sweep:
    data = {"name": "s", "base": "../tiny_lora_cpu.yaml", **top}
    text = yaml.safe_dump(data, sort_keys=False)
    return sw.parse_sweep(yaml.safe_load(text), "s.yaml", str(ROOT / "jobs" / "sweeps"), text)


def refused(message: str, **top) -> InputError:
    with pytest.raises(InputError, match=message) as info:
        parse(**top)
    return info.value


def test_grid_is_the_product_last_key_fastest_with_derived_keys():
    s = parse(space={"grid": {"lora_rank": [8, 16], "learning_rate": [0.1, 0.2]},
                     "derived": {"lora_alpha": "{lora_rank} * 2"}})
    assert [(p["lora_rank"], p["learning_rate"], p["lora_alpha"]) for p in sw.settings(s)] == [
        (8, 0.1, 16), (8, 0.2, 16), (16, 0.1, 32), (16, 0.2, 32)]


def test_list_keeps_the_settings_and_max_trials_cuts():
    s = parse(space={"list": [{"lora_rank": 8}, {"lora_rank": 4}, {"lora_rank": 2}]}, budget={"max_trials": 2})
    assert sw.settings(s) == [{"lora_rank": 8}, {"lora_rank": 4}]


def test_random_is_seeded_and_within_each_distribution():
    space = {"random": {"n": 20, "seed": 3, "params": {
        "learning_rate": {"loguniform": [1e-5, 1e-2]}, "lora_rank": {"choice": [8, 16]},
        "lora_alpha": {"int": [1, 4]}, "epochs": {"uniform": [0.5, 1.5]}}}}
    points = sw.settings(parse(space=space))
    assert points == sw.settings(parse(space=space)) and len(points) == 20
    assert all(1e-5 <= p["learning_rate"] <= 1e-2 and p["lora_rank"] in (8, 16) and p["lora_alpha"] in range(1, 5)
               and 0.5 <= p["epochs"] <= 1.5 and isinstance(p["lora_alpha"], int) for p in points)
    assert sw.settings(parse(space={"random": {**space["random"], "seed": 4}})) != points


@pytest.mark.parametrize("expr, value", [("{r} * 2", 16), ("{r} / 4", 2.0), ("max({r}, 12) - 1", 11),
                                         ("-{r} ** 2", -64), ("int({r} * 1.5)", 12), ("r // 3 % 2", 0)])
def test_safe_eval_does_arithmetic(expr, value):
    assert sw.safe_eval(expr, {"r": 8}) == value


@pytest.mark.parametrize("expr", ["__import__('os').system('true')", "r.real", "[r][0]", "'a' * 3", "open('x')",
                                  "2 ** 1000", "lambda: 1", "r if r else 1"])
def test_safe_eval_refuses_everything_but_arithmetic(expr):
    with pytest.raises(ValueError):
        sw.safe_eval(expr, {"r": 8})


def test_a_derived_key_naming_an_unswept_key_is_refused_with_its_line():
    e = refused("'lora_rnk' is not a swept key; did you mean 'lora_rank'",
                space={"grid": {"lora_rank": [8]}, "derived": {"lora_alpha": "{lora_rnk} * 2"}})
    assert e.message.startswith("s.yaml:") and "space.derived.lora_alpha" in e.message


@pytest.mark.parametrize("top, message", [
    ({"space": {"grid": {"a": [1]}}, "objectve": {}}, "did you mean 'objective'"),
    ({"space": {"grid": {"a": [1]}, "list": [{"a": 1}]}}, "exactly one of grid, list or random"),
    ({"space": {"grid": {"a": []}}}, "non-empty list"),
    ({"space": {"random": {"n": 2, "params": {"a": {"logunifrm": [1, 2]}}}}}, "did you mean 'loguniform'"),
    ({"space": {"random": {"n": 2, "params": {"a": {"loguniform": [0, 2]}}}}}, "above 0"),
    ({"space": {"random": {"n": 0, "params": {"a": {"choice": [1]}}}}}, "integer from 1"),
    ({"space": {"grid": {"a": [1]}}, "objective": {"metric": "final_los"}}, "did you mean 'final_loss'"),
    ({"space": {"grid": {"a": [1]}}, "objective": {"metric": "score-after.acuracy"}}, "did you mean 'accuracy'"),
    ({"space": {"grid": {"a": [1]}}, "objective": {"goal": "best"}}, "min or max"),
    ({"space": {"grid": {"a": [1]}}, "budget": {"max_parallel": 0}}, "positive integer"),
    ({"space": {"grid": {"a": [1]}}, "prune": {"median": {"k": 0.5}}}, "above 1"),
    ({"space": {"grid": {"a": [1]}}, "job": {"node": 1}}, "did you mean 'nodes'"),
])
def test_bad_sweep_files_are_refused_in_one_line(top, message):
    assert "\n" not in refused(message, **top).message


def test_pruning_is_off_unless_the_file_turns_it_on():
    assert not parse(space={"grid": {"a": [1]}}).prune.any
    rules = parse(space={"grid": {"a": [1]}}, prune={"nan": True, "median": {"k": 3, "min_steps": 5}}).prune
    assert (rules.nan, rules.median, rules.k, rules.min_steps) == (True, True, 3.0, 5)


def test_short_names_resolve_to_the_one_template_key_and_job_fields_stay_job_fields():
    s = parse(space={"grid": {"lora_rank": [8], "seed": [1], "lr_schedule.learning_rate": [0.1]}},
              set={"epochs": 1})
    assert sw.resolve_keys(s, KEYS, s.sets) == {"lora_rank": "model.model_config.pet_config.lora_rank",
                                                "seed": "seed", "lr_schedule.learning_rate": "lr_schedule.learning_rate",
                                                "epochs": "runner_config.epochs"}


def test_a_key_the_template_lacks_is_refused_with_did_you_mean_and_its_line():
    s = parse(space={"grid": {"lora_rnk": [8]}})
    with pytest.raises(InputError, match=r"s.yaml:\d+: space.grid.lora_rnk: .*did you mean 'lora_rank'"):
        sw.resolve_keys(s, KEYS)


def test_an_ambiguous_short_name_is_refused_naming_the_candidates():
    s = parse(space={"grid": {"epochs": [1]}})
    with pytest.raises(InputError, match="a.epochs, runner_config.epochs"):
        sw.resolve_keys(s, [*KEYS, "a", "a.epochs"])


def test_trial_identity_is_the_resolved_overrides_and_the_base():
    s = parse(space={"list": [{"lora_rank": 8}, {"lora_rank": 16}, {"lora_rank": 8}]}, seed=7)
    keymap = sw.resolve_keys(s, KEYS)
    one = sw.trials(s, keymap, "base-a")
    assert len(one) == 2 and one[0].overrides == {"model.model_config.pet_config.lora_rank": 8}
    assert [t.id for t in one] == [t.id for t in sw.trials(s, keymap, "base-a")] and one[0].seed == 7
    assert {t.id for t in sw.trials(s, keymap, "base-b")}.isdisjoint(t.id for t in one)


def test_the_seed_is_the_bases_unless_the_sweep_or_the_space_sets_it():
    s = parse(space={"grid": {"seed": [1, 2]}})
    assert [t.seed for t in sw.trials(s, {"seed": "seed"}, "b", base_seed=42)] == [1, 2]
    assert sw.trials(parse(space={"grid": {"lora_rank": [8]}}), {"lora_rank": "x"}, "b", base_seed=42)[0].seed == 42


def test_nan_and_inf_prune_only_when_on():
    on, off = sw.PruneRules(nan=True), sw.PruneRules()
    assert sw.prune_reason([(1, 2.0), (2, math.nan)], [], on) == "loss nan at step 2"
    assert sw.prune_reason([(1, math.inf)], [], on) == "loss inf at step 1"
    assert sw.prune_reason([(1, math.nan)], [], off) is None


def test_median_stopping_compares_with_the_others_at_the_same_step():
    rules = sw.PruneRules(median=True, k=2.0, min_steps=3, min_trials=2)
    others = [[(1, 1.0), (3, 1.0)], [(2, 2.0), (4, 5.0)], [(1, 9.0)]]  # the third has not reached step 3
    assert "above 2 x the median 1.5 of 2 others" in sw.prune_reason([(3, 3.1)], others, rules)
    assert sw.prune_reason([(3, 2.9)], others, rules) is None
    assert sw.prune_reason([(2, 9.0)], others, rules) is None  # before min_steps
    assert sw.prune_reason([(3, 9.0)], others[:1], rules) is None  # too few others


def test_the_leaderboard_puts_the_best_first_then_the_rest_in_trial_order():
    rows = [{"t": 1, "objective": 0.2}, {"t": 2, "objective": None}, {"t": 3, "objective": 0.9},
            {"t": 4, "objective": math.nan}]
    assert [r["t"] for r in sw.order(rows, "max")] == [3, 1, 2, 4]
    assert [r["t"] for r in sw.order(rows, "min")] == [1, 3, 2, 4]


def test_the_next_trial_goes_to_the_hosts_with_most_free_cards():
    assert sw.place({"a": 1, "b": 2}, 1, 1) == ("b",)
    assert sw.place({"a": 2, "b": 2}, 1, 1) == ("a",)
    assert sw.place({"a": 2, "b": 1, "c": 2}, 2, 2) == ("a", "c")
    assert sw.place({"a": 0, "b": 1}, 1, 2) is None and sw.place({"a": 2, "b": 1}, 2, 2) is None


def test_shipped_sweeps_parse():
    for path in sorted((ROOT / "jobs" / "sweeps").glob("*.yaml")):
        assert sw.settings(sw.load_sweep(path))


def test_the_dry_run_schedule_fills_the_cards_then_starts_a_new_wave():
    assert sw.waves({"a": 2, "b": 2}, [(1, 1)] * 5, 4) == [(1, ("a",)), (1, ("b",)), (1, ("a",)), (1, ("b",)),
                                                           (2, ("a",))]
    assert [w for w, _ in sw.waves({"a": 8}, [(1, 1)] * 5, 2)] == [1, 1, 2, 2, 3]
    assert sw.waves({"a": 8, "b": 8}, [(2, 8), (1, 4), (1, 4)], 4) == [(1, ("a", "b")), (2, ("a",)), (2, ("b",))]
