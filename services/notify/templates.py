"""Clinic-editable email templates: one subject, text and HTML part per message kind.

A clinic admin writes Jinja2, so a template is code from outside. Two walls keep it harmless:
before anything is compiled, the syntax tree is checked against a small allowlist (text,
variables, filters, ``{% if %}``, comparisons, ``~ + -``), which also makes rendering take
time and memory in proportion to the template (no loops, macros, ``set`` or ``*``, which can
double a string per step); behind that, the sandbox refuses every attribute and call of any
value. Values are escaped in the HTML part and never in the subject or the text part.
"""

import functools
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field

from contracts.notify import MessageKind

Part = Literal["subject", "text", "html"]
PARTS: tuple[Part, ...] = ("subject", "text", "html")
MAX_RENDERED = 200_000
"""Characters a part may render to; a mail client would choke long before."""

_SESSION = {
    "clinic_name": "The clinic's name.",
    "practitioner_name": "The practitioner's name, as the clinic shows it.",
    "recipient_name": "The recipient's name; may be empty (not allowed in the subject).",
    "date": "The session's date in the clinic's time zone, e.g. 'Tuesday 24 November 2026'.",
    "start_time": "When the session starts, e.g. '14:00'.",
    "end_time": "When the session ends, e.g. '14:50'.",
    "time_zone": "The clinic's time zone, e.g. 'Europe/Berlin'.",
    "duration_minutes": "How long the session lasts, in minutes (a number).",
    "opens_at": "When the link starts to work, e.g. '13:50' (the start minus early join); "
    "empty for a room's link, which is always open.",
    "room_title": "The title the practitioner gave the room the session is held in; empty for "
    "a session with a link of its own (may name the client: not allowed in the subject).",
}
_JOIN = {
    "join_url": "The recipient's link to the session.",
    "link_personal": "True when the link is the recipient's own, not to be shared (a "
    "session's, a client room's, a drop-in link); false for a practitioner's room, whose "
    "link is public: anyone may knock, the practitioner lets them in.",
}

VARIABLES: dict[MessageKind, dict[str, str]] = {
    MessageKind.invitation: _SESSION | _JOIN,
    MessageKind.update: _SESSION
    | _JOIN
    | {
        "previous_date": "The date the session was on before it moved.",
        "previous_start_time": "The time the session started at before it moved.",
    },
    MessageKind.cancellation: dict(_SESSION),
    MessageKind.new_link: _SESSION
    | _JOIN
    | {
        "previous_link_until": "A retired link: until when the previous link still works, "
        "e.g. '15:30 on Monday 23 November 2026'; empty when it stopped at once (regenerated)."
    },
    MessageKind.reminder: _SESSION
    | _JOIN
    | {"starts_in": "How soon the session starts: 'in 24 hours', 'in 1 hour', 'in 30 minutes'."},
}
"""What each kind's templates can use (a cancellation has no link to join)."""

PERSONAL_VARIABLES = frozenset({"recipient_name", "room_title"})
"""Refused in subjects: a subject shows on lock screens and in shared inboxes."""

FILTERS: dict[str, str] = {
    "upper": "In capitals: {{ clinic_name|upper }}.",
    "lower": "In small letters.",
    "capitalize": "First letter in capitals, the rest in small letters.",
    "title": "Each Word Starting With A Capital.",
    "trim": "Without spaces at either end.",
    "truncate": "Shortened, with '...' at the end: {{ clinic_name|truncate(30) }}.",
    "default": "A fallback for an empty value: {{ recipient_name|default('there', true) }}.",
    "length": "The number of characters.",
    "urlencode": "Made safe to put in a link.",
}
"""The filters templates can use; there are no functions or global values."""

