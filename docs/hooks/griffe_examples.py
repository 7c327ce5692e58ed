"""A griffe extension for the API reference: ``Example:`` sections are examples.

bigviz's docstrings (Google style) head their doctests ``Example:``. griffe reads only the
plural ``Examples:`` as an examples section and renders the singular as an admonition of
plain text, where a doctest's output such as ``['a', 'b']`` reads as a Markdown link
reference. Renaming the heading at load time renders them as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Turn ``Example:`` headings into ``Examples:`` before docstrings are parsed."""

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
