"""``kubeworkers-operator``: run the operator (kopf, standalone) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import kopf

from kubeworkers_operator import settings
from kubeworkers_operator.settings import OperatorSettings


def parse_args(argv: list[str] | None = None) -> OperatorSettings:
    """Settings from the command line and ``KUBEWORKERS_*`` variables (declared in :mod:`.settings`)."""
    parser = argparse.ArgumentParser(prog="kubeworkers-operator", description=__doc__)
    settings.add_arguments(parser)
    ours = settings.from_arguments(parser.parse_args(argv))
    logging.basicConfig(
        level=getattr(logging, ours.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One INFO line per handled watch event drowns everything else with thousands of Jobs.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    return ours


async def run(ours: OperatorSettings) -> None:
    """Run kopf with the operator's handlers until it is told to stop."""
    from kubeworkers_operator import main as _handlers  # noqa: F401  (registers the kopf handlers)

    memo = kopf.Memo(settings=ours)
    await kopf.operator(
        standalone=True,
        clusterwide=not ours.namespaces,
        namespaces=ours.namespaces,
        memo=memo,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