_SAMPLE_SESSION: dict[str, object] = {
    "clinic_name": "Riverside Practice",
    "practitioner_name": "Dr. Maria Keller",
    "recipient_name": "Alex Morgan",
    "date": "Tuesday 24 November 2026",
    "start_time": "14:00",
    "end_time": "14:50",
    "time_zone": "Europe/Berlin",
    "duration_minutes": 50,
    "opens_at": "13:50",
    "room_title": "",
}
_SAMPLE_JOIN = {
    "join_url": "https://video.example.org/s/7Hq2xkP9aZ?lang=en&via=mail",
    "link_personal": True,
}
SAMPLE_CONTEXT: dict[MessageKind, dict[str, object]] = {
    MessageKind.invitation: _SAMPLE_SESSION | _SAMPLE_JOIN,
    MessageKind.update: _SAMPLE_SESSION
    | _SAMPLE_JOIN
    | {"previous_date": "Monday 23 November 2026", "previous_start_time": "09:30"},
    MessageKind.cancellation: dict(_SAMPLE_SESSION),
    MessageKind.new_link: _SAMPLE_SESSION | _SAMPLE_JOIN | {"previous_link_until": ""},
    MessageKind.reminder: _SAMPLE_SESSION | _SAMPLE_JOIN | {"starts_in": "in 1 hour"},
}
"""Values every template is test-rendered with before it is accepted."""


class TemplateSet(BaseModel):
    """The three Jinja2 sources of one message kind, as a clinic stores them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(max_length=500, description="One line; no recipient_name.")
    text: str = Field(max_length=50_000, description="The plain-text part.")
    html: str = Field(max_length=50_000, description="The HTML part; values are escaped.")


class TemplateProblem(BaseModel):
    model_config = ConfigDict(frozen=True)

    part: Part
    line: int | None = Field(default=None, description="1-based line in that part, if known.")
    reason: str = Field(description="What is wrong, for the person editing the template.")


class TemplateInvalid(ValueError):
    def __init__(self, problems: list[TemplateProblem]) -> None:
        super().__init__(" ".join(f"{_where(p)}: {p.reason}" for p in problems))
        self.problems = problems


def _where(problem: TemplateProblem) -> str:
    line = "" if problem.line is None else f", line {problem.line}"
    return f"In the {problem.part} template{line}"


class RenderError(ValueError):
    """A message could not be rendered; the sender records a failed delivery."""


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


def validate(kind: MessageKind, templates: TemplateSet) -> None:
    """Accept a template set only if it renders for ``kind``; else list every problem."""
    problems = [p for part in PARTS for p in _problems(kind, part, getattr(templates, part))]
    if problems:
        raise TemplateInvalid(problems)


def render(
    kind: MessageKind, templates: TemplateSet, context: Mapping[str, object]
) -> RenderedMessage:
    """Only ``kind``'s variables reach the templates, whatever else ``context`` holds."""
    values = {name: context[name] for name in VARIABLES[kind] if name in context}
    subject, text, html = (_render(kind, part, getattr(templates, part), values) for part in PARTS)
    subject = " ".join(subject.split())
    if not subject:
        raise RenderError("In the subject template: The subject renders empty.")
    return RenderedMessage(subject, text, html)


def _problems(kind: MessageKind, part: Part, source: str) -> list[TemplateProblem]:
    parsed = _parse(part, source)
    problems = [*parsed.problems, *_variable_problems(kind, part, parsed.names)]
    if problems or parsed.template is None:
        return problems
    try:
        output = _output(part, parsed.template, SAMPLE_CONTEXT[kind])
    except TemplateInvalid as invalid:
        return invalid.problems
    if part == "subject" and len(output.strip().splitlines()) != 1:
        reason = "The subject must render to exactly one line of text."
        return [TemplateProblem(part=part, reason=reason)]
    return []


def _render(kind: MessageKind, part: Part, source: str, values: Mapping[str, object]) -> str:
    parsed = _parse(part, source)
    problems = [*parsed.problems, *_variable_problems(kind, part, parsed.names)]
    if problems or parsed.template is None:
        raise RenderError(str(TemplateInvalid(problems[:1])))
    try:
        return _output(part, parsed.template, values)
    except TemplateInvalid as invalid:
        raise RenderError(str(invalid)) from invalid


