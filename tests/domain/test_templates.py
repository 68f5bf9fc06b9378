import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carebox.domain.templates import TemplateError, first_name, placeholders, render


def test_render_fills_placeholders():
    out = render("Dear {first_name},\nplease call {phone}.", {"first_name": "Anna", "phone": "030 123"})
    assert out == "Dear Anna,\nplease call 030 123."


def test_render_repeated_and_unused_values():
    assert render("{a}-{a}", {"a": "x", "unused": "y"}) == "x-x"


def test_braces_escape():
    assert render("{{literal}} {name} }}", {"name": "N"}) == "{literal} N }"
    assert placeholders("{{literal}} {name}") == {"name"}


def test_values_are_not_expanded_again():
    assert render("{a}", {"a": "{b} {0.__class__}", "b": "no"}) == "{b} {0.__class__}"


def test_unknown_placeholder_names_it():
    with pytest.raises(TemplateError, match=r"\{phone\}") as exc:
        render("Call {phone}", {"first_name": "A"})
    assert exc.value.name == "phone"


@pytest.mark.parametrize(
    ("template", "name"),
    [
        ("{name.__class__}", "name.__class__"),
        ("{name[0]}", "name[0]"),
        ("{0}", "0"),
        ("{name!r}", "name"),
        ("{name:>30}", "name"),
        ("{name:{width}}", "name"),
    ],
)
def test_unsafe_fields_refused(template, name):
    with pytest.raises(TemplateError) as exc:
        render(template, {"name": "x", "width": "3"})
    assert exc.value.name == name
    with pytest.raises(TemplateError):
        placeholders(template)


@pytest.mark.parametrize("template", ["{}", "{", "}", "a { b", "{name"])
def test_malformed_template_is_a_template_error(template):
    with pytest.raises(TemplateError):
        render(template, {"name": "x"})


def test_template_error_is_a_value_error():
    assert issubclass(TemplateError, ValueError)


def test_placeholders():
    assert placeholders("Dear {first_name}, {date} {first_name} {{x}}") == {"first_name", "date"}
    assert placeholders("no fields") == set()


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), st.text(max_size=10), max_size=5))
@settings(max_examples=50, deadline=None)
def test_render_matches_str_format_for_safe_templates(values):
    template = " | ".join("{" + k + "}" for k in values) + " {{end}}"
    assert render(template, values) == template.format(**values)
    assert placeholders(template) == set(values)


@pytest.mark.parametrize(
    ("full", "first"),
    [
        ("Anna Schmidt", "Anna"),
        ("Schmidt, Anna", "Anna"),
        ("Schmidt, Anna Maria", "Anna"),
        ("Dr. Anna Schmidt", "Anna"),
        ("Prof. Dr. med. Hans Meier", "Hans"),
        ("Meier, Dr. Hans", "Hans"),
        ("Frau Anna Schmidt", "Anna"),
        ("Mme Claire Dubois", "Claire"),
        ('"Smith, John"', "John"),
        ("John Smith, Jr.", "John"),
        ("John Smith, MD", "John"),
        ("John (Jack) Smith", "John"),
        ("  anna  ", "anna"),
        ("Dr. Meier", ""),  # a title and one word: that word is a surname
        ("Meier, Dr.", ""),
        ("J. Smith", ""),
        ("john.smith@example.com", ""),
        ("", ""),
        ("   ", ""),
        ("Dr.", ""),
        ("Anna", "Anna"),
        ("Jean-Luc Picard", "Jean-Luc"),
        ("Zoë Ångström", "Zoë"),
    ],
)
def test_first_name(full, first):
    assert first_name(full) == first
