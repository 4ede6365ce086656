"""PyYAML's pure-Python Dumper, with its two per-character loops done by regular expressions.

KFP writes the IR with ``yaml.dump_all`` and PyYAML's pure-Python emitter. libyaml's
emitter is ten times faster but folds long double-quoted strings elsewhere, so the IR
would change. Half of a 500-step notebook's compile was two loops of that emitter
walking each component's embedded source a character at a time: ``analyze_scalar``
(which styles a string may take) and ``write_double_quoted``. ``Dumper`` computes the
same results from regular-expression searches and jumps from one possible fold to the
next, so its output is PyYAML's byte for byte (tests/test_compile.py compares them on
generated strings).
"""

from __future__ import annotations

import functools
import re
import types
from typing import Any

import yaml
from yaml.emitter import ScalarAnalysis

_BREAKS = "\n\x85\u2028\u2029"
_WHITESPACE = "\0 \t\r" + _BREAKS
# Without allow_unicode, every character outside printable ASCII (and the line feed)
# is special: it forces double quotes.
_SPECIAL = re.compile(r"[^\n\x20-\x7e]")
_FLOW_INSIDE = re.compile(r"[,?\[\]{}:]")
_COLON_BEFORE_SPACE = re.compile(r":(?=[\0 \t\r\n\x85\u2028\u2029]|\Z)")
_HASH_AFTER_SPACE = re.compile(r"[\0 \t\r\n\x85\u2028\u2029]#")
_BREAK = re.compile(r"[\n\x85\u2028\u2029]")
_BREAK_SPACE = re.compile(r"[\n\x85\u2028\u2029] ")
_SPACE_BREAK = re.compile(r" [\n\x85\u2028\u2029]")
# What write_double_quoted escapes when allow_unicode is off.
_ESCAPED = re.compile(r'[^\x20-\x7e]|["\\]')


class Dumper(yaml.Dumper):
    """``yaml.Dumper`` with faster, equivalent ``analyze_scalar`` and
    ``write_double_quoted`` (PyYAML's own code runs when ``allow_unicode`` or an
    encoding is set: KFP sets neither)."""

    def analyze_scalar(self, scalar: str) -> Any:
        if not scalar or self.allow_unicode:
            return super().analyze_scalar(scalar)
        block_indicators = flow_indicators = scalar.startswith(("---", "..."))
        first = scalar[0]
        followed_by_whitespace = len(scalar) == 1 or scalar[1] in _WHITESPACE
        if first in "#,[]{}&*!|>'\"%@`":
            flow_indicators = block_indicators = True
        if first in "?:":
            flow_indicators = True
            if followed_by_whitespace:
                block_indicators = True
        if first == "-" and followed_by_whitespace:
            flow_indicators = block_indicators = True
        if _FLOW_INSIDE.search(scalar, 1):
            flow_indicators = True
        if _COLON_BEFORE_SPACE.search(scalar, 1):
            block_indicators = True
        # A '#' after whitespace: the match starts at the whitespace, index 0 or later,
        # and the '#' is at index 1 or later, as PyYAML's loop requires.
        if _HASH_AFTER_SPACE.search(scalar):
            flow_indicators = block_indicators = True
        line_breaks = _BREAK.search(scalar) is not None
        special_characters = _SPECIAL.search(scalar) is not None
        leading = first == " " or first in _BREAKS
        trailing_space = scalar[-1] == " "
        trailing = trailing_space or scalar[-1] in _BREAKS
        break_space = _BREAK_SPACE.search(scalar) is not None
        space_break = _SPACE_BREAK.search(scalar) is not None

        allow_flow_plain = allow_block_plain = allow_single_quoted = allow_block = True
        if leading or trailing:
            allow_flow_plain = allow_block_plain = False
        if trailing_space:
            allow_block = False
        if break_space:
            allow_flow_plain = allow_block_plain = allow_single_quoted = False
        if space_break or special_characters:
            allow_flow_plain = allow_block_plain = allow_single_quoted = allow_block = False
        if line_breaks:
            allow_flow_plain = allow_block_plain = False
        if flow_indicators:
            allow_flow_plain = False
        if block_indicators:
            allow_block_plain = False
        return ScalarAnalysis(
            scalar=scalar,
            empty=False,
            multiline=line_breaks,
            allow_flow_plain=allow_flow_plain,
            allow_block_plain=allow_block_plain,
            allow_single_quoted=allow_single_quoted,
            allow_double_quoted=True,
            allow_block=allow_block,
        )

    def write_double_quoted(self, text: str, split: bool = True) -> None:
        if self.allow_unicode or self.encoding:
            super().write_double_quoted(text, split)
            return
        # PyYAML's loop looks at every index `end` of the text. Only three kinds of index
        # can do anything there: a character it escapes, the index just after one
        # (where `start >= end`), and a space once the line is past best_width. This
        # visits exactly those, with PyYAML's own code for each.
        self.write_indicator('"', True)
        size = len(text)
        self._dq_start = 0
        index = 0
        while True:
            found = _ESCAPED.search(text, index)
            escape_at = found.start() if found else size
            at = index
            while split and at < escape_at:
                start = self._dq_start
                if start < at:
                    # The first space from which the line would pass best_width.
                    past = start + self.best_width - self.column + 1
                    at = text.find(" ", max(at, past), escape_at)
                    if at < 0:
                        break
                self._dq_fold(text, at, split)
                at += 1
            self._dq_escape(text, escape_at)
            self._dq_fold(text, escape_at, split)
            if escape_at >= size:
                break
            index = escape_at + 1
        self.write_indicator('"', False)

    def _dq_escape(self, text: str, end: int) -> None:
        """PyYAML's write_double_quoted at an escaped character, or at the end."""
        start = self._dq_start
        if start < end:
            data = text[start:end]
            self.column += len(data)
            self.stream.write(data)
            start = end
        if end < len(text):
            ch = text[end]
            if ch in self.ESCAPE_REPLACEMENTS:
                data = "\\" + self.ESCAPE_REPLACEMENTS[ch]
            elif ch <= "\xff":
                data = f"\\x{ord(ch):02X}"
            elif ch <= "\uffff":
                data = f"\\u{ord(ch):04X}"
            else:
                data = f"\\U{ord(ch):08X}"
            self.column += len(data)
            self.stream.write(data)
            start = end + 1
        self._dq_start = start

    def _dq_fold(self, text: str, end: int, split: bool) -> None:
        """PyYAML's write_double_quoted's line folding at index ``end``."""
        start = self._dq_start
        if (
            0 < end < len(text) - 1
            and (text[end] == " " or start >= end)
            and self.column + (end - start) > self.best_width
            and split
        ):
            data = text[start:end] + "\\"
            if start < end:
                start = end
            self.column += len(data)
            self.stream.write(data)
            self.write_indent()
            self.whitespace = False
            self.indention = False
            if text[start] == " ":
                data = "\\"
                self.column += len(data)
                self.stream.write(data)
        self._dq_start = start


def kfp_yaml() -> types.ModuleType:
    """A stand-in for the ``yaml`` module in KFP's pipeline_spec_builder whose
    ``dump_all`` uses ``Dumper`` unless told otherwise."""
    stand_in = types.ModuleType(yaml.__name__, yaml.__doc__)
    stand_in.__dict__.update(
        {k: v for k, v in vars(yaml).items() if not k.startswith("__")},
        dump_all=functools.partial(yaml.dump_all, Dumper=Dumper),
    )
    return stand_in
