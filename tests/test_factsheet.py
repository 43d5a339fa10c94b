"""Fact-sheet parsing: the documented format, key inference, and every error case."""

from __future__ import annotations

import pytest
from conftest import FACTS

from factinject.errors import FactinjectError
from factinject.sheet.factsheet import MAX_SHEET_BYTES, parse_sheet, read_sheet


def test_shipped_sheets_parse_with_stable_ids():
    tiny = read_sheet(FACTS / "tinyllm.md")
    assert [f.id for f in tiny.facts] == [
        "tinyllm/purpose", "tinyllm/repository", "tinyllm/license", "tinyllm/contributing", "tinyllm/maintainer",
    ]
    by_id = {f.id: f for f in tiny.facts}
    assert by_id["tinyllm/license"].answer_key == "MIT"
    assert by_id["tinyllm/repository"].answer_key == "https://github.com/jasonacox/TinyLLM"
    assert tiny.subjects[0].aliases == ["Tiny LLM", "the TinyLLM project"]
    assert len(read_sheet(FACTS / "protosai.md").facts) == 5
    kestrel = read_sheet(FACTS / "kestrel.md")
    assert len(kestrel.facts) >= 10
    assert {f.polarity for f in kestrel.facts} == {"positive", "negative"}


def test_key_rules_bold_url_negation_and_explicit():
    sheet = parse_sheet(
        "# Acme\n"
        "- license: Acme uses the **BSD-3** license.\n"
        "- url: Acme lives at https://acme.example.org/home.\n"
        "- cloud: Acme does not need the cloud.\n"
        "- maintainer: Acme is maintained by Ann Lee. (key: Ann Lee)\n",
        "acme.md",
    )
    keys = {f.relation: (f.answer_key, f.polarity) for f in sheet.facts}
    assert keys == {
        "license": ("BSD-3", "positive"),
        "url": ("https://acme.example.org/home", "positive"),  # trailing '.' is not part of the URL
        "cloud": ("no", "negative"),
        "maintainer": ("Ann Lee", "positive"),
    }
    assert sheet.facts[0].statement == "Acme uses the BSD-3 license."  # markup stripped


def test_id_header_and_comments():
    sheet = parse_sheet("<!-- notes\nspanning lines -->\n# Ωmega Tool\nid: omega\nkind: project\n- license: It is **MIT**.\n")
    assert sheet.facts[0].id == "omega/license"


@pytest.mark.parametrize(
    "text, line, needle",
    [
        ("   \n\n", None, "empty"),
        ("# Acme\naliases: A\n", 1, "no facts"),
        ("- license: Acme is **MIT**.\n", 1, "before the first '# Subject'"),
        ("# Acme\n- license: Acme is MIT.\n", 2, "cannot tell which words"),
        ("# Acme\n- license: Acme is MIT. (key: BSD)\n", 2, "does not appear"),
        ("# Acme\n- license: Acme is MIT. (key: )\n", 2, "empty"),
        ("# Acme\n- license: Acme is **MIT**.\n- license: Acme is **BSD**.\n", 3, "duplicate fact id"),
        ("# Acme\n- Acme is **MIT** licensed.\n", 2, "no relation"),
        ("# Acme\nAcme is a tool.\n", 2, "cannot read this line"),
        ("# Acme\n## Trivia\n- license: Acme is **MIT**.\n", 2, "unknown section"),
        ("# Acme\ncolour: red\n- license: Acme is **MIT**.\n", 2, "unknown subject field"),
        ("# Acme\nkind: robot\n- license: Acme is **MIT**.\n", 2, "unknown kind"),
        ("# Acme\nid: ../../etc\n- license: Acme is **MIT**.\n", 2, "not a plain lowercase name"),
        ("# Acme\n- license: **Acme** is **MIT**.\n", 2, "one span"),
        ("# Acme\n- license: Acme is **MIT**.\n## Questions\n- license: Is it free? => Yes, it is free.\n", 4, "does not contain"),
        ("# Acme\n- license: Acme is **MIT**.\n## Questions\n- colour: What colour?\n", 4, "not a fact of"),
        ("# Acme\n- license: Acme is **MIT**.\n# Acme\n- url: see https://a.example\n", 3, "two subjects"),
        ("# 日本\n- license: It is **MIT**.\n", 1, "no usable id"),
    ],
)
def test_malformed_sheets_name_line_and_fix(text, line, needle):
    with pytest.raises(FactinjectError) as info:
        parse_sheet(text, "sheet.md")
    err = info.value
    assert needle in err.what, err.render()
    assert err.where == "sheet.md"
    assert err.line == line
    assert err.fix, "every error says what to do"


def test_file_level_errors(tmp_path):
    with pytest.raises(FactinjectError, match="no such fact sheet"):
        read_sheet(tmp_path / "missing.md")
    latin1 = tmp_path / "latin1.md"
    latin1.write_bytes("# Caf\xe9\n- city: It is in **Paris**.\n".encode("utf-8") + b"- bad: \xe9t\xe9 **x**\n")
    with pytest.raises(FactinjectError) as info:
        read_sheet(latin1)
    assert info.value.line == 3 and "UTF-8" in info.value.what
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(FactinjectError, match="binary"):
        read_sheet(binary)
    huge = tmp_path / "huge.md"
    huge.write_text("# Big\n" + "<!-- padding -->\n" * (MAX_SHEET_BYTES // 17 + 1))
    with pytest.raises(FactinjectError, match="limit"):
        read_sheet(huge)
    assert "split it" in pytest.raises(FactinjectError, read_sheet, huge).value.fix
