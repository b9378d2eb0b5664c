"""The baseline of `make bench`: a stock mmpy_bot bot, as its documentation writes one.

Its own ``Bot`` and ``Settings``, mattermostautodriver's synchronous ``Driver`` and its
WebSocket, and one Plugin with one ``listen_to`` that replies in the thread. It answers
``help`` with the same text incident-bot sends, so both put the same bytes on the wire.

Run as ``python -m tests.bench.stock_bot`` with ``STOCK_BOT_URL`` and ``STOCK_BOT_TOKEN``.
"""

from __future__ import annotations

import logging
import os

from mmpy_bot import Bot, Plugin, Settings, listen_to
from mmpy_bot.wrappers import Message

from incident_bot.domain import messages

USERNAME = "stock-bot"
HELP_TEXT = messages.help_all(USERNAME)


class HelpPlugin(Plugin):
    @listen_to("^help$", needs_mention=True)
    async def help(self, message: Message) -> None:
        # mmpy_bot's own examples call the synchronous driver from async listeners.
        self.driver.reply_to(message, HELP_TEXT)


def main() -> None:
    url = os.environ["STOCK_BOT_URL"]  # http://127.0.0.1:PORT
    host_port = url.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    settings = Settings(
        MATTERMOST_URL=f"http://{host}",
        MATTERMOST_PORT=int(port),
        BOT_TOKEN=os.environ["STOCK_BOT_TOKEN"],
        SSL_VERIFY=False,
        LOG_LEVEL=logging.INFO,
    )
    Bot(settings=settings, plugins=[HelpPlugin()]).run()


if __name__ == "__main__":
    main()