# -- the two walls ------------------------------------------------------------------------------


class _Sandbox(ImmutableSandboxedEnvironment):
    """No attribute, item-by-name or call of any value; the structure check allows none."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return False

    def is_safe_callable(self, obj: Any) -> bool:
        return False


def _environment(autoescape: bool) -> _Sandbox:
    environment = _Sandbox(
        autoescape=autoescape, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    environment.globals.clear()  # range, dict, lipsum, cycler, joiner, namespace
    environment.filters = {name: environment.filters[name] for name in FILTERS}
    return environment


_PLAIN = _environment(autoescape=False)
_HTML = _environment(autoescape=True)

_ALLOWED: frozenset[type[nodes.Node]] = frozenset(
    {
        nodes.Template,
        nodes.Output,
        nodes.TemplateData,
        nodes.Const,
        nodes.Name,
        nodes.List,
        nodes.Tuple,
        nodes.If,
        nodes.CondExpr,
        nodes.And,
        nodes.Or,
        nodes.Not,
        nodes.Compare,
        nodes.Operand,
        nodes.Concat,
        nodes.Add,
        nodes.Sub,
        nodes.Neg,
        nodes.Pos,
        nodes.Filter,
        nodes.Test,
        nodes.Keyword,
    }
)
_CONSTRUCTS: dict[type[nodes.Node], str] = {
    nodes.For: "{% for %}",
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.Assign: "{% set %}",
    nodes.AssignBlock: "{% set %}",
    nodes.With: "{% with %}",
    nodes.FilterBlock: "{% filter %}",
    nodes.Block: "{% block %}",
    nodes.Extends: "{% extends %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from %}",
    nodes.Scope: "{% autoescape %}",
    nodes.Call: "calls to functions or methods",
    nodes.Getattr: "attributes of values",
    nodes.Getitem: "parts of values",
    nodes.Mul: "'*'",
    nodes.Pow: "'**'",
    nodes.Mod: "'%'",
    nodes.Div: "'/'",
    nodes.FloorDiv: "'//'",
    nodes.Dict: "dictionaries",
}


@dataclass(frozen=True)
class _Parsed:
    template: Template | None
    names: dict[str, int]
    """Every variable used, with the line it first appears on."""
    problems: tuple[TemplateProblem, ...]


@functools.lru_cache(maxsize=1024)
def _parse(part: Part, source: str) -> _Parsed:
    """Check and compile once per source: a clinic's templates render for every message."""
    environment = _HTML if part == "html" else _PLAIN
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as error:
        return _Parsed(None, {}, (_syntax_problem(part, error),))
    except RecursionError:
        problem = TemplateProblem(part=part, reason="The template is nested too deeply.")
        return _Parsed(None, {}, (problem,))
    names: dict[str, int] = {}
    problems = tuple(_check(part, tree, names))
    if problems:
        return _Parsed(None, names, problems)
    try:
        # Only now: compiling folds constants, so an unchecked '10 ** 10 ** 10' would hang here.
        template = environment.from_string(tree)
    except TemplateSyntaxError as error:  # also an unknown test: 'is frobnicated'
        return _Parsed(None, names, (_syntax_problem(part, error),))
    return _Parsed(template, names, ())


def _syntax_problem(part: Part, error: TemplateSyntaxError) -> TemplateProblem:
    reason = _sentence(error.message or "syntax error")
    return TemplateProblem(part=part, line=error.lineno, reason=reason)


