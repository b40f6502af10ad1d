"""The chaos drill's fault schedule: seeded, about one client kill every three rounds, one
driver kill, stragglers, never in the first or last round, never two in one round."""
import pytest

from fcl_ray.chaos import KILL_CLIENT, KILL_DRIVER, STRAGGLE, chaos_schedule


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another():
    assert chaos_schedule(20, seed=7) == chaos_schedule(20, seed=7)
    assert any(chaos_schedule(20, seed=s) != chaos_schedule(20, seed=7) for s in range(3))


@pytest.mark.parametrize("seed", range(5))
def test_twenty_rounds_hold_six_kills_one_driver_kill_and_two_stragglers(seed):
    events = chaos_schedule(20, seed=seed)
    kinds = [e.kind for e in events]
    assert kinds.count(KILL_CLIENT) == 6 and kinds.count(KILL_DRIVER) == 1
    assert kinds.count(STRAGGLE) == 2
    rounds = [e.round for e in events]
    assert rounds == sorted(rounds) and len(set(rounds)) == len(rounds)
    assert min(rounds) >= 2 and max(rounds) <= 19
    # One kill in each block of three rounds (rounds 1-3, 4-6, ...).
    kills = [e.round for e in events if e.kind == KILL_CLIENT]
    assert [(r - 1) // 3 for r in kills] == list(range(6))
    (driver,) = [e for e in events if e.kind == KILL_DRIVER]
    assert 3 <= driver.round <= 18


def test_options_and_the_smallest_drill():
    assert [e.kind for e in chaos_schedule(20, 0, kill_driver=False, stragglers=0)] == \
        [KILL_CLIENT] * 6
    assert sorted(e.kind for e in chaos_schedule(5, 0, stragglers=1)) == \
        sorted([KILL_CLIENT, KILL_DRIVER, STRAGGLE])


@pytest.mark.parametrize("kwargs, message", [
    ({"rounds": 2}, "rounds must be at least 3"),
    ({"rounds": 10, "kill_every": 0}, "kill_every must be at least 1"),
    ({"rounds": 10, "stragglers": -1}, "stragglers must be 0 or more"),
    ({"rounds": 5, "kill_every": 1}, "do not fit in rounds 2..4"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        chaos_schedule(seed=0, **kwargs)
