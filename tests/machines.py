"""Hypothesis state machines over running services: what the machines share.

Hypothesis runs a machine synchronously, so :func:`run_machine` runs it in a thread while the
test's event loop keeps serving the services; each rule hands its coroutine to that loop with
:func:`on_loop`. Every step talks to real servers, so the settings skip shrinking.
"""

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

T = TypeVar("T")
STEP_TIMEOUT_S = 60.0


def on_loop(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` on the test's loop from the machine's thread; its result."""
    return asyncio.run_coroutine_threadsafe(work, loop).result(timeout=STEP_TIMEOUT_S)


def machine_settings(*suppress: HealthCheck) -> settings:
    """25 examples of up to 15 steps, the same every run. Shrinking a failure would take many
    minutes, so the failing case (at most 15 steps) is printed as it was found."""
    return settings(
        max_examples=25,
        stateful_step_count=15,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, *suppress],
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )


async def run_machine(machine: Callable[[], RuleBasedStateMachine], config: settings) -> None:
    """Run the machine in a thread while this loop serves the steps it sends here; a daemon
    thread, so a run cut short by the timeout cannot hold the process."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def settle(failure: BaseException | None) -> None:
        if finished.done():
            return
        if failure is None:
            finished.set_result(None)
        else:
            finished.set_exception(failure)

    def target() -> None:
        try:
            run_state_machine_as_test(machine, settings=config)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, exc)
        else:
            loop.call_soon_threadsafe(settle, None)

    threading.Thread(target=target, name="state-machine", daemon=True).start()
    await finished
