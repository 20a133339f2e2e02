"""Numeric limits and fixed texts that several layers share (from the Cloudflare reference)."""

from __future__ import annotations

MAX_BCW_DEPTH = 64
BCW_TIMEOUT_S = 30.0
MAX_RPC_NAME = 256

RESERVED_RPC_NAMES = frozenset({
    "fetch", "connect", "alarm", "webSocketMessage", "webSocketClose", "webSocketError",
    "websocket_message", "websocket_close", "websocket_error", "dup", "constructor",
    "on_fetch", "on_alarm", "on_webSocketMessage", "on_webSocketClose", "on_webSocketError",
})

TEXT_ABORT = "Application called abort() to reset Durable Object."
TEXT_CODE_UPDATED = "Durable Object reset because its code was updated."
TEXT_BCW_NESTED = "blockConcurrencyWhile() calls are nested too deeply."
TEXT_BCW_TIMEOUT = ("A call to blockConcurrencyWhile() in a Durable Object waited for too long. "
                    "The call was canceled and the Durable Object was reset.")
TEXT_OVERLOADED_QUEUE = "Durable Object is overloaded. Too many requests queued."
TEXT_OVERLOADED_BYTES = "Durable Object is overloaded. Too much data queued."
TEXT_OVERLOADED_AGE = "Durable Object is overloaded. Requests queued for too long."
TEXT_CPU_EXCEEDED = "Durable Object exceeded its CPU time limit and was reset."
TEXT_MEMORY_EXCEEDED = "Durable Object's isolate exceeded its memory limit and was reset."
TEXT_CPU_SHUTDOWN = ("The server is shutting down and this event was still running at the end of its drain time; "
                     "it was stopped and the Durable Object was reset.")
MAX_CPU_MS = 300_000  # Cloudflare's maximum limits.cpu_ms (5 minutes)
TEXT_DELETE_ALL_IN_TXN = "Cannot call deleteAll() within a transaction"

ALARM_HANDLER_TIMEOUT_S = 15 * 60.0  # wall time of one alarm() call (§5)
TEXT_ALARM_TIME_NOT_POSITIVE = "setAlarm() cannot be called with an alarm time <= 0"
TEXT_ALARM_NO_HANDLER = "Your Durable Object class must have an alarm() handler in order to call setAlarm()"


def reserved_method_text(name: str) -> str:
    return f"'{name}' is a reserved method and cannot be called over RPC."


def missing_method_text(name: str) -> str:
    return f'The RPC receiver does not implement the method "{name}".'
