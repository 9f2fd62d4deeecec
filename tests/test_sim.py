"""The simulator over the real policy: deterministic, loses no task under our
policy, beats the system we replace where the issue says it must, and keeps
launches within the bound docs/breaker.md states under a permanent outage."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpu_orchestrator.cli import app
from gpu_orchestrator.sim.engine import simulate
from gpu_orchestrator.sim.policies import BASELINE, CURRENT
from gpu_orchestrator.sim.scenarios import CONFIG, SCENARIOS, outage, scenario
from gpu_orchestrator.sim.scorecard import Score, score


def _score(name: str, policy=CURRENT, seed: int = 0) -> Score:
    return score(simulate(scenario(name), policy, seed))


@pytest.mark.parametrize("name", ["seed-before", "brownout", "burst-200"])
def test_a_seed_replays_the_same_run_and_another_seed_a_different_one(name):
    first = simulate(scenario(name), CURRENT, 7)
    again = simulate(scenario(name), CURRENT, 7)
    assert first.samples == again.samples
    assert score(first) == score(again)
    other = simulate(scenario(name), CURRENT, 8)
    assert other.samples != first.samples


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_our_policy_loses_no_task(name):
    result = _score(name)
    assert result.lost == 0, result


@pytest.mark.parametrize("name", ["seed-after", "seed-before", "seed-new-image"])
def test_seed_incident_blocks_spawning_less_than_the_old_breaker(name):
    ours, old = _score(name), _score(name, BASELINE)
    assert old.blocked_min > 0
    assert ours.blocked_min < old.blocked_min, (ours, old)


@pytest.mark.parametrize("name", ["outage-deep", "outage-one"])
def test_an_outage_wastes_fewer_dollars_than_the_old_breaker(name):
    ours, old = _score(name), _score(name, BASELINE)
    assert ours.wasted_usd < old.wasted_usd, (ours, old)


def test_a_brownout_trips_no_breaker_where_the_old_one_trips_for_nothing():
    ours, old = _score("brownout"), _score("brownout", BASELINE)
    assert old.spurious_trips > 0
    assert ours.spurious_trips < old.spurious_trips, (ours, old)


def test_a_poison_task_is_quarantined_and_its_victims_do_not_count():
    run = simulate(scenario("poison"), CURRENT, 0)
    poison = run.world.queue.tasks["poison-0"]
    assert poison.quarantined
    victims = [run.world.rows[w] for w in poison.lost_by]
    assert len(victims) == 2 and all(row.task_caused for row in victims)


def test_a_flapping_heartbeat_kills_no_healthy_worker():
    run = simulate(scenario("flapping"), CURRENT, 0)
    assert run.world.agents, "the scenario must run workers"
    assert not [r.id for r in run.world.rows.values() if r.failed_at is not None]


@settings(max_examples=25, deadline=None)
@given(
    interval=st.sampled_from([60.0, 300.0, 900.0]),
    boot_timeout=st.sampled_from([300.0, 600.0]),
    max_gpus=st.integers(2, 10),
    poll=st.sampled_from([15.0, 30.0]),
    demand=st.sampled_from(["deep", "one", "comes-and-goes"]),
)
def test_permanent_outage_launches_stay_under_the_stated_bound(
    interval, boot_timeout, max_gpus, poll, demand
):
    """No pod ever boots. Until the breaker trips the fleet relaunches at most
    MAX_ACTIVE_GPUS per boot deadline; once it has tripped every launch is a probe
    or a probation launch, at least min(probe interval, window) + boot deadline
    apart: at most 3600 / (min(interval, window) + boot deadline) + 1 launches per
    hour, whatever the demand does (a deep queue, one task, bursts after quiet
    spells). A fleet too small to fail the minimum sample within one window trips
    on a streak of failures instead."""
    cfg = replace(
        CONFIG,
        max_active_gpus=max_gpus,
        max_spawns_per_cycle=max_gpus,
        spawning_timeout_sec=boot_timeout,
        breaker_probe_interval_sec=interval,
    )
    run = simulate(replace(outage(demand, 8, cfg, outage_hours=None), poll_sec=poll), CURRENT)
    per_hour = run.launches_per_hour()
    window = cfg.failure_window_sec
    bound = math.floor(3600 / (min(interval, window) + boot_timeout)) + 1
    before_trip = max_gpus * (math.ceil(window / boot_timeout) + 1)
    # Any hour: at most a fresh start's burst (a burst after its history aged out).
    assert all(n <= before_trip + bound for n in per_hour), (per_hour, before_trip + bound)
    trips = run.trips()
    if demand != "comes-and-goes":  # tasks always wait: the breaker trips in hour one
        assert trips and trips[0] < run.scenario.start + timedelta(hours=1), per_hour
    if trips:  # once tripped, every hour after is bounded
        first_hour = int((trips[0] - run.scenario.start).total_seconds() // 3600)
        assert all(n <= bound for n in per_hour[first_hour + 1 :]), (per_hour, bound)
        after = sorted(at for at in run.world.launches if at > trips[0])
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(after)]
        # a probe's failure may free the probation's slot in the cycle it is judged
        assert min(gaps, default=math.inf) >= boot_timeout, gaps


def test_simulate_prints_the_scorecard_of_one_scenario_and_policy():
    result = CliRunner().invoke(
        app, ["simulate", "--scenario", "seed-after", "--policy", "baseline"]
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| seed-after")]
    assert len(rows) == 1 and "| baseline |" in rows[0]


def test_simulate_refuses_an_unknown_scenario_and_a_missing_one():
    assert CliRunner().invoke(app, ["simulate", "--scenario", "nope"]).exit_code == 2
    assert CliRunner().invoke(app, ["simulate"]).exit_code == 2


def test_plot_writes_one_png_per_scenario(tmp_path):
    # matplotlib is the `plot` extra, which `make` installs with `dev`
    from gpu_orchestrator.sim.plot import plot_runs

    runs = [simulate(scenario("seed-after"), policy) for policy in (CURRENT, BASELINE)]
    (path,) = plot_runs(runs, tmp_path)
    assert path.name == "sim-seed-after.png"
    assert path.read_bytes().startswith(b"\x89PNG")
