"""The store's Lua and the Python beside it agree on every name and format: the scripts take
key suffixes, event names and event JSON from Python, and publish what `decode_wire` reads."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import msgspec
from chatrelay_common import (
    Done,
    SessionKeys,
    SessionSettings,
    SessionStore,
    SettingsChanged,
    Truncate,
    decode_wire,
    encode_data,
    encode_wire,
)
from chatrelay_common._keys import SESSION_KEY_SUFFIXES
from redis.asyncio import Redis


async def test_every_publication_is_the_wire_form_of_its_logged_event(
    store: SessionStore, redis: Redis
) -> None:
    session = await store.create(SessionSettings(model="m"))
    pubsub = redis.pubsub()
    await pubsub.subscribe(SessionKeys(session).channel)
    assert await pubsub.get_message(timeout=1) is not None  # the subscribe confirmation

    _, reply_id = await store.begin_reply(session, model="m", content="hi ✓")
    await store.append_deltas([(session, reply_id, "delta", "a b", 1)])
    await store.finish_reply(session, reply_id, Done(reply_id, "stop", None))
    await store.update_settings(session, {"system": 'say "x"'})
    await store.clear(session)

    logged = await store.events_after(session, 0)
    published = []
    for _ in logged:
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        published.append(message["data"])
    await pubsub.aclose()  # type: ignore[no-untyped-call]

    assert [e.name for e in logged] == ["message", "start", "delta", "done", "settings", "truncate"]
    assert published == [encode_wire(e.seq, e.name, e.data) for e in logged]
    assert [decode_wire(raw) for raw in published] == [(e.seq, e.name, e.data) for e in logged]
    # The JSON the scripts logged is msgspec's, byte for byte.
    assert logged[4].data == encode_data(
        SettingsChanged(SessionSettings(system='say "x"', model="m"))
    )
    assert logged[5].data == encode_data(Truncate(from_message_id=None))


async def test_the_scripts_write_exactly_the_keys_session_keys_names(
    store: SessionStore, redis: Redis
) -> None:
    session = await store.create(SessionSettings(model="m"))
    keys = SessionKeys(session)
    message_id, reply_id = await store.begin_reply(session, model="m", content="q")
    assert message_id is not None
    assert await store.append_delta(session, reply_id, "a")
    assert await store.append_delta(session, reply_id, "r", kind="reasoning")
    assert await store.request_stop(session) == reply_id

    found = {key.decode() async for key in redis.scan_iter(match=keys.base + "*")}
    assert found == {
        keys.session,
        keys.log,
        keys.order,
        keys.lock,
        keys.stop,
        keys.message(message_id),
        keys.text(message_id),
        keys.message(reply_id),
        keys.text(reply_id),
        keys.reasoning(reply_id),
    }
    assert await redis.get(keys.text(reply_id)) == b"a"
    assert await redis.lrange(keys.order, 0, -1) == [message_id.encode(), reply_id.encode()]  # type: ignore[misc]


async def test_a_change_made_between_the_read_and_the_write_is_merged_not_lost(
    store: SessionStore, redis: Redis
) -> None:
    session = await store.create(SessionSettings(model="m"))
    settings_key = SessionKeys(session).session
    real_hget = redis.hget
    raced = False

    async def hget_then_race(name: str, key: str) -> bytes | None:
        # Another client changes the temperature right after this update read the settings.
        nonlocal raced
        stored: bytes | None = await real_hget(name, key)  # type: ignore[misc]
        if not raced:
            raced = True
            other = SessionSettings(model="m", temperature=0.5)
            await redis.hset(settings_key, "settings", msgspec.json.encode(other).decode())  # type: ignore[misc]
        return stored

    redis.hget = hget_then_race  # type: ignore[method-assign, assignment]
    try:
        merged = await store.update_settings(session, {"system": "s"})
    finally:
        del redis.hget
    assert raced
    assert merged == SessionSettings(system="s", model="m", temperature=0.5)
    assert await store.settings(session) == merged
    (event,) = await store.events_after(session, 0)
    assert event.data == b'{"settings":{"system":"s","model":"m","temperature":0.5}}'


def test_no_script_spells_a_key_suffix_or_field_or_builds_json() -> None:
    folder = resources.files("chatrelay_common") / "lua"
    scripts = {entry.name: entry.read_text() for entry in folder.iterdir()}
    # Every file is a script some module loads (``_script("a", "b")``): none is dead.
    package = Path(str(resources.files("chatrelay_common")))
    loaded = {
        f"{part}.lua"
        for module in package.glob("*.py")
        for call in re.findall(r"_script\(([^)]*)\)", module.read_text())
        for part in re.findall(r'"([a-z_]+)"', call.split("constants=")[0])
    }
    assert set(scripts) == loaded, set(scripts) ^ loaded
    for name, text in scripts.items():
        for suffix in SESSION_KEY_SUFFIXES.values():
            assert f"'{suffix}'" not in text, (name, suffix)
        # Nor a field of a hash (or of a log entry) as its first field.
        assert re.search(r"'(H[A-Z]+|XADD)', [^,]+, '", text) is None, name
        assert "'{" not in text, name
        assert "}'" not in text, name
