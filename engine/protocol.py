"""The one protocol between a run's server and its clients: JSON objects, one per line, both ways.

No torch here: the app imports it. Every message is an object with a "type":

client -> server
  {"type": "hello", "version": 1}                      first, always
  {"type": "request", "name": NAME, "args": {...}}     a Request class's name and fields (below)
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
  {"type": "error", "message": TEXT, "busy": true}     instead of a welcome: the server serves as
                                                       many connections as it may; it closes
EVENT is {"event": CLASS, ...fields} for a class of engine/events.py, each field of the type the
class declares (event_from_dict checks them: a peer's event is never trusted).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from charrnn_tui.engine import events as ev
from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.report_history import FIELDS as REPORT_FIELDS

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

VERSION = 1
MAX_LINE = 1 << 20  # bytes; a longer line is refused and its sender disconnected
# Temperatures a run samples at (set_temperature, prompt). Above 0 and at most MAX_TEMPERATURE is
# taken; a positive one under MIN_TEMPERATURE is raised to it, and its sender told: at 0.05 the
# likeliest token already wins unless others are within a fraction of a nat of it, and 1/T of a
# smaller one overflows the logits (1e-300 made top-k sampling fail). Nothing else is a temperature.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 10.0
# What a field of an event may hold (event_from_dict): a string, this many characters (a sample's
# text, a path, a message are far shorter); a list, this many items (a progress report's losses, a
# sample's probabilities); an integer, 64 bits.
MAX_TEXT = 1 << 20
MAX_ITEMS = 1 << 20
MAX_INT = 1 << 63

# name -> {argument: allowed types}; every argument is required unless None is allowed.
# What a request may ask of a run (Request.check; a request past them is refused, RequestRefused).
MAX_PROMPT_CHARS = 10_000  # characters of a prompt or of a text typed for its next tokens
MAX_PROMPT_LENGTH = 10_000  # tokens a prompt's continuation may ask for
MAX_EARLY_STOP = 10_000  # evaluations
MAX_TOP = 50  # next tokens a keystroke may ask for


class RequestRefused(ValueError):
    """A request the run will not take (out of range, too large, too many waiting); its text says why."""


@dataclass(frozen=True)
class Request:
    """What a client asks of a run: one class per request, its fields the request's arguments. The
    client sends it (request_message), the server checks it by type (parse_request) and the run by
    range (check), then queues it, and the training loop carries it out (engine/run/control.py,
    `Controls._carry_out`, a `match` on the class). A new request is a class here and a case there;
    a new setting of the loop's is a `Setting` here and a case in the loop's `_apply`."""

    name: ClassVar[str]  # on the wire
    what: ClassVar[str] = ""  # what messages call it ("the save"); its wire name where empty

    @classmethod
    def described(cls) -> str:
        return cls.what or cls.name

    def check(self) -> None:
        """RequestRefused when an argument is outside what a run takes."""


@dataclass(frozen=True)
class Setting(Request):
    """A request that changes one of the loop's own settings (the temperature, early stop, the live
    samples' interval): the controls hand it to the loop as it is (`Apply`), and the loop's `_apply`
    (engine/run/trainer.py) has its case, so a new one is a subclass here and that case there."""


@dataclass(frozen=True)
class Pause(Request):
    name: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume(Request):
    name: ClassVar[str] = "resume"


@dataclass(frozen=True)
class TogglePause(Request):
    name: ClassVar[str] = "toggle_pause"


@dataclass(frozen=True)
class Stop(Request):
    """End the run, saving first unless `save` is False. `unattended`: nobody is left to retry a
    failed save (the terminal or the parent has gone), so the run ends even then, rather than
    pausing as it does for a UI."""

    name: ClassVar[str] = "stop"
    save: bool = True
    unattended: bool = False


@dataclass(frozen=True)
class SaveNow(Request):
    name: ClassVar[str] = "save_now"
    what: ClassVar[str] = "the save"


@dataclass(frozen=True)
class SampleNow(Request):
    name: ClassVar[str] = "sample_now"
    what: ClassVar[str] = "the sample"


@dataclass(frozen=True)
class EvaluateNow(Request):
    name: ClassVar[str] = "evaluate_now"
    what: ClassVar[str] = "the evaluation"


@dataclass(frozen=True)
class SetTemperature(Setting):
    """The temperature of the live samples and prompts from now on: above 0 and at most
    MAX_TEMPERATURE, raised to MIN_TEMPERATURE when under it (its sender told)."""

    name: ClassVar[str] = "set_temperature"
    what: ClassVar[str] = "the temperature"
    temperature: float

    def check(self) -> None:
        check_temperature(self.temperature)


@dataclass(frozen=True)
class SetEarlyStop(Setting):
    """End the run after this many evaluations without a new best, from now on (None: never)."""

    name: ClassVar[str] = "set_early_stop"
    what: ClassVar[str] = "early stop"
    evaluations: int | None = None

    def check(self) -> None:
        if self.evaluations is not None and not 1 <= self.evaluations <= MAX_EARLY_STOP:
            raise RequestRefused(f"early stop takes 1 to {MAX_EARLY_STOP:,} evaluations, or none")


@dataclass(frozen=True)
class Prompt(Request):
    """Continue `text` (`length` tokens; the run's sample length when None), at `temperature`
    instead of the run's when given (the app's comparison of temperatures)."""

    name: ClassVar[str] = "prompt"
    what: ClassVar[str] = "the prompt"
    text: str
    length: int | None = None
    temperature: float | None = None

    def check(self) -> None:
        if len(self.text) > MAX_PROMPT_CHARS or (self.length is not None
                                                  and not 0 <= self.length <= MAX_PROMPT_LENGTH):
            raise RequestRefused(f"prompts are limited to {MAX_PROMPT_CHARS:,} characters and continuations to "
                                 f"{MAX_PROMPT_LENGTH:,} tokens")
        if self.temperature is not None:
            check_temperature(self.temperature)


@dataclass(frozen=True)
class AskNextTokens(Request):
    """The `top` tokens the model expects after `text` (a NextTokens event): a keystroke's."""

    name: ClassVar[str] = "next_tokens"
    what: ClassVar[str] = "the next tokens"
    text: str
    top: int = 5

    def check(self) -> None:
        if len(self.text) > MAX_PROMPT_CHARS or not 1 <= self.top <= MAX_TOP:
            raise RequestRefused(f"the text is limited to {MAX_PROMPT_CHARS:,} characters and top to 1-{MAX_TOP}")


