import pytest

from carebox.mail.htmltext import html_to_text


def test_a_typical_html_mail() -> None:
    html = (
        "<html><head><title>Mail</title><style>p{color:red}</style>"
        "<script>fetch('https://tracker.example/x')</script></head><body>"
        "<p>Dear Dr.&nbsp;Lindqvist,</p><div>My MRI is on the <b>12th</b> &amp; I have a question."
        "<br>Second line</div><ul><li>one</li><li>two</li></ul>"
        '<p>Sent from <a href="https://webmail.example/?ref=sig">my webmail</a>'
        '<img src="https://tracker.example/open.gif" alt=""></p><!-- hidden --></body></html>'
    )
    assert html_to_text(html) == (
        "Dear Dr. Lindqvist,\n\nMy MRI is on the 12th & I have a question.\nSecond line\n\n"
        "- one\n- two\n\nSent from my webmail"
    )


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("if a < b and c > d", "if a < b and c > d"),
        ("<head><title>t</title><body>visible", "visible"),
        ("<script>alert(1)", ""),
        ("<SCRIPT type=x>bad()</SCRIPT ><P>ok", "ok"),
        ("<pre>a\n  b</pre>", "a\n  b"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc"),
        ("&#x1F600; &lt;tag&gt; &unknown;", "😀 <tag> &unknown;"),
        ("<div><div><p>a</p></div></div><div>b</div>x<br><br>y", "a\n\nb\nx\n\ny"),
        ("", ""),
    ],
)
def test_edge_cases(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_no_url_or_attribute_ever_reaches_the_text() -> None:
    html = '<a href="https://evil.example/?q=1" title="x">click</a><img src="http://t.example/p.gif">'
    assert html_to_text(html) == "click"


@pytest.mark.parametrize("depth", [100, 5_000, 100_000])
def test_nesting_bombs_hide_no_text(depth: int) -> None:
    out = html_to_text("<div>" * depth + "first <b>second</b>")
    assert "first" in out and "second" in out


def test_hostile_input_is_handled_and_keeps_text() -> None:
    for hostile in ("<a " * 50_000, '<a b="' * 50_000, "<!--" * 50_000, "<" * 100_000):
        html_to_text(hostile)
    assert "a" in html_to_text("a<b" * 50_000)
    assert html_to_text("<p>x</p>" * 50_000).count("x") == 50_000
