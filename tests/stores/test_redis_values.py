"""The Redis store's values (stores/_redis_records.py): a write that reuses the JSON of the
fields it does not change writes exactly the record a whole encoding would, and a value with
fields this version does not know keeps them."""

from __future__ import annotations

import json
import time

from mcp_sessions.core.records import Record
from mcp_sessions.stores._redis_records import (
    extended,
    new_fields,
    read_value,
    to_record,
    write_value,
)
from mcp_sessions.stores._redis_scripts import TAG_LENGTH


def record(**changes: object) -> Record:
    base = Record.new(
        kind="session",
        id='odd "id" \\ é',
        principal='principal with "quotes" and \u2028',
        origin="client",
        now=time.time(),
        idle_ttl=60.0,
        max_lifetime=600.0,
        state={"count": 1, "text": 'a "quoted" line\n'},
        attributes={"protocolVersion": "2025-11-25"},
    )
    return base._replace(**changes)  # type: ignore[arg-type]


def test_a_write_from_a_base_encodes_the_same_record_as_a_whole_encoding() -> None:
    _, base = write_value(new_fields(record()))
    assert base.head is not None  # computed once, kept for the next write
    fields, _ = extended(base.fields, time.time() + 5, idle_ttl=30.0)
    fields["v"] = 2
    fields["s"] = json.dumps({"count": 2, "q": '"'})
    value, entry = write_value(fields, base)
    assert entry.head is base.head and entry.tag == value[:TAG_LENGTH]
    assert json.loads(value[TAG_LENGTH:]) == fields  # every field, each value exact
    again = read_value(value)
    assert again.fields == fields and again.tag == entry.tag
    assert to_record(again.fields) == to_record(fields)
    assert to_record(again.fields).state == {"count": 2, "q": '"'}


def test_a_base_read_from_redis_gets_its_head_on_its_first_write() -> None:
    stored, _ = write_value(new_fields(record()))
    base = read_value(stored)
    assert base.head is None
    value, entry = write_value(extended(base.fields, time.time())[0], base)
    assert base.head is not None and entry.head == base.head
    assert json.loads(value[TAG_LENGTH:]) == entry.fields


def test_fields_this_version_does_not_know_are_kept() -> None:
    fields = {**new_fields(record()), "future": [1, "two"]}
    value, _ = write_value(fields)
    assert json.loads(value[TAG_LENGTH:])["future"] == [1, "two"]
    changed = {**read_value(value).fields, "v": 3}
    value, _ = write_value(changed, read_value(value))
    assert json.loads(value[TAG_LENGTH:]) == changed