@dataclass(frozen=True)
class SetSampleInterval(Setting):
    """Seconds between live samples from now on (0: none), at most a day."""

    name: ClassVar[str] = "set_sample_interval"
    what: ClassVar[str] = "the live samples' interval"
    seconds: float

    def check(self) -> None:
        if not 0 <= self.seconds <= 86_400:
            raise RequestRefused(f"the sample interval is 0 (off) to 86,400 seconds, not {self.seconds:g}")


@dataclass(frozen=True)
class Status(Request):
    """The run's status now; answered by the server itself (a "status" message), not the loop."""

    name: ClassVar[str] = "status"


def check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and 0 < temperature <= MAX_TEMPERATURE):
        raise RequestRefused(f"temperature must be above 0 and at most {MAX_TEMPERATURE:g}, not {temperature}")


def _requests(cls: type[Request]) -> list[type[Request]]:
    """Every request class under `cls` that has a wire name (not `Setting`, which groups some)."""
    found = []
    for sub in cls.__subclasses__():
        if "name" in vars(sub):
            found.append(sub)
        found += _requests(sub)
    return found


REQUEST_TYPES: dict[str, type[Request]] = {cls.name: cls for cls in _requests(Request)}

EVENT_TYPES: dict[str, type[ev.Event]] = {
    cls.__name__: cls for cls in vars(ev).values()
    if isinstance(cls, type) and issubclass(cls, ev.Event) and cls is not ev.Event
}


class ProtocolError(ValueError):
    """A message that does not follow the protocol; its text is what the peer is told."""


class BadEvent(ProtocolError):
    """An event of a known class with a field missing, of the wrong type or out of range: what a
    broken or hostile server sends (an unknown class is a newer server's, and a plain ProtocolError)."""


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


