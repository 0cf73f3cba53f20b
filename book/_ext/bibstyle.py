"""Author-year labels for the bibliography page, matching the author-year citations in the text.

sphinxcontrib-bibtex's ``plain`` style labels entries ``[1]``, ``[2]``, ... while the chapters
cite ``Mena et al. [2017]``; this pybtex style labels them ``Mena et al., 2017`` (an entry without
authors, cited by its title, is labelled with its title), so the text and the list agree.
Registered as the pybtex formatting style ``authoryear`` (``bibtex_default_style`` in
``_config.yml``).
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _label(entry) -> str:
    """``Last``, ``Last and Last`` or ``Last et al.``, then the year; the title if no author."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    year = entry.fields.get("year", "n.d.")
    if not persons:
        return f"{entry.fields.get('title', entry.key)}, {year}".replace("{", "").replace("}", "")
    last = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in persons]
    names = last[0] if len(last) == 1 else (
        f"{last[0]} and {last[1]}" if len(last) == 2 else f"{last[0]} et al.")
    return f"{names}, {year}"


class AuthorYearLabels(BaseLabelStyle):
    """Author-year labels; equal labels get a, b, ... after the year."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [_label(e) for e in entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                label = f"{label}{'abcdefghijklmnopqrstuvwxyz'[seen[label] - 1]}"
            yield label


class AuthorYearStyle(PlainStyle):
    """pybtex's plain style (sorted by author, year, title) with author-year labels."""

    default_label_style = AuthorYearLabels


register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
