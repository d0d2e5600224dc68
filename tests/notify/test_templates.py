"""Clinic templates: the defaults work, mistakes are explained, and nothing reaches Python."""

from typing import Any

import pytest

from contracts.notify import MessageKind
from services.notify import templates
from services.notify.templates import (
    DEFAULT_TEMPLATES,
    PERSONAL_VARIABLES,
    SAMPLE_CONTEXT,
    VARIABLES,
    RenderError,
    TemplateInvalid,
    TemplateSet,
    render,
    validate,
)

INVITATION = DEFAULT_TEMPLATES[MessageKind.invitation]


def problems(kind: MessageKind, **parts: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(TemplateInvalid) as raised:
        validate(kind, DEFAULT_TEMPLATES[kind].model_copy(update=parts))
    return [(p.part, p.line, p.reason) for p in raised.value.problems]


def assert_sentence(text: str) -> None:
    assert text[0].isupper(), text
    assert text.endswith("."), text


# -- the defaults --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MessageKind))
def test_every_default_validates_and_renders(kind: MessageKind) -> None:
    validate(kind, DEFAULT_TEMPLATES[kind])
    message = render(kind, DEFAULT_TEMPLATES[kind], SAMPLE_CONTEXT[kind])

    assert message.subject
    assert "\n" not in message.subject
    assert "Dr. Maria Keller" in message.subject
    assert "{{" not in message.text + message.html
    assert "Riverside Practice" in message.text
    assert "<script" not in message.html
    assert "src=" not in message.html  # no external images or fonts


@pytest.mark.parametrize("kind", list(MessageKind))
def test_subjects_carry_no_recipient_name(kind: MessageKind) -> None:
    context = SAMPLE_CONTEXT[kind] | {"recipient_name": "Alex Morgan"}
    message = render(kind, DEFAULT_TEMPLATES[kind], context)

    assert "Alex" not in message.subject
    assert "Alex Morgan" in message.text


@pytest.mark.parametrize("kind", [k for k in MessageKind if k is not MessageKind.cancellation])
def test_link_messages_show_the_link_and_say_it_is_personal(kind: MessageKind) -> None:
    message = render(kind, DEFAULT_TEMPLATES[kind], SAMPLE_CONTEXT[kind])
    url = str(SAMPLE_CONTEXT[kind]["join_url"])

    assert url in message.text
    assert "Join the session" in message.html
    assert f'href="{url.replace("&", "&amp;")}"' in message.html
    for part in (message.text, message.html):
        assert "opens at 13:50" in part
        assert "do not share" in part


@pytest.mark.parametrize("kind", [k for k in MessageKind if k is not MessageKind.cancellation])
def test_a_practitioners_room_is_neither_personal_nor_opening_at_a_time(kind: MessageKind) -> None:
    context = SAMPLE_CONTEXT[kind] | {"opens_at": "", "link_personal": False}
    message = render(kind, DEFAULT_TEMPLATES[kind], context)

    for part in (message.text, message.html):
        assert "opens at" not in part
        assert "personal" not in part
        assert "Dr. Maria Keller's room" in part


@pytest.mark.parametrize("kind", list(MessageKind))
def test_a_rooms_title_is_in_the_body_and_never_in_the_subject(kind: MessageKind) -> None:
    context = SAMPLE_CONTEXT[kind] | {"room_title": "Alex's Tuesday check-ins"}
    message = render(kind, DEFAULT_TEMPLATES[kind], context)

    assert "in the room \u201cAlex's Tuesday check-ins\u201d" in message.text
    assert "in the room \u201cAlex&#39;s Tuesday check-ins\u201d" in message.html
    assert "Alex" not in message.subject
    assert "in the room" not in render(kind, DEFAULT_TEMPLATES[kind], SAMPLE_CONTEXT[kind]).text
    reason = problems(kind, subject="{{ room_title }}")[0][2]
    assert "may not contain 'room_title'" in reason


def test_a_cancellation_says_so_and_has_no_link() -> None:
    kind = MessageKind.cancellation
    message = render(kind, DEFAULT_TEMPLATES[kind], SAMPLE_CONTEXT[kind])

    assert "Cancelled" in message.subject
    assert "cancelled" in message.text
    assert "http" not in message.text
    assert "href" not in message.html


def test_a_new_link_message_says_whether_the_old_link_still_works() -> None:
    kind = MessageKind.new_link
    retired = SAMPLE_CONTEXT[kind] | {"previous_link_until": "15:30 on Monday 23 November 2026"}
    regenerated = SAMPLE_CONTEXT[kind] | {"previous_link_until": ""}

    for part in ("text", "html"):
        told = getattr(render(kind, DEFAULT_TEMPLATES[kind], retired), part)
        assert "works until 15:30 on Monday 23 November 2026" in told
        assert "no longer works" not in told
        stopped = getattr(render(kind, DEFAULT_TEMPLATES[kind], regenerated), part)
        assert "no longer works" in stopped


def test_an_empty_recipient_name_reads_well() -> None:
    context = SAMPLE_CONTEXT[MessageKind.invitation] | {"recipient_name": ""}
    message = render(MessageKind.invitation, INVITATION, context)

    assert message.text.startswith("Hello,\n")


def test_the_html_part_escapes_values_and_the_text_part_does_not() -> None:
    context = SAMPLE_CONTEXT[MessageKind.invitation] | {
        "recipient_name": "<b>Alex</b> & Co",
        "join_url": "https://video.example.org/s/abc?x=1&y=<2>",
    }
    message = render(MessageKind.invitation, INVITATION, context)

    assert "&lt;b&gt;Alex&lt;/b&gt; &amp; Co" in message.html
    assert "<b>Alex</b>" not in message.html
    assert "https://video.example.org/s/abc?x=1&amp;y=&lt;2&gt;" in message.html
    assert "<b>Alex</b> & Co" in message.text
    assert "https://video.example.org/s/abc?x=1&y=<2>" in message.text


def test_a_subject_is_one_stripped_line() -> None:
    edited = INVITATION.model_copy(update={"subject": "  {{ clinic_name }}:\t {{ date }}  "})
    context = SAMPLE_CONTEXT[MessageKind.invitation] | {"clinic_name": "Riverside\r\nBcc: x"}
    message = render(MessageKind.invitation, edited, context)

    assert message.subject == "Riverside Bcc: x: Tuesday 24 November 2026"


def test_filters_work() -> None:
    edited = INVITATION.model_copy(
        update={"text": "{{ clinic_name|upper }} {{ recipient_name|default('there', true) }}"}
    )
    validate(MessageKind.invitation, edited)
    context = SAMPLE_CONTEXT[MessageKind.invitation] | {"recipient_name": ""}

    assert render(MessageKind.invitation, edited, context).text == "RIVERSIDE PRACTICE there"


def test_variables_are_documented_for_every_kind() -> None:
    for kind in MessageKind:
        assert set(SAMPLE_CONTEXT[kind]) == set(VARIABLES[kind])
        assert all(description.endswith(".") for description in VARIABLES[kind].values())
    assert "join_url" not in VARIABLES[MessageKind.cancellation]
    assert {"previous_date", "previous_start_time"} <= set(VARIABLES[MessageKind.update])
    assert "starts_in" in VARIABLES[MessageKind.reminder]
    assert set(VARIABLES[MessageKind.invitation]) >= PERSONAL_VARIABLES


def test_template_sets_refuse_unknown_fields_and_huge_parts() -> None:
    with pytest.raises(ValueError, match="extra"):
        TemplateSet.model_validate({**INVITATION.model_dump(), "bcc": "x"})
    with pytest.raises(ValueError, match="500"):
        INVITATION.model_validate({**INVITATION.model_dump(), "subject": "x" * 501})


# -- mistakes, explained -------------------------------------------------------------------------


def test_a_syntax_error_is_reported_with_its_line() -> None:
    found = problems(MessageKind.invitation, text="Hello\n\n{% if recipient_name %}\nno end")

    assert len(found) == 1
    part, line, reason = found[0]
    assert (part, line) == ("text", 4)
    assert "endif" in reason
    assert_sentence(reason)


def test_an_unknown_variable_is_reported_with_its_name_line_and_the_choice() -> None:
    found = problems(MessageKind.invitation, html="<p>\n{{ join_url }}\n{{ patient_dob }}</p>")

    assert len(found) == 1
    part, line, reason = found[0]
    assert (part, line) == ("html", 3)
    assert "'patient_dob'" in reason
    assert "clinic_name" in reason
    assert "join_url" in reason
    assert_sentence(reason)


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        MessageKind.invitation,
        subject="{{ nope }}",
        text="{% if %}",
        html="fine\n{{ also_nope }}",
    )

    assert [(part, line) for part, line, _ in found] == [("subject", 1), ("text", 1), ("html", 2)]