def request_message(request: Request) -> dict[str, Any]:
    """A request as sent. Arguments that are None are left out: the server takes them as their
    defaults, and a run started by an earlier version, which may not know a newer optional argument,
    still takes the request."""
    args = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    return {"type": "request", "name": request.name, "args": {k: v for k, v in args.items() if v is not None}}


def parse_request(message: dict[str, Any]) -> Request:
    """The request a message holds, each argument checked against the type its class declares (an
    integer is not a boolean; a number is finite); ProtocolError naming what is wrong otherwise. Its
    range is the run's to check (Request.check)."""
    if message.get("type") != "request":
        raise ProtocolError(f"unknown message type {str(message.get('type'))[:40]!r}")
    name, args = message.get("name"), message.get("args", {})
    if not isinstance(name, str) or name not in REQUEST_TYPES:
        raise ProtocolError(f"unknown request {str(name)[:40]!r}")
    if not isinstance(args, dict):
        raise ProtocolError(f"{name}: args must be an object")
    cls = REQUEST_TYPES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(args) - set(fields)
    if unknown:
        raise ProtocolError(f"{name}: unknown argument {sorted(unknown)[0][:40]!r}")
    hints = _hints(cls)
    values = {}
    for arg, f in fields.items():
        if arg not in args:
            if f.default is dataclasses.MISSING:
                raise ProtocolError(f"{name}: missing argument {arg!r}")
            continue
        values[arg] = _request_argument(hints[arg], args[arg], name, arg)
    return cls(**values)


def _request_argument(hint: Any, value: Any, name: str, arg: str) -> Any:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, bool):
        if bool in allowed:
            return value
        raise ProtocolError(f"{name}: {arg} has the wrong type")
    if isinstance(value, (int, float)) and (int in allowed or float in allowed):
        if isinstance(value, float) and float not in allowed:
            raise ProtocolError(f"{name}: {arg} has the wrong type")
        if not _reasonable(value):
            raise ProtocolError(f"{name}: {arg} is out of range")
        return float(value) if float in allowed else value
    if isinstance(value, str) and str in allowed:
        return value
    raise ProtocolError(f"{name}: {arg} has the wrong type")


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


def busy(message: str) -> dict[str, Any]:
    """What a server too full to serve one more connection sends it, instead of a welcome."""
    return {"type": "error", "message": message, "busy": True}


def event_from_dict(data: Any) -> ev.Event:
    """An event back from its dict, every field checked against the type its class declares: an
    integer (not a boolean) within 64 bits, a finite number, a string of at most MAX_TEXT
    characters, a list of at most MAX_ITEMS items of those, an object where the class holds a dict.
    BadEvent, naming the event and the field, otherwise. A newer server's extra fields are dropped,
    so an older client still understands it."""
    name = data.get("event") if isinstance(data, dict) else data
    if not isinstance(name, str) or name not in EVENT_TYPES:
        raise ProtocolError(f"unknown event {str(name)[:40]!r}")
    return _build(EVENT_TYPES[name], data, name, "")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The field types a request or event class declares, read once per class."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


_Built = TypeVar("_Built", bound="DataclassInstance")  # an event, or a dataclass an event holds (RunInfo)


def _build(cls: type[_Built], data: dict[str, Any], event: str, prefix: str) -> _Built:
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        where = prefix + f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BadEvent(f"event {event}: {where} is missing")
            continue
        values[f.name] = _convert(hints[f.name], data[f.name], event, where)
        schema = _DICT_FIELDS.get((cls, f.name))
        if schema is not None:
            schema(values[f.name], event, where)
    return cls(**values)


