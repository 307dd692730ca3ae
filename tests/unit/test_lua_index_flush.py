"""Every script that finishes jobs or makes them live ends by flushing what ``lua/jobindex.lua`` deferred.

``kw_index_finished`` (reached through ``children.lua``'s ``kw_job_finished``) and ``kw_index_live``
note the index's writes (the moves between live and finished sets, their trims, the per-handler
sets' expiry), and ``kw_index_flush()`` makes them once per set per call. A script that never
flushed would leave jobs out of the index, or in the live set after they finished, and those sets
untrimmed: the jobs index would no longer be bounded (docs/protocol.md, *Bounds*). Likewise
``settle.lua`` writes the per-minute statistics it added up (``kw_stats_flush``) and its
acknowledgements (``flush_acks``) last. A script's own text is checked, libraries excluded.
"""

from __future__ import annotations

import re

import pytest
from kubeworkers.scripts import LUA_DIR, script

LIBRARIES = {"children", "jobindex", "position", "stats"}
SCRIPTS = sorted(p.stem for p in LUA_DIR.glob("*.lua") if p.stem not in LIBRARIES)
FINISHING = re.compile(r"^\s*(kw_job_finished|kw_index_finished|kw_index_live)\(", re.M)


def _code(name: str) -> str:
    """The script's own lines, comments dropped."""
    return "\n".join(line.split("--", 1)[0] for line in (LUA_DIR / f"{name}.lua").read_text().splitlines())


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_that_finishes_or_enqueues_jobs_flushes_the_jobs_index_after_its_last_note(name: str) -> None:
    code = _code(name)
    finishes = [m.start() for m in FINISHING.finditer(code)]
    if not finishes:
        return
    flushes = [m.start() for m in re.finditer(r"^\s*kw_index_flush\(\)", code, re.M)]
    assert flushes, f"{name}.lua writes the jobs index but never calls kw_index_flush()"
    assert max(flushes) > max(finishes), f"{name}.lua: kw_index_flush() must come after its last index write"


def test_the_scripts_that_write_the_jobs_index_are_the_ones_it_names() -> None:
    finishing = {name for name in SCRIPTS if FINISHING.search(_code(name))}
    assert finishing == {"take", "settle", "cancel", "fail_lost", "enqueue", "rerun"}


def test_settle_writes_its_statistics_and_acknowledgements_after_applying_every_write() -> None:
    code = _code("settle")
    loop = code.index("for i, w in ipairs(writes) do")
    for flush in ("flush_acks()", "kw_stats_flush()", "kw_index_flush()"):
        assert code.rindex(flush) > loop, flush


def test_every_script_still_compiles_into_one_source_with_its_libraries() -> None:
    for name in SCRIPTS:
        source = script(name).source
        assert not re.search(r"^--! include", source, re.M)
        if "kw_index_flush()" in _code(name):
            assert "local function kw_index_flush()" in source
