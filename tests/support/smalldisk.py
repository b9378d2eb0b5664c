"""A small file system for the bot's database, to make its disk fill up or turn read-only
while the bot runs, as a real disk does.

A file-backed ext4 image, loop-mounted (``errors=remount-ro``) in the bot's own mount
namespace (``unshare --mount``), so nothing outside that process sees the mount and it goes
away, loop device included, when the bot exits. Needs root (``available``). The test reads
the database and fills the disk through ``/proc/<pid>/root``, which resolves paths in the
bot's namespace; it turns the file system read-only the way the kernel does on an I/O
error, through ext4's ``trigger_fs_error``.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from tests.support.botproc import BotProcess

MOUNT = 'mount -o loop,errors=remount-ro "$0" "$1" && shift && exec "$@"'


def available() -> str | None:
    """Why a small disk cannot be had here, or None."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces and loop devices)"
    missing = [tool for tool in ("unshare", "mkfs.ext4", "mount") if shutil.which(tool) is None]
    return f"needs {', '.join(missing)}" if missing else None


class SmallDisk:
    """``size_mb`` of ext4 at ``bot.workdir/disk``, the bot's database on it."""

    def __init__(self, bot: BotProcess, size_mb: int = 8) -> None:
        self.bot = bot
        self.image = bot.workdir / "disk.img"
        self.mount_point = bot.workdir / "disk"
        self.mount_point.mkdir()
        with open(self.image, "wb") as image:
            image.truncate(size_mb * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        bot.db_path = self.mount_point / "incident-bot.db"
        # sh -c SCRIPT IMAGE MOUNT_POINT ARGV...: IMAGE is mounted on MOUNT_POINT, then ARGV runs.
        mount_then = ["sh", "-c", MOUNT, str(self.image), str(self.mount_point)]
        bot.wrapper = ["unshare", "--mount", "--propagation", "private", *mount_then]

    def _pid(self) -> int:
        assert self.bot.proc is not None and self.bot.proc.returncode is None, "the bot is not running"
        return self.bot.proc.pid

    def inside(self, path: Path) -> Path:
        """``path`` as the running bot sees it."""
        return Path(f"/proc/{self._pid()}/root") / path.relative_to("/")

    def fill(self) -> None:
        """Write a file until the disk is full."""
        chunk = b"\0" * (64 * 1024)
        with open(self.inside(self.mount_point / "filler"), "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        # Small writes fill what the big ones left.
        with open(self.inside(self.mount_point / "filler2"), "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 512)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise

    def turn_read_only(self) -> None:
        """What the kernel does to ext4 mounted errors=remount-ro after an I/O error."""
        device = self._device()
        Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("incident-bot test\n")

    def _device(self) -> str:
        for line in Path(f"/proc/{self._pid()}/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4] == str(self.mount_point):
                source = fields[fields.index("-") + 2]
                return Path(source).name
        raise AssertionError(f"{self.mount_point} is not mounted in the bot's namespace")

    def db(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Query a copy of the database as it is on the small disk (the bot holds it open,
        and may not write it: the copy is read as a consistent whole)."""
        copy = self.bot.workdir / "db-copy"
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        for suffix in ("", "-wal"):
            source = self.inside(Path(f"{self.bot.db_path}{suffix}"))
            if source.exists():
                shutil.copyfile(source, copy / f"incident-bot.db{suffix}")
        con = sqlite3.connect(copy / "incident-bot.db")
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()