def _convert(hint: Any, value: Any, event: str, where: str) -> Any:
    """`value` as `hint` says (JSON lists back to the tuples the events hold, nested dataclasses
    back to themselves), or BadEvent."""
    if hint is Any:
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _bad(event, where, "an object", value)
        return _build(hint, value, event, where + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) != 1 or options[0] not in _SCALARS:  # the events hold no other unions
            raise TypeError(f"{hint} is not a type an event may hold")
        return _scalar(options[0], value, event, where, " or null")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) > MAX_ITEMS:
            raise _bad(event, where, f"a list of at most {MAX_ITEMS:,} items", value)
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, event, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _bad(event, where, f"a list of {len(args)}", value)
        return tuple(_convert(a, v, event, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict) or len(value) > MAX_ITEMS:
            raise _bad(event, where, "an object", value)
        return value
    if hint in _SCALARS:
        return _scalar(hint, value, event, where, "")
    raise TypeError(f"{hint} is not a type an event may hold")


_SCALARS = {
    bool: "true or false",
    int: "an integer",
    float: "a finite number",
    str: f"a string of at most {MAX_TEXT:,} characters",
}


def _scalar(hint: type, value: Any, event: str, where: str, or_null: str) -> Any:
    if hint is bool:
        ok = isinstance(value, bool)
    elif isinstance(value, bool):
        ok = False
    elif hint is int:
        ok = isinstance(value, int) and -MAX_INT <= value < MAX_INT
    elif hint is float:
        ok = isinstance(value, (int, float)) and _reasonable(value)
    else:
        ok = isinstance(value, str) and len(value) <= MAX_TEXT
    if not ok:
        raise _bad(event, where, _SCALARS[hint] + or_null, value)
    return value


def _bad(event: str, where: str, expected: str, value: Any) -> BadEvent:
    return BadEvent(f"event {event}: {where} must be {expected}, not {_kind(value)}")


def _kind(value: Any) -> str:
    """What a JSON value is, in a few words (never the value itself: it may be huge, or anything)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return "an integer" if -MAX_INT <= value < MAX_INT else f"an integer of {len(str(abs(value)))} digits"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else "NaN" if math.isnan(value) else \
            "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, str):
        return f"a string of {plural(len(value), 'character')}" if len(value) > MAX_TEXT else "a string"
    if isinstance(value, (list, tuple)):
        return f"a list of {plural(len(value), 'item')}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# Dicts an event holds whose keys clients read: the keys they read are checked (each may be left
# out), with what they need together. engine/history.py's LossHistory.from_dict reads these.
_LOSS_HISTORY: dict[str, Any] = {
    "steps": int, "first": float | None, "width": int, "means": tuple[float, ...], "lows": tuple[float, ...],
    "highs": tuple[float, ...], "recent": tuple[float, ...], "timeline": tuple[tuple[int, float], ...],
}
_CONFIG: dict[str, Any] = {"temperature": float, "early_stop": int | None}
_REPORTS: dict[str, Any] = {"width": int, "pending": int, "steps": tuple[int, ...],
                            **dict.fromkeys(REPORT_FIELDS, tuple[float | None, ...])}


def _keys(types_: dict[str, Any]) -> Any:
    def check(value: dict[str, Any], event: str, where: str) -> None:
        for key, hint in types_.items():
            if key in value:
                _convert(hint, value[key], event, f"{where}.{key}")
    return check


def _loss_history(value: dict[str, Any], event: str, where: str) -> None:
    _keys(_LOSS_HISTORY)(value, event, where)
    if "means" in value or value.get("first") is not None:  # a history, not just a count: all of it
        for key in ("steps", "first", "width", "means", "lows", "highs", "recent"):
            if key not in value:
                raise BadEvent(f"event {event}: {where}.{key} is missing")
        if not len(value["means"]) == len(value["lows"]) == len(value["highs"]):
            raise BadEvent(f"event {event}: {where}.means, lows and highs must be as long as each other")
        if value["width"] < 1 or value["steps"] < 0:
            raise BadEvent(f"event {event}: {where}.width must be at least 1 and steps at least 0")


def _report_history(value: dict[str, Any], event: str, where: str) -> None:
    _keys(_REPORTS)(value, event, where)
    if "steps" in value:  # a history: its bins line up, and its width holds what is pending
        if "width" not in value:
            raise BadEvent(f"event {event}: {where}.width is missing")
        if any(len(value.get(name) or value["steps"]) != len(value["steps"]) for name in REPORT_FIELDS):
            raise BadEvent(f"event {event}: {where}: each field must be as long as steps")
        if value["width"] < 1 or not 0 <= value.get("pending", 0) < value["width"]:
            raise BadEvent(f"event {event}: {where}.width must be at least 1 and pending from 0 to under it")


_DICT_FIELDS = {(ev.Started, "loss_history"): _loss_history, (ev.Started, "reports"): _report_history,
                (ev.RunInfo, "config"): _keys(_CONFIG)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
