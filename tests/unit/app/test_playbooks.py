"""Team playbooks, in-process."""

from __future__ import annotations

from tests.support.inprocess import App


async def test_create_add_remove_delete_a_team_playbook(app: App) -> None:
    await app.say(app.alice, "playbook create web-outage Check CDN; Roll back")
    assert "Check CDN" in await app.say(app.alice, "playbook show web-outage")
    await app.say(app.alice, "playbook add web-outage Tell support")
    assert "Tell support" in await app.say(app.alice, "playbook show web-outage")
    await app.say(app.alice, "playbook remove web-outage 1")
    assert "Check CDN" not in await app.say(app.alice, "playbook show web-outage")
    listing = await app.say(app.alice, "playbooks")
    assert "database" in listing and "web-outage" in listing
    await app.say(app.alice, "playbook delete web-outage")
    assert "web-outage" not in await app.say(app.alice, "playbooks")


async def test_config_playbooks_are_read_only_and_dms_need_a_team(app: App) -> None:
    assert (await app.say(app.alice, "playbook add database x")).startswith(
        "Playbook `database` comes from the config file and is read-only"
    )
    assert (await app.dm(app.alice, "playbooks")).startswith("Which team? You share several with me (ops, web)")
    assert "database" in await app.dm(app.dave, "playbooks")
