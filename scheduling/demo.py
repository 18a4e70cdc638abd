"""Built-in demo work types, for people to try and for the tests."""

from __future__ import annotations

import os
import signal
import time

from project.exceptions import TransientError
from scheduling.registry import work_type


@work_type(
    "demo.noop",
    queue="default",
    max_attempts=3,
    payload_schema={"type": "object", "additionalProperties": False, "properties": {}},
)
def noop(ctx, payload):
    """Does nothing: measures the platform's own overhead."""
    return {"ok": True}


@work_type(
    "demo.sleep",
    queue="default",
    payload_schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": 86400,
                "default": 1,
                "description": "How long to sleep.",
            },
        },
    },
)
def sleep(ctx, payload):
    """Sleeps for `seconds`, stopping early if cancelled."""
    ctx.sleep(payload["seconds"])
    return {"slept": payload["seconds"]}


@work_type(
    "demo.progress",
    queue="default",
    payload_schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "steps": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10000,
                "default": 10,
                "description": "Number of steps.",
            },
            "step_seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": 3600,
                "default": 0.5,
                "description": "Seconds per step.",
            },
            "cost_per_step": {
                "type": "number",
                "minimum": 0,
                "maximum": 1e9,
                "default": 0,
                "description": "Cost charged after each step (ctx.charge), for budget demos.",
            },
        },
    },
)
def progress(ctx, payload):
    """Works through `steps` steps, reporting progress (and charging cost) after each."""
    steps = payload["steps"]
    for step in range(1, steps + 1):
        ctx.sleep(payload["step_seconds"])
        if payload["cost_per_step"]:
            ctx.charge(payload["cost_per_step"], "credits")
        ctx.progress(step / steps, f"step {step} of {steps}")
    return {"steps": steps}


@work_type(
    "demo.stuck",
    queue="default",
    stall_after=30,
    max_stalls=2,
    payload_schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": 86400,
                "default": 600,
                "description": "How long to hang after the first progress report.",
            },
        },
    },
)
def stuck(ctx, payload):
    """Reports 10% progress, then hangs without progress while its lease stays
    fresh: alive but not progressing, for the stall monitor."""
    ctx.progress(0.1, "started, then stuck")
    ctx.sleep(payload["seconds"])
    return {"hung": payload["seconds"]}


@work_type(
    "demo.fail",
    queue="default",
    max_attempts=3,
    payload_schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "times": {
                "type": "integer",
                "minimum": 0,
                "maximum": 100,
                "default": 1,
                "description": "How many attempts fail before one succeeds.",
            },
        },
    },
)
def fail(ctx, payload):
    """Fails its first `times` attempts with a transient error, then succeeds."""
    if ctx.attempt <= payload["times"]:
        raise TransientError(f"planned failure on attempt {ctx.attempt} of {payload['times']}")
    return {"attempt": ctx.attempt}


@work_type(
    "demo.crash",
    queue="default",
    max_attempts=3,
    payload_schema={"type": "object", "additionalProperties": False, "properties": {}},
)
def crash(ctx, payload):
    """Kills its own process with SIGKILL: a poison item."""
    ctx.logger.warning("demo.crash: killing pid %s", os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # pragma: no cover - the signal arrives first


@work_type(
    "demo.cpu",
    queue="cpu",
    payload_schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "n": {
                "type": "integer",
                "minimum": 2,
                "maximum": 50_000_000,
                "default": 1_000_000,
                "description": "Count the primes below n.",
            },
        },
    },
)
def cpu(ctx, payload):
    """Counts the primes below `n` with a sieve (CPU-bound)."""
    n = payload["n"]
    sieve = bytearray([1]) * n
    sieve[0:2] = b"\x00\x00"
    for p in range(2, int(n**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytes(len(range(p * p, n, p)))
        if p % 512 == 0:
            ctx.check_cancelled()
    return {"n": n, "primes": sum(sieve)}
