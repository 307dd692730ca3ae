"""The wire shapes in ``kubeworkers.wire`` agree with the header comments of the Lua scripts they talk to.

The headers are the scripts' contract (KEYS/ARGV/return); these tests parse them and compare
them with the Python declarations, so renaming a field on one side only fails here.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from typing import Any, Literal

import pytest
from kubeworkers import wire
from kubeworkers.scripts import LUA_DIR


def header(script: str) -> str:
    """The leading comment block of a script, without the ``--`` markers."""
    lines = []
    for line in (LUA_DIR / f"{script}.lua").read_text().splitlines():
        if line.startswith("#!") and not lines:
            continue  # a Redis 7 shebang (script flags) comes before the header
        if not line.startswith("--"):
            break
        lines.append(line[2:])
    return "\n".join(lines)


def argv_names(script: str) -> list[str]:
    """``ARGV[n] name: ...`` lines, in order (``ARGV[n..]`` is a repeated tail)."""
    found = re.findall(r"^ ARGV\[(\d+)(?:\.\.)?\] (\w+):", header(script), re.M)
    assert [int(n) for n, _ in found] == list(range(1, len(found) + 1)), f"{script}.lua: ARGV numbering"
    return [name for _, name in found]


def listed_after(text: str, label: str) -> list[str]:
    """The comma-separated names after ``label`` up to the end of its line."""
    match = re.search(re.escape(label) + r"\s*(.+)", text)
    assert match, f"no {label!r} in the header"
    return [name.strip() for name in match.group(1).split(",")]


def parameters(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


# --------------------------------------------------------------------------- settle.lua


def test_settle_args_are_the_scripts_argv_in_its_order() -> None:
    names = argv_names("settle")
    assert parameters(wire.settle_args) == names
    args = wire.settle_args(**{n: n for n in names if n != "writes"}, writes=[])  # type: ignore[arg-type]
    assert args == [*names[:-1], "[]"]


def settle_write_fields() -> tuple[list[str], dict[str, list[str]]]:
    text = header("settle")
    common_text = re.search(r"each with (.+?) and, by kind:", text, re.S)
    assert common_text, "settle.lua: no 'each with ... and, by kind:' in the header"
    common = [re.sub(r"\(.*?\)", "", part).split()[-1] for part in common_text.group(1).split(",")]
    kinds = {kind: [f.strip() for f in fields.split(",")] for kind, fields in re.findall(
        r"^   (\w+):\s+(.+)$", text, re.M
    )}
    return common, kinds


def test_every_write_kind_has_the_fields_the_script_reads() -> None:
    common, kinds = settle_write_fields()
    assert set(kinds) == set(wire.WRITE_SHAPES)
    for kind, fields in kinds.items():
        shape = wire.WRITE_SHAPES[kind]
        assert set(shape.__required_keys__) == {*common, *fields}, kind
        assert typing.get_type_hints(shape)["kind"] == Literal[kind], kind


def test_settle_reads_no_write_field_its_header_does_not_declare() -> None:
    common, kinds = settle_write_fields()
    declared = {*common, *(f for fields in kinds.values() for f in fields)}
    body = (LUA_DIR / "settle.lua").read_text()
    assert set(re.findall(r"\bw\.(\w+)", body)) <= declared


def test_encoded_writes_are_a_json_list_of_objects_with_readable_field_names() -> None:
    write = wire.requeue(2, "1-0", "ns/j", "bye", uncount=True, owner="w")
    [decoded] = json.loads(wire.encode_writes([write]))
    assert decoded == {"kind": "requeue", "stream": 2, "entry": "1-0", "job_id": "ns/j", "message": "bye",
                       "uncount": True, "owner": "w"}
    assert all(len(key) > 2 for key in decoded)


# --------------------------------------------------------------------------- take.lua


def test_take_args_are_the_scripts_argv_in_its_order() -> None:
    names = argv_names("take")
    assert parameters(wire.take_args) == names
    given = wire.Given(*wire.Given._fields)  # type: ignore[arg-type]
    args = wire.take_args(**{n: n for n in names if n not in ("given", "wake")}, wake=True,  # type: ignore[arg-type]
                          given=[given])
    wake = names.index("wake")
    assert args == [*names[:wake], "1", *names[wake + 1:-1], *wire.Given._fields]
    assert wire.take_args(**{n: n for n in names if n not in ("given", "wake")})[wake] == ""  # type: ignore[arg-type]


def test_given_entries_carry_the_fields_the_script_expects() -> None:
    assert list(wire.Given._fields) == listed_after(header("take"), "mode 'given', per entry:")


def test_take_reply_is_parsed_in_the_order_the_script_returns_it() -> None:
    assert list(wire.Taken._fields) == listed_after(header("take"), "Returns a flat list, per entry:")
    reply = [2, b"1-0", b"j1", b"u1", b"h", b"{}", b"run", 1, 3, 1, b"2-0", b"", b"", b"", b"{}", b"bad", 0, 0]
    assert wire.parse_take(reply) == [
        wire.Taken(2, "1-0", "j1", "u1", "h", b"{}", wire.Verdict.RUN, 1, 3),
        wire.Taken(1, "2-0", "", "", "", b"{}", wire.Verdict.BAD, 0, 0),
    ]


def test_a_woken_take_reply_ends_with_the_ids_to_block_from_or_none() -> None:
    entry = [2, b"1-0", b"j1", b"u1", b"h", b"{}", b"run", 1, 3]
    assert wire.parse_take_woken([*entry, [b"0-0", b"5-1"]]) == (
        [wire.Taken(2, "1-0", "j1", "u1", "h", b"{}", wire.Verdict.RUN, 1, 3)], ["0-0", "5-1"])
    assert wire.parse_take_woken([*entry, []]) == (
        [wire.Taken(2, "1-0", "j1", "u1", "h", b"{}", wire.Verdict.RUN, 1, 3)], None)
    assert wire.parse_take_woken([[b"0-0"]]) == ([], ["0-0"])


def test_verdicts_are_the_ones_the_script_returns() -> None:
    text = header("take")
    listed = re.findall(r"^   (\w+)\s{2,}", text[text.index("Verdicts:"):], re.M)
    assert listed == [v.value for v in wire.Verdict]


# --------------------------------------------------------------------------- reap.lua


def test_reap_args_are_the_scripts_argv_in_its_order() -> None:
    names = argv_names("reap")
    assert parameters(wire.reap_args) == names
    assert wire.reap_args(**{n: n for n in names}) == names  # type: ignore[arg-type]


def test_reap_reply_is_parsed_in_the_order_the_script_returns_it() -> None:
    text = header("reap")
    assert listed_after(text, "Returns a flat list:")[:2] == ["status", "wait_ms"]
    assert list(wire.Claimed._fields) == listed_after(text, "per claimed entry:")
    assert wire.parse_reap([b"claimed", 0, 1, b"1-0", b"j"]) == wire.Reaped("claimed", 0, [wire.Claimed(1, "1-0", "j")])


def test_settle_results_that_are_errors_are_recognised() -> None:
    assert wire.write_error(b"error: state must be a string") == "state must be a string"
    assert wire.write_error(1) is None and wire.write_error(b"1-0") is None


@pytest.mark.parametrize("script", ["take", "settle", "reap"])
def test_script_bodies_read_no_argv_beyond_their_header(script: str) -> None:
    lines = (LUA_DIR / f"{script}.lua").read_text().splitlines()
    body = "\n".join(line for line in lines if not line.startswith("--"))
    used = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", body)}
    assert used <= set(range(1, len(argv_names(script)) + 1))


def test_enqueue_and_the_models_agree_on_the_most_attempts_a_job_may_have() -> None:
    from kubeworkers.protocol import MAX_ATTEMPTS_LIMIT

    [limit] = re.findall(r"^local MAX_ATTEMPTS = (\d+)$", (LUA_DIR / "enqueue.lua").read_text(), re.M)
    assert int(limit) == MAX_ATTEMPTS_LIMIT
