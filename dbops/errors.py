"""The one exception type for expected failures."""

from __future__ import annotations


class DbopsError(Exception):
    """An expected failure (unreachable database, bad credentials, failing migration, bad input).

    The message is one sentence naming what was wrong and what is allowed; it never contains a secret.
    The CLI prints it as `error: <message>` without a traceback.
    """
