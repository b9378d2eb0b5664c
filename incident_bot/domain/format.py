"""Pure formatting of times and durations, shared by the wording and the export."""

from __future__ import annotations

from datetime import datetime, timedelta


def format_duration(delta: timedelta) -> str:
    """``1h 02m``, ``0h 05m``, ``2d 3h 04m``; seconds are dropped (floor)."""
    total = max(int(delta.total_seconds()), 0)
    minutes_total = total // 60
    days, rem = divmod(minutes_total, 24 * 60)
    hours, minutes = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    return f"{hours}h {minutes:02d}m"


def format_short_duration(delta: timedelta) -> str:
    """``4m 10s`` for outages, ``1h 02m`` when longer than an hour."""
    total = max(int(delta.total_seconds()), 0)
    if total >= 3600:
        return format_duration(delta)
    minutes, seconds = divmod(total, 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def format_time(at: datetime) -> str:
    """``14:02 UTC``"""
    return at.strftime("%H:%M UTC")


def format_datetime(at: datetime) -> str:
    """``2026-11-26 14:02 UTC``"""
    return at.strftime("%Y-%m-%d %H:%M UTC")


def format_offset(start: datetime, at: datetime) -> str:
    """``+0h 12m`` (or ``-0h 03m`` for a pinned post older than the start)."""
    delta = at - start
    sign = "+" if delta >= timedelta(0) else "-"
    return sign + format_duration(abs(delta))