def test_a_cancellation_cannot_use_the_join_url() -> None:
    found = problems(MessageKind.cancellation, text="Join: {{ join_url }}")

    assert len(found) == 1
    assert "'join_url'" in found[0][2]
    assert "cancellation" in found[0][2]


def test_a_variable_of_another_kind_says_where_it_belongs() -> None:
    found = problems(MessageKind.invitation, text="{{ previous_date }}")

    assert "only update templates" in found[0][2]


@pytest.mark.parametrize("name", sorted(PERSONAL_VARIABLES))
def test_the_subject_may_not_name_the_recipient(name: str) -> None:
    found = problems(MessageKind.invitation, subject=f"For {{{{ {name} }}}}")

    assert len(found) == 1
    assert found[0][:2] == ("subject", 1)
    assert f"'{name}'" in found[0][2]


@pytest.mark.parametrize(
    "subject", ["Line one\nline two {{ date }}", "   ", "{# only a comment #}", "{{ '' }}"]
)
def test_the_subject_must_be_one_line(subject: str) -> None:
    found = problems(MessageKind.invitation, subject=subject)

    assert [part for part, _, _ in found] == ["subject"]
    assert "one line" in found[0][2]


def test_a_render_error_is_a_problem_with_its_line() -> None:
    found = problems(MessageKind.invitation, text="a\nb\n{{ duration_minutes - 'x' }}")

    assert found[0][:2] == ("text", 3)
    assert "could not be rendered" in found[0][2]