def _check(part: Part, node: nodes.Node, names: dict[str, int]) -> list[TemplateProblem]:
    """Problems in the tree under ``node``; a refused construct's inside is not looked at."""
    if type(node) not in _ALLOWED:
        # A {% autoescape %} block's Scope carries no line; the block's first statement does.
        line = next((n.lineno for n in [node, *node.find_all(nodes.Node)] if n.lineno), None)
        return [TemplateProblem(part=part, line=line, reason=_refusal(node))]
    if isinstance(node, nodes.Filter) and node.name not in FILTERS:
        reason = f"Unknown filter '{node.name}'; templates can use: {', '.join(FILTERS)}."
        return [TemplateProblem(part=part, line=node.lineno, reason=reason)]
    if isinstance(node, nodes.Name):
        # With no set, for, with or macro allowed, every name is a variable from the context.
        names.setdefault(node.name, node.lineno)
    return [problem for child in node.iter_child_nodes() for problem in _check(part, child, names)]


def _refusal(node: nodes.Node) -> str:
    reaches = [node, *node.find_all((nodes.Getattr, nodes.Getitem))]
    internal = next(filter(None, map(_internal, reaches)), None)
    if internal:
        return f"The template tried to reach Python internals ('{internal}'), which it may not."
    construct = _CONSTRUCTS.get(type(node), "this construct")
    return (
        f"Templates cannot use {construct}; they can use variables, filters, {{% if %}} and "
        "comparisons."
    )


def _internal(node: nodes.Node) -> str | None:
    """The name a ``.name`` or ``['name']`` reaches for, if it is one of Python's own."""
    name: object = None
    if isinstance(node, nodes.Getattr):
        name = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        name = node.arg.value
    return name if isinstance(name, str) and name.startswith("_") else None


def _variable_problems(
    kind: MessageKind, part: Part, names: Mapping[str, int]
) -> list[TemplateProblem]:
    problems = []
    for name, line in names.items():
        if name not in VARIABLES[kind]:
            usable = ", ".join(VARIABLES[kind])
            others = ", ".join(str(other) for other in MessageKind if name in VARIABLES[other])
            reason = (
                f"The {kind} template cannot use '{name}' (only {others} templates can); "
                f"it can use: {usable}."
                if others
                else f"Unknown variable '{name}'; the {kind} template can use: {usable}."
            )
            problems.append(TemplateProblem(part=part, line=line, reason=reason))
        elif part == "subject" and name in PERSONAL_VARIABLES:
            reason = (
                f"The subject may not contain '{name}': subjects show on lock screens and in "
                "shared inboxes, so they carry no personal details."
            )
            problems.append(TemplateProblem(part=part, line=line, reason=reason))
    return problems


def _output(part: Part, template: Template, values: Mapping[str, object]) -> str:
    try:
        output = template.render(values)
    except Exception as error:
        if isinstance(error, SecurityError):
            reason = f"The template tried to reach Python internals ({error}), which it may not."
        else:
            reason = _sentence(f"The template could not be rendered: {error}")
        problem = TemplateProblem(part=part, line=_line(error), reason=reason)
        raise TemplateInvalid([problem]) from error
    if len(output) > MAX_RENDERED:
        reason = f"The template renders to more than {MAX_RENDERED:,} characters."
        raise TemplateInvalid([TemplateProblem(part=part, reason=reason)])
    return output


def _line(error: BaseException) -> int | None:
    """Jinja rewrites a render error's traceback so template frames carry template lines."""
    frames = traceback.extract_tb(error.__traceback__)
    lines = [frame.lineno for frame in frames if frame.filename == "<template>"]
    return lines[-1] if lines else None


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


# -- defaults -----------------------------------------------------------------------------------

_HELLO = "Hello{% if recipient_name %} {{ recipient_name }}{% endif %},"
_WHEN = "{{ date }}, {{ start_time }} to {{ end_time }} ({{ time_zone }})"
_LINK_NOTE = (
    "{% if opens_at %}The link opens at {{ opens_at }}. {% endif %}"
    "{% if link_personal %}This link is personal to you: please do not share it or forward "
    "this email.{% else %}This is {{ practitioner_name }}'s room: you wait there until you "
    "are let in.{% endif %} "
    "Open it in a web browser on a device with a camera and microphone."
)
_IN_ROOM = "{% if room_title %} in the room “{{ room_title }}”{% endif %}"


