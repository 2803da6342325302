"""The API's JSON parser: DRF's, plus a clear 400 for JSON nested too deeply to parse."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class JSONParserWithDepthLimit(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # Python's json module recurses per nesting level: 20,000 "[" exhaust the stack.
            raise ParseError("JSON parse error - nested too deeply.") from None