def test_an_output_that_is_too_large_is_refused() -> None:
    text = "{{join_url}}" * 4_000  # 48,000 characters that render to 4,000 links

    found = problems(MessageKind.invitation, text=text)

    assert "200,000 characters" in found[0][2]


# -- sandbox escapes -----------------------------------------------------------------------------

ESCAPES = [
    "{{ join_url.__class__ }}",
    "{{ join_url.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ join_url.mro }}",
    "{{ join_url['__class__'] }}",
    "{{ join_url|attr('__class__') }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__dict__ }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{{ '{0.__class__.__mro__}'.format(join_url) }}",
    "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "{{ '%s'|format(join_url) }}",
    "{{ join_url.format_map({}) }}",
    "{{ join_url.upper() }}",
    "{% for x in range(10**9) %}{{ x }}{% endfor %}",
    "{{ range(10**9)|length }}",
    "{{ 10 ** 10 ** 10 }}",
    "{{ 'x' * 1000000000 }}",
    "{{ '%999999999d' % 1 }}",
    "{{ 'x'|center(999999999) }}",
    "{% set x = join_url ~ join_url %}{{ x }}",
    "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f(join_url) }}",
    "{% for x in [1, 2] recursive %}{{ loop([1, 2]) }}{% endfor %}",
    "{% include 'secrets.txt' %}",
    "{% import 'x' as y %}",
    "{% extends 'x' %}",
    "{% autoescape false %}{{ recipient_name }}{% endautoescape %}",
    "{{ recipient_name|safe }}",
    "{{ dict(a=1) }}",
    "{% with a = join_url %}{{ a }}{% endwith %}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_refused_before_anything_runs(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused from the syntax tree alone: compiling (which folds constants) never happens.
    def compiled(*_: object) -> None:
        raise AssertionError("compiled a refused template")

    validate(MessageKind.invitation, INVITATION)  # the default parts are compiled (and cached)
    monkeypatch.setattr(templates._HTML, "from_string", compiled)
    monkeypatch.setattr(templates._PLAIN, "from_string", compiled)

    for part in ("subject", "text", "html"):
        found = problems(MessageKind.invitation, **{part: f"Hello\n{source}"})

        assert {(p, line) for p, line, _ in found} == {(part, 2)}
        for _, _, reason in found:
            assert_sentence(reason)


@pytest.mark.parametrize(
    "name", ["config", "request", "self", "range", "lipsum", "cycler", "namespace", "url_for"]
)
def test_globals_of_other_template_setups_are_unknown_variables(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = templates._output

    def rendered(part: str, *rest: Any) -> str:
        assert part != "text", "rendered a template with an unknown variable"
        return output(part, *rest)

    monkeypatch.setattr(templates, "_output", rendered)

    found = problems(MessageKind.invitation, text=f"{{{{ {name} }}}}")

    assert found == [("text", 1, found[0][2])]
    assert found[0][2].startswith(f"Unknown variable '{name}'")


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{{ join_url.__class__ }}", "__class__"),
        ("{{ join_url['__class__'] }}", "__class__"),
        ("{{ cycler.__init__.__globals__ }}", "__globals__"),
        ("{{ lipsum.__globals__['os'].popen('id').read() }}", "__globals__"),
        ("{{ self._TemplateReference__context }}", "_TemplateReference__context"),
    ],
)
def test_reaching_for_internals_is_named_as_such(source: str, name: str) -> None:
    (found,) = problems(MessageKind.invitation, text=source)

    assert "Python internals" in found[2]
    assert f"'{name}'" in found[2]


