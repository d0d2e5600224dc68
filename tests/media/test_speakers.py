"""The loudest-speakers gate: who is forwarded, and that nobody is cut mid-word."""

from services.media.speakers import HOLD_S, LoudestSpeakers, Voice


def voice(host: bool = False) -> tuple[Voice, list[bool]]:
    changes: list[bool] = []
    return Voice(host=host, on_change=changes.append), changes


def talk(
    room: LoudestSpeakers, level_of: dict[int, tuple[Voice, int]], start: float, seconds: float
) -> float:
    """Everyone in ``level_of`` sends a packet every 20 ms at their level; the time after."""
    now = start
    while now < start + seconds:
        for speaker, level in level_of.values():
            room.heard(speaker, level < 127, level, now)
        now += 0.02
    return now


def test_only_the_loudest_speakers_are_forwarded_and_the_silent_never() -> None:
    room = LoudestSpeakers(2)
    people = [voice()[0] for _ in range(5)]
    for person in people:
        room.join(person)
    levels = {0: (people[0], 20), 1: (people[1], 30), 2: (people[2], 50), 3: (people[3], 127)}
    talk(room, levels, 0.0, 1.0)
    assert [p.forwarded for p in people] == [True, True, False, False, False]


def test_a_speaker_who_has_the_floor_keeps_it_against_a_slightly_louder_one() -> None:
    room = LoudestSpeakers(1)
    first, second = voice()[0], voice()[0]
    room.join(first)
    room.join(second)
    now = talk(room, {1: (first, 40)}, 0.0, 0.5)
    now = talk(room, {1: (first, 40), 2: (second, 37)}, now, 1.0)  # 3 dB louder: not enough
    assert first.forwarded
    assert not second.forwarded
    talk(room, {1: (first, 40), 2: (second, 25)}, now, 1.0)  # 15 dB louder: takes over
    assert second.forwarded
    assert not first.forwarded


def test_a_speaker_is_not_cut_by_a_short_pause_but_is_after_the_hold() -> None:
    room = LoudestSpeakers(1)
    person, changes = voice()
    room.join(person)
    now = talk(room, {1: (person, 30)}, 0.0, 0.5)
    now = talk(room, {1: (person, 127)}, now, HOLD_S / 2)
    assert person.forwarded
    talk(room, {1: (person, 127)}, now, HOLD_S * 2)
    assert not person.forwarded
    assert changes == [True, False]


def test_hosts_are_forwarded_whenever_they_speak() -> None:
    room = LoudestSpeakers(1)
    host = voice(host=True)[0]
    loud = voice()[0]
    room.join(host)
    room.join(loud)
    talk(room, {1: (host, 60), 2: (loud, 10)}, 0.0, 1.0)
    assert host.forwarded
    assert loud.forwarded


def test_a_limit_of_zero_forwards_every_voice() -> None:
    room = LoudestSpeakers(0)
    person, changes = voice()
    room.join(person)
    talk(room, {1: (person, 127)}, 0.0, 1.0)
    assert person.forwarded
    assert changes == [True]


def test_a_louder_newcomer_waits_before_displacing_someone_still_speaking() -> None:
    room = LoudestSpeakers(1)
    first, second = voice()[0], voice()[0]
    room.join(first)
    room.join(second)
    now = talk(room, {1: (first, 40)}, 0.0, 1.0)
    now = talk(room, {1: (first, 40), 2: (second, 20)}, now, 0.3)  # a burst: not yet
    assert first.forwarded
    assert not second.forwarded
    talk(room, {1: (first, 40), 2: (second, 20)}, now, 0.6)  # ahead for long enough
    assert second.forwarded
    assert not first.forwarded


def test_the_limit_can_change_during_a_call() -> None:
    room = LoudestSpeakers(0)
    people = [voice()[0] for _ in range(3)]
    for person in people:
        room.join(person)
    assert all(p.forwarded for p in people)
    now = talk(room, {1: (people[0], 20)}, 0.0, 1.0)
    room.resize(1, now)
    assert [p.forwarded for p in people] == [True, False, False]
    room.resize(0, now)
    assert all(p.forwarded for p in people)
    everyone = {i: (p, 20 + i) for i, p in enumerate(people)}
    now = talk(room, everyone, now, 1.0)
    room.resize(2, now)
    assert [p.forwarded for p in people] == [True, True, False]
