"""The one protocol between a run's server and its clients: JSON objects, one per line, both ways.

No torch here: the app imports it. Every message is an object with a "type":

client -> server
  {"type": "hello", "version": 1}                      first, always
  {"type": "request", "name": NAME, "args": {...}}     NAME and args as in REQUESTS
server -> client
  {"type": "welcome", "version": 1, "run": NAME, "events": [EVENT, ...]}
        the run so far, as the events a client that had watched from the start would have kept
  {"type": "event", "event": EVENT}                    then every event as it happens; a Notice
                                                       also goes to one client alone: what the run
                                                       says about its request (it failed, a
                                                       temperature was raised to MIN_TEMPERATURE)
  {"type": "status", "status": {...}}                  the answer to a "status" request
  {"type": "error", "message": TEXT}                   a bad message (the connection stays) or a
                                                       refusal (version, too slow: then it closes)
EVENT is {"event": CLASS, ...fields} for a class of engine/events.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any

from . import events as ev

VERSION = 1
MAX_LINE = 1 << 20  # bytes; a longer line is refused and its sender disconnected
# Temperatures a run samples at (set_temperature, prompt). Above 0 and at most MAX_TEMPERATURE is
# taken; a positive one under MIN_TEMPERATURE is raised to it, and its sender told: at 0.05 the
# likeliest token already wins unless others are within a fraction of a nat of it, and 1/T of a
# smaller one overflows the logits (1e-300 made top-k sampling fail). Nothing else is a temperature.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 10.0

# name -> {argument: allowed types}; every argument is required unless None is allowed.
REQUESTS: dict[str, dict[str, tuple[type, ...]]] = {
    "pause": {},
    "resume": {},
    "toggle_pause": {},
    "save_now": {},
    "sample_now": {},
    "evaluate_now": {},
    "stop": {"save": (bool,)},
    "set_temperature": {"temperature": (int, float)},
    "set_early_stop": {"evaluations": (int, type(None))},
    "prompt": {"text": (str,), "length": (int, type(None)), "temperature": (int, float, type(None))},
    "next_tokens": {"text": (str,), "top": (int, type(None))},
    "status": {},
}

EVENT_TYPES: dict[str, type[ev.Event]] = {
    cls.__name__: cls for cls in vars(ev).values()
    if isinstance(cls, type) and issubclass(cls, ev.Event) and cls is not ev.Event
}


class ProtocolError(ValueError):
    """A message that does not follow the protocol; its text is what the peer is told."""


def encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message, separators=(",", ":"), default=_jsonable) + "\n").encode()


def decode(line: bytes, limit: int = MAX_LINE) -> dict[str, Any]:
    if len(line) > limit:
        raise ProtocolError(f"message of {len(line):,} bytes; the limit is {limit:,}")
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep, a 5,000-digit number
        raise ProtocolError("not a JSON object") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("not a JSON object with a type")
    return message


def hello() -> dict[str, Any]:
    return {"type": "hello", "version": VERSION}


def check_hello(message: dict[str, Any]) -> None:
    if message.get("type") != "hello":
        raise ProtocolError("the first message must be hello")
    version = message.get("version")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version!r}; this run speaks version {VERSION}: "
                            "use the same charrnn-tui as the run's")


def request(name: str, **args: Any) -> dict[str, Any]:
    return {"type": "request", "name": name, "args": args}


def parse_request(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, args) of a well-formed request; ProtocolError naming what is wrong otherwise."""
    if message.get("type") != "request":
        raise ProtocolError(f"unknown message type {str(message.get('type'))[:40]!r}")
    name, args = message.get("name"), message.get("args", {})
    if not isinstance(name, str) or name not in REQUESTS:
        raise ProtocolError(f"unknown request {str(name)[:40]!r}")
    if not isinstance(args, dict):
        raise ProtocolError(f"{name}: args must be an object")
    spec = REQUESTS[name]
    unknown = set(args) - set(spec)
    if unknown:
        raise ProtocolError(f"{name}: unknown argument {sorted(unknown)[0][:40]!r}")
    for arg, allowed in spec.items():
        value = args.get(arg)
        if arg not in args and type(None) not in allowed:
            raise ProtocolError(f"{name}: missing argument {arg!r}")
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ProtocolError(f"{name}: {arg} has the wrong type")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not _reasonable(value):
            raise ProtocolError(f"{name}: {arg} is out of range")
    return name, {arg: args.get(arg) for arg in spec}


def _reasonable(number: int | float) -> bool:
    """Finite and within a float's range: what a temperature or a length can be."""
    try:
        return math.isfinite(float(number))
    except OverflowError:
        return False


def event_message(event: ev.Event) -> dict[str, Any]:
    return {"type": "event", "event": event_to_dict(event)}


def event_to_dict(event: ev.Event) -> dict[str, Any]:
    return {"event": type(event).__name__, **dataclasses.asdict(event)}


def event_from_dict(data: Any) -> ev.Event:
    """An event back from its dict, its fields checked against the class (a newer server's extra
    fields are dropped, so an older client still understands it)."""
    if not isinstance(data, dict) or data.get("event") not in EVENT_TYPES:
        raise ProtocolError(f"unknown event {str(data.get('event') if isinstance(data, dict) else data)[:40]!r}")
    return _build(EVENT_TYPES[data["event"]], data)


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{cls.__name__} without {f.name}")
            continue
        values[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**values)


def _convert(hint: Any, value: Any) -> Any:
    """JSON lists back to the tuples the events hold, nested dataclasses back to themselves."""
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _build(hint, value)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(options[0], value) if len(options) == 1 else value
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_convert(inner, v) for v in value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