def _text(*paragraphs: str) -> str:
    return "\n\n".join([_HELLO, *paragraphs, "{{ clinic_name }}"]) + "\n"


def _html(*paragraphs: str, join: bool) -> str:
    p = '<p style="margin:0 0 16px;">'
    body = [f"{p}{_HELLO}</p>", *(f"{p}{paragraph}</p>" for paragraph in paragraphs)]
    if join:
        body += [
            '<p style="margin:24px 0;"><a href="{{ join_url }}" style="display:inline-block;'
            "padding:12px 24px;background:#1a5fb4;color:#ffffff;text-decoration:none;"
            'border-radius:6px;font-weight:bold;">Join the session</a></p>',
            '<p style="margin:0 0 16px;font-size:14px;color:#52606d;">Or copy this link into '
            'your browser:<br><a href="{{ join_url }}" style="color:#1a5fb4;word-break:break-all;">'
            "{{ join_url }}</a></p>",
            f'<p style="margin:0 0 16px;font-size:14px;color:#52606d;">{_LINK_NOTE}</p>',
        ]
    body.append(p + "{{ clinic_name }}</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{{ clinic_name }}</title></head>\n"
        '<body style="margin:0;padding:24px;background:#f4f5f7;'
        'font-family:Arial,Helvetica,sans-serif;font-size:16px;line-height:1.5;color:#1f2933;">\n'
        '<div style="max-width:560px;margin:0 auto;padding:32px;background:#ffffff;'
        'border-radius:8px;">\n' + "\n".join(body) + "\n</div>\n</body>\n</html>\n"
    )


def _defaults(subject: str, *paragraphs: str, join: bool = True) -> TemplateSet:
    text = [*paragraphs, "Join: {{ join_url }}", _LINK_NOTE] if join else list(paragraphs)
    html = [paragraph.replace("\n", "<br>\n") for paragraph in paragraphs]
    return TemplateSet(subject=subject, text=_text(*text), html=_html(*html, join=join))


DEFAULT_TEMPLATES: dict[MessageKind, TemplateSet] = {
    MessageKind.invitation: _defaults(
        "Your video session with {{ practitioner_name }} on {{ date }}",
        "{{ practitioner_name }} at {{ clinic_name }} has invited you to a video session"
        + _IN_ROOM
        + ".",
        f"When: {_WHEN}",
    ),
    MessageKind.update: _defaults(
        "Your video session with {{ practitioner_name }} has moved to {{ date }}",
        "Your video session with {{ practitioner_name }} at {{ clinic_name }}"
        + _IN_ROOM
        + " has moved.",
        "New time: " + _WHEN + "\nPreviously: {{ previous_date }}, {{ previous_start_time }}",
    ),
    MessageKind.cancellation: _defaults(
        "Cancelled: your video session with {{ practitioner_name }} on {{ date }}",
        "Your video session with {{ practitioner_name }} at {{ clinic_name }}"
        + _IN_ROOM
        + " on {{ date }} at {{ start_time }} ({{ time_zone }}) has been cancelled and will "
        "not take place.",
        "If you would like a new appointment, please get in touch with {{ clinic_name }}.",
        join=False,
    ),
    MessageKind.new_link: _defaults(
        "A new link for your video session with {{ practitioner_name }} on {{ date }}",
        "Your link to the video session with {{ practitioner_name }} at {{ clinic_name }}"
        + _IN_ROOM
        + " has been replaced{% if previous_link_until %}: the previous link works until "
        "{{ previous_link_until }}, then stops{% else %}: the previous link no longer works"
        "{% endif %}. Please use the new link below from now on.",
        f"When: {_WHEN}",
    ),
    MessageKind.reminder: _defaults(
        "Reminder: your video session with {{ practitioner_name }} starts {{ starts_in }}",
        "Your video session with {{ practitioner_name }} at {{ clinic_name }}"
        + _IN_ROOM
        + " starts {{ starts_in }}.",
        f"When: {_WHEN}",
    ),
}
