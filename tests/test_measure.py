"""Measurement shared by the benchmark and the comparison: round-robin timing (no assertion on any time)."""

import torch

from drconv_yolo import measure


def test_median_ms_times_functions_round_robin_after_warmup():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("conv", "fast", "ref")}
    times = measure.median_ms(fns, torch.device("cpu"), repeats=3, warmup=2)
    warm = ["conv"] * 2 + ["fast"] * 2 + ["ref"] * 2
    assert calls == warm + ["conv", "fast", "ref", "fast", "ref", "conv", "ref", "conv", "fast"]
    assert set(times) == {"conv", "fast", "ref"} and all(t >= 0 for t in times.values())


def test_round_robin_turns_the_order_so_no_function_always_follows_the_same_one():
    calls = []
    names = ("a", "b", "c", "d")
    fns = {name: (lambda name=name: calls.append(name)) for name in names}
    times = measure.round_robin_ms(fns, torch.device("cpu"), repeats=8, warmup=0)
    assert all(len(times[name]) == 8 for name in names)
    assert sorted(calls[::4]) == sorted(names * 2)  # each runs first in as many rounds
    before = {name: {prev for prev, nxt in zip(calls, calls[1:]) if nxt == name} for name in names}
    assert all(len(prev) >= 2 and name not in prev for name, prev in before.items())  # never after itself


def test_round_robin_alternates_which_of_two_runs_first():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("new", "old")}
    measure.round_robin_ms(fns, torch.device("cpu"), repeats=4, warmup=0)
    assert calls == ["new", "old", "old", "new", "new", "old", "old", "new"]


def test_busy_processes_are_killed_even_when_the_measurement_fails():
    import pytest

    with pytest.raises(RuntimeError, match="measurement failed"):
        with measure.busy_processes(2) as procs:
            assert len(procs) == 2 and all(p.poll() is None for p in procs)
            raise RuntimeError("measurement failed")
    assert all(p.poll() is not None for p in procs)  # killed and reaped
    with measure.busy_processes(0) as none:
        assert none == []


STAT = "cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2\n"


def test_cpu_steal_is_the_stolen_share_of_the_jiffies_counted_inside(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(STAT.format(user=100, system=50, idle=800, steal=50))
    with measure.cpu_steal(str(stat)) as steal:
        assert steal["steal"] is None  # set on exit
        stat.write_text(STAT.format(user=160, system=70, idle=860, steal=110))  # 200 jiffies more, 60 of them stolen
    assert steal["steal"] == 60 / 200


def test_cpu_steal_is_none_without_a_stat_file(tmp_path):
    with measure.cpu_steal(str(tmp_path / "missing")) as steal:
        pass
    assert steal["steal"] is None
