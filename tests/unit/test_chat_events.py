"""parse_frame on every event type and on broken frames; dedupe keys."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_bot.chat.events import (
    Hello,
    Malformed,
    OtherEvent,
    PostDeleted,
    Posted,
    PostEdited,
    ReactionAdded,
    ReactionRemoved,
    parse_frame,
    parse_message,
    parse_reply,
)

POST = {
    "id": "p1",
    "create_at": 1_700_000_000_000,
    "update_at": 1_700_000_000_000,
    "edit_at": 0,
    "delete_at": 0,
    "is_pinned": False,
    "user_id": "u1",
    "channel_id": "c1",
    "root_id": "",
    "original_id": "",
    "message": "start sev2 db is down",
    "type": "",
    "props": {"disable_group_highlight": True},
    "hashtags": "",
    "pending_post_id": "",
    "reply_count": 0,
    "metadata": {},
}


def frame(event: str, data: Any, seq: int = 5, broadcast: dict[str, Any] | None = None) -> str:
    return json.dumps(
        {
            "event": event,
            "data": data,
            "broadcast": broadcast
            if broadcast is not None
            else {"omit_users": None, "user_id": "", "channel_id": "c1", "team_id": ""},
            "seq": seq,
        }
    )


def reaction(**changes: Any) -> str:
    body = {
        "user_id": "u1",
        "post_id": "p1",
        "emoji_name": "white_check_mark",
        "create_at": 1000,
        "update_at": 1000,
        "delete_at": 0,
        "remote_id": "",
        "channel_id": "c1",
    }
    body.update(changes)
    return json.dumps(body)


# --- every event type -------------------------------------------------------------------


def test_hello() -> None:
    event = parse_frame(
        frame(
            "hello",
            {"server_version": "9.11.0.1.abc.true", "connection_id": "conn1", "server_hostname": "mm"},
            seq=0,
            broadcast={"user_id": "bot"},
        )
    )
    assert event == Hello(connection_id="conn1", server_version="9.11.0.1.abc.true", seq=0)


def test_posted() -> None:
    data = {
        "channel_display_name": "Incidents",
        "channel_name": "incidents",
        "channel_type": "O",
        "mentions": json.dumps(["bot"]),
        "post": json.dumps(POST),
        "sender_name": "@alice",
        "set_online": True,
        "team_id": "t1",
    }
    event = parse_frame(frame("posted", data, seq=7))
    assert isinstance(event, Posted)
    assert event.post.id == "p1" and event.post.message == "start sev2 db is down"
    assert event.post.props == {"disable_group_highlight": True}
    assert (event.channel_type, event.channel_name, event.channel_display_name) == ("O", "incidents", "Incidents")
    assert event.sender_name == "@alice" and event.team_id == "t1"
    assert event.mentions == ["bot"]
    assert event.seq == 7
    assert event.dedupe_key == "posted:p1"


def test_posted_without_mentions_and_with_a_post_object() -> None:
    event = parse_frame(frame("posted", {"post": POST, "channel_type": "D"}))
    assert isinstance(event, Posted)
    assert event.mentions == [] and event.channel_type == "D"


def test_posted_with_broken_mentions_keeps_the_post() -> None:
    event = parse_frame(frame("posted", {"post": json.dumps(POST), "mentions": "[not json"}))
    assert isinstance(event, Posted) and event.mentions == []


def test_post_edited_key_changes_with_each_edit() -> None:
    first = parse_frame(frame("post_edited", {"post": json.dumps({**POST, "edit_at": 2000, "update_at": 2000})}))
    second = parse_frame(frame("post_edited", {"post": json.dumps({**POST, "edit_at": 3000, "update_at": 3000})}))
    assert isinstance(first, PostEdited) and isinstance(second, PostEdited)
    assert first.dedupe_key == "edited:p1:2000"
    assert second.dedupe_key == "edited:p1:3000"
    no_edit_at = parse_frame(frame("post_edited", {"post": json.dumps({**POST, "update_at": 4000})}))
    assert isinstance(no_edit_at, PostEdited) and no_edit_at.dedupe_key == "edited:p1:4000"


def test_post_deleted() -> None:
    event = parse_frame(frame("post_deleted", {"post": json.dumps({**POST, "delete_at": 5000}), "delete_by": "u1"}))
    assert isinstance(event, PostDeleted)
    assert event.post.delete_at == 5000
    assert event.dedupe_key == "deleted:p1"


def test_reaction_added_and_removed() -> None:
    added = parse_frame(frame("reaction_added", {"reaction": reaction()}))
    assert isinstance(added, ReactionAdded)
    assert added.channel_id == "c1"
    assert added.reaction.emoji_name == "white_check_mark"
    assert added.dedupe_key == "reaction+:u1:p1:white_check_mark:1000"

    # A removal event is built from the URL: create_at 0, update_at = removal time.
    removed = parse_frame(frame("reaction_removed", {"reaction": reaction(create_at=0, update_at=1500)}))
    assert isinstance(removed, ReactionRemoved)
    assert removed.dedupe_key == "reaction-:u1:p1:white_check_mark:1500"


def test_reaction_channel_falls_back_to_the_reaction() -> None:
    event = parse_frame(frame("reaction_added", {"reaction": reaction(channel_id="c7")}, broadcast={}))
    assert isinstance(event, ReactionAdded) and event.channel_id == "c7"


def test_tick_untick_tick_gives_distinct_keys_and_redelivery_the_same() -> None:
    tick1 = frame("reaction_added", {"reaction": reaction(create_at=1000, update_at=1000)}, seq=1)
    untick1 = frame("reaction_removed", {"reaction": reaction(create_at=0, update_at=2000)}, seq=2)
    # The server keeps the first create_at when the same reaction comes back.
    tick2 = frame("reaction_added", {"reaction": reaction(create_at=1000, update_at=3000)}, seq=3)
    untick2 = frame("reaction_removed", {"reaction": reaction(create_at=0, update_at=4000)}, seq=4)

    def key(text: str) -> str:
        event = parse_frame(text)
        assert isinstance(event, (ReactionAdded, ReactionRemoved))
        return event.dedupe_key

    keys = [key(f) for f in (tick1, untick1, tick2, untick2)]
    assert len(set(keys)) == 4
    assert key(tick2) == keys[2]
    assert key(untick2) == keys[3]


def test_reaction_key_falls_back_to_create_at_on_old_servers() -> None:
    body = json.dumps({"user_id": "u1", "post_id": "p1", "emoji_name": "x", "create_at": 42})
    event = parse_frame(frame("reaction_added", {"reaction": body}))
    assert isinstance(event, ReactionAdded) and event.dedupe_key == "reaction+:u1:p1:x:42"


def test_unknown_event() -> None:
    event = parse_frame(frame("typing", {"parent_id": "", "user_id": "u1"}, seq=9))
    assert isinstance(event, OtherEvent)
    assert event.name == "typing" and event.data == {"parent_id": "", "user_id": "u1"}
    assert event.broadcast["channel_id"] == "c1" and event.seq == 9


def test_unknown_event_with_null_data() -> None:
    event = parse_frame(json.dumps({"event": "license_changed", "data": None, "seq": 3}))
    assert isinstance(event, OtherEvent) and event.data == {} and event.broadcast == {}


# --- replies and broken frames -----------------------------------------------------------


def test_replies_are_not_events() -> None:
    assert parse_frame('{"status":"OK","seq_reply":1}') is None
    assert parse_frame('{"status":"FAIL","seq_reply":2,"error":{"id":"x","message":"y"}}') is None
    reply = parse_reply('{"status":"FAIL","seq_reply":2,"error":{"id":"x","message":"y"}}')
    assert reply is not None and (reply.seq_reply, reply.status, reply.error_id) == (2, "FAIL", "x")
    assert parse_reply(frame("hello", {})) is None
    assert parse_reply("nope") is None


def test_not_json() -> None:
    event = parse_frame("{not json")
    assert isinstance(event, Malformed) and event.reason == "not JSON" and event.raw == "{not json"


def test_json_list() -> None:
    event = parse_frame('[{"event": "posted"}]')
    assert isinstance(event, Malformed) and "not a JSON object" in event.reason


def test_missing_event_name() -> None:
    event = parse_frame('{"data": {}, "seq": 1}')
    assert isinstance(event, Malformed) and event.reason == "no event name"


def test_missing_data() -> None:
    event = parse_frame('{"event": "posted", "seq": 4}')
    assert isinstance(event, Malformed) and "no data" in event.reason
    assert event.seq == 4  # the envelope was readable: sequence tracking can go on


def test_post_is_broken_json() -> None:
    event = parse_frame(frame("posted", {"post": '{"id": "p1", "message": '}, seq=11))
    assert isinstance(event, Malformed)
    assert event.reason == "posted: data.post is not valid JSON"
    assert event.seq == 11


def test_post_lacks_fields() -> None:
    event = parse_frame(frame("post_edited", {"post": json.dumps({"id": "p1"})}))
    assert isinstance(event, Malformed) and "data.post invalid" in event.reason


def test_reaction_is_broken_or_missing() -> None:
    broken = parse_frame(frame("reaction_added", {"reaction": "{{"}))
    missing = parse_frame(frame("reaction_removed", {}))
    not_object = parse_frame(frame("reaction_added", {"reaction": "[1, 2]"}))
    assert isinstance(broken, Malformed) and "data.reaction is not valid JSON" in broken.reason
    assert isinstance(missing, Malformed) and "data.reaction missing" in missing.reason
    assert isinstance(not_object, Malformed) and "not an object" in not_object.reason


def test_odd_envelopes() -> None:
    assert isinstance(parse_frame('{"event": 5, "data": {}}'), Malformed)
    assert isinstance(parse_frame('{"event": "posted", "data": {}, "seq": "x"}'), Malformed)
    assert isinstance(parse_frame('{"event": "posted", "data": [1]}'), Malformed)
    assert isinstance(parse_frame("{}"), Malformed)
    assert isinstance(parse_frame(""), Malformed)
    assert isinstance(parse_frame("null"), Malformed)


def test_raw_is_truncated() -> None:
    text = "x" * 5000
    event = parse_frame(text)
    assert isinstance(event, Malformed) and len(event.raw) == 500


@settings(max_examples=80, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=12,
        ).map(json.dumps),
        st.fixed_dictionaries(
            {
                "event": st.sampled_from(
                    ["hello", "posted", "post_edited", "post_deleted", "reaction_added", "reaction_removed", "typing"]
                ),
                "data": st.dictionaries(
                    st.sampled_from(["post", "reaction", "mentions", "connection_id", "team_id"]),
                    st.one_of(st.text(max_size=30), st.integers(), st.none(), st.just(json.dumps(POST))),
                    max_size=3,
                ),
                "seq": st.one_of(st.integers(), st.none(), st.text(max_size=3)),
            }
        ).map(json.dumps),
    )
)
def test_parse_frame_never_raises(text: str) -> None:
    parse_frame(text)
    parse_reply(text)
    # The stream's one decode gives what the two parsers give.
    reply = parse_reply(text)
    assert parse_message(text) == (reply if reply is not None else parse_frame(text))
