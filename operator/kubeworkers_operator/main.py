"""The kopf wiring, and nothing else: each handler hands its event to a domain module.

All resource handlers are ``on.event`` (raw watch events): the operator derives
what to do from the object's current state, so kopf writes no progress
annotations and no finalizers onto Jobs. See :mod:`.flows.jobs` for why that is safe.

Every replica watches; only the leader acts (:meth:`.lifecycle.Background.leading`, fenced by
the Lease). A standby's handlers only keep its index warm (``observe``), so nothing is
enqueued, written or scaled twice, and the replica that takes over acts on everything at once.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubeworkers.resources import GROUP, JOB_PLURAL, SCHEDULE_PLURAL, VERSION, WORKERPOOL_PLURAL

from kubeworkers_operator import lifecycle
from kubeworkers_operator.flows import jobs, pools, schedules
from kubeworkers_operator.model.names import POOL_LABEL
from kubeworkers_operator.settings import OperatorSettings


def _bg(memo: kopf.Memo) -> lifecycle.Background:
    bg: lifecycle.Background = memo["background"]
    return bg


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own k8s-events for handler logs would double ours; keep only its warnings.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    ours: OperatorSettings = memo["settings"]
    memo["background"] = await lifecycle.start(ours, settings)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "background" in memo:
        await lifecycle.stop(_bg(memo))


@kopf.on.event(GROUP, VERSION, JOB_PLURAL)
async def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    bg = _bg(memo)
    if not bg.leading():
        jobs.observe(bg.rt, event.get("type"), event["object"])
        return
    await jobs.on_job_event(bg.rt, event.get("type"), event["object"])
    if schedules.run_finished(event.get("type"), event["object"]):
        bg.schedule_wakeup.poke()  # its Schedule's active runs and history changed


@kopf.on.event(GROUP, VERSION, SCHEDULE_PLURAL)
async def schedule_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # The schedules chore does the work (it lists the Schedules itself); a new or edited one wakes it.
    if schedules.concerns(event.get("type"), event["object"]):
        _bg(memo).schedule_wakeup.poke()


@kopf.on.event(GROUP, VERSION, WORKERPOOL_PLURAL)
async def workerpool_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    bg = _bg(memo)
    controllers = bg.controllers
    if controllers is None or not bg.leading():
        pools.observe(bg.rt, event.get("type"), event["object"])
        return
    await pools.on_pool_event(bg.rt, controllers, event.get("type"), event["object"])


@kopf.on.event("apps", "v1", "deployments", labels={POOL_LABEL: kopf.PRESENT})
async def deployment_event(event: kopf.RawEvent, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    bg = _bg(memo)
    if bg.leading():
        await pools.on_deployment_event(bg.rt, event.get("type"), event["object"], labels[POOL_LABEL])