def test_render_refuses_what_validate_refuses() -> None:
    class Spy:
        called = False

        def boom(self) -> str:
            Spy.called = True
            return "boom"

    edited = INVITATION.model_copy(update={"text": "{{ join_url.boom() }}"})
    context = SAMPLE_CONTEXT[MessageKind.invitation] | {"join_url": Spy()}

    with pytest.raises(RenderError, match="text template"):
        render(MessageKind.invitation, edited, context)
    assert not Spy.called


def test_behind_the_syntax_check_the_sandbox_refuses_every_attribute() -> None:
    from jinja2.exceptions import SecurityError

    for environment in (templates._PLAIN, templates._HTML):
        assert environment.globals == {}
        with pytest.raises(SecurityError):
            environment.from_string("{{ x.__class__ }}").render(x="")
        with pytest.raises(SecurityError):
            environment.from_string("{{ x.upper() }}").render(x="")


# -- render failures -----------------------------------------------------------------------------


def test_rendering_without_a_variable_raises_a_render_error() -> None:
    context = dict(SAMPLE_CONTEXT[MessageKind.invitation])
    del context["join_url"]

    with pytest.raises(RenderError, match="'join_url' is undefined"):
        render(MessageKind.invitation, INVITATION, context)


def test_a_cancellation_never_shows_a_link_even_if_given_one() -> None:
    edited = DEFAULT_TEMPLATES[MessageKind.cancellation].model_copy(
        update={"text": "{{ join_url }}"}
    )
    context = SAMPLE_CONTEXT[MessageKind.cancellation] | {"join_url": "https://secret"}

    with pytest.raises(RenderError, match="join_url"):
        render(MessageKind.cancellation, edited, context)


def test_an_empty_subject_is_a_render_error() -> None:
    edited = INVITATION.model_copy(update={"subject": "{{ practitioner_name }}"})
    context = SAMPLE_CONTEXT[MessageKind.invitation] | {"practitioner_name": " \n "}

    with pytest.raises(RenderError, match="empty"):
        render(MessageKind.invitation, edited, context)


def test_templates_are_compiled_once_per_source() -> None:
    templates._parse.cache_clear()
    for _ in range(50):
        render(MessageKind.invitation, INVITATION, SAMPLE_CONTEXT[MessageKind.invitation])

    assert templates._parse.cache_info().misses == 3
