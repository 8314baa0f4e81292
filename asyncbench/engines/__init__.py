"""Load engines: `fast` (uvloop, a Protocol per connection, httptools) and `aiohttp` (the lab's
AsyncHttpClient). Both return `records.FetchResult`s and share the retry policy in `retry`."""

from __future__ import annotations

ENGINES = ("fast", "aiohttp")
