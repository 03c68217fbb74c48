"""Durations for people: the one formatter the service uses in its messages."""

from __future__ import annotations


def human_duration(seconds: float) -> str:
    """``45s``, ``5m``, ``5m 3s``, ``26h``, ``27h 3m``, ``3d 4h``."""
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes}m" + (f" {secs}s" if secs else "")
    if hours < 48:
        return f"{hours}h" + (f" {minutes}m" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days}d" + (f" {hours}h" if hours else "")
