"""The django-redis serializer: JSON in, JSON out, and anything else read as a miss.

The default (pickle) would run whatever a writer to Redis put there. With this one a foreign
value, a pickle included, is never deserialised into anything but None.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django_redis.serializers.json import JSONSerializer

logger = logging.getLogger(__name__)


class StrictJSONSerializer(JSONSerializer):
    def loads(self, value: bytes) -> Any:
        try:
            return json.loads(value.decode())
        except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
            logger.warning("ignored a cache value that is not JSON")
            return None
