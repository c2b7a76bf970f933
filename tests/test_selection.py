"""Model selection and early stopping (cerepro.training.selection), on hand-computed validation histories.

The table's rule (xpmir's AggregatorValidationListener of Feb 2026): the aggregate is the mean of
each set's best value so far, and a validation's model is kept when the aggregate rises; the
learner stops 10,000 steps (100 epochs of 100 steps) after the last rise.
"""

import pytest

from cerepro.training.selection import Selection

# Two validation sets, four validations 5,000 steps apart.
HISTORY = [
    (5000, {"a": 0.5, "b": 0.3}),
    (10000, {"a": 0.6, "b": 0.1}),
    (15000, {"a": 0.55, "b": 0.2}),
    (20000, {"a": 0.4, "b": 0.35}),
]


def run(selection):
    return [(step, selection.update(step, values), selection.value) for step, values in HISTORY]


def test_best_so_far_averages_each_sets_running_maximum():
    got = run(Selection("best-so-far"))
    # bests: (.5,.3) -> (.6,.3) -> (.6,.3) -> (.6,.35)
    assert [s for s, kept, _ in got if kept] == [5000, 10000, 20000]
    assert [v for *_, v in got] == pytest.approx([0.4, 0.45, 0.45, 0.475], rel=1e-12)


def test_current_values_select_differently_on_the_same_history():
    selection = Selection("current")
    got = run(selection)
    assert [s for s, kept, _ in got if kept] == [5000]  # means .4, .35, .375, .375
    assert selection.best_step == 5000 and selection.best_value == pytest.approx(0.4)
    assert selection.best_per_dataset == {"a": 0.5, "b": 0.3}


def test_a_tie_keeps_the_earlier_model():
    selection = Selection("best-so-far")
    assert selection.update(100, {"a": 0.5}) is True
    assert selection.update(200, {"a": 0.5}) is False
    assert selection.best_step == 100


def test_early_stopping_after_patience_without_a_rise():
    selection = Selection("best-so-far", patience_steps=10000)
    assert not selection.should_stop(4999)  # never before the first validation
    for step, values in HISTORY[:3]:
        selection.update(step, values)
    assert selection.best_step == 10000
    assert not selection.should_stop(19999)
    assert selection.should_stop(20000)  # before the validation of step 20,000 ...
    selection.update(*HISTORY[3])  # ... which raises the aggregate (set b's new best):
    assert not selection.should_stop(20000)  # the authors' learner checks after its listeners
    assert not selection.should_stop(29999) and selection.should_stop(30000)
    assert not Selection("best-so-far", patience_steps=0).should_stop(10**9)


def test_state_round_trips_through_a_checkpoint():
    selection = Selection("best-so-far", patience_steps=10000)
    for step, values in HISTORY[:2]:
        selection.update(step, values)
    again = Selection.from_state(selection.state())
    assert again.state() == selection.state()
    assert again.update(*HISTORY[2]) == selection.update(*HISTORY[2]) is False


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="aggregate must be one of"):
        Selection("max")
    with pytest.raises(ValueError, match="patience_steps must be >= 0"):
        Selection(patience_steps=-1)
    with pytest.raises(ValueError, match="step 5: a validation needs at least one set"):
        Selection().update(5, {})
    with pytest.raises(ValueError, match="step 5: validation set 'a' gave nan"):
        Selection().update(5, {"a": float("nan")})
