"""The seed's health check, done right: responsive, role, replication lag; bounded in time; never raises.

`check(url)` returns a dict (JSON-ready) that services can serve from their own health endpoint:

    {"status": "healthy" | "unhealthy", "responsive": bool, "role": "primary" | "replica" | null,
     "replication_lag": seconds (number; 0 on a primary; null when unknown), "replicas": [...],  # primary only
     "reasons": [one sentence per problem], "error": "..."  # only when the database could not be asked}

Replication lag, and why not the seed's query. `now() - pg_last_xact_replay_timestamp()` is NULL on a primary and,
on a replica, keeps growing while the primary is idle (nothing new to replay means an old timestamp, not lag). Here:

- primary: `replication_lag` is 0, and each connected replica's `replay_lag` comes from `pg_stat_replication`
  (NULL there means no timing sample: reported as 0 when the standby's replay position equals the primary's sent
  position, i.e. it has caught up; null, and not a fault by itself, for the moment a record is in flight).
  A physical replication slot that no standby is using means a replica has gone away (and the slot is holding WAL
  on the primary's disk): unhealthy. So is fewer connected replicas than `expect_replicas`.
- replica: 0 when everything received has been replayed (`pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()`),
  otherwise `now() - pg_last_xact_replay_timestamp()`, the age of the last transaction replayed while more WAL waits
  (null, with a note, in the moment after a restart before any transaction has been replayed). A replica whose WAL
  receiver is not streaming is unhealthy whatever its lag (it cannot know how far behind it is), and so is one whose
  replay is paused.

Time bound: `timeout` seconds for the connection (libpq `connect_timeout`, which it rounds up to at least 2) plus
`timeout` seconds of `statement_timeout` for the queries: at most about twice `timeout` in all.
"""

from __future__ import annotations

import math
import time
from typing import Any

import psycopg

from dbops.connect import TIMED_OUT, _permanent_error, transient_reason, url_refused
from dbops.errors import DbopsError
from dbops.urls import normalize_url, parse_url

APPLICATION_NAME = "gaia-db-health"
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_LAG = 30.0

_PRIMARY_REPLICAS = """
    SELECT coalesce(nullif(r.application_name, 'walreceiver'), s.slot_name, r.application_name),
           host(r.client_addr),
           r.state,
           r.sync_state,
           EXTRACT(EPOCH FROM r.replay_lag)::float8,
           r.replay_lsn = r.sent_lsn,
           pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::float8
    FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
    ORDER BY 1, 2
"""
_INACTIVE_SLOTS = """
    SELECT slot_name FROM pg_replication_slots
    WHERE slot_type = 'physical' AND NOT active
    ORDER BY slot_name
"""
_REPLICA_LAG = """
    SELECT CASE
               WHEN pg_last_wal_receive_lsn() IS NOT NULL
                    AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8
               ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8
           END,
           (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
           EXISTS (SELECT FROM pg_stat_wal_receiver),
           pg_is_wal_replay_paused()
"""


def _round(value: float | None) -> float | None:
    return None if value is None else round(max(0.0, value), 3)


def _connect(url: str, timeout: float) -> psycopg.Connection[tuple[object, ...]]:
    target = parse_url(url)
    connect_timeout = max(2, math.ceil(timeout))  # what libpq honours
    try:
        return psycopg.connect(
            normalize_url(url),
            autocommit=True,
            connect_timeout=connect_timeout,
            application_name=APPLICATION_NAME,
            options=f"-c statement_timeout={max(1, int(timeout * 1000))}",
        )
    except psycopg.OperationalError as exc:
        message = str(exc)
        reason = transient_reason(message)
        if reason == TIMED_OUT:
            raise DbopsError(f"PostgreSQL at {target.location} did not answer within {connect_timeout} s "
                             f"(connect timeout)") from None
        if reason is not None:
            raise DbopsError(f"PostgreSQL at {target.location} did not answer: {reason}") from None
        raise _permanent_error(target, message) from None
    except (psycopg.ProgrammingError, psycopg.InterfaceError):
        raise url_refused(target) from None


def _primary(conn: psycopg.Connection[tuple[object, ...]], result: dict[str, Any], max_lag: float,
             expect_replicas: int | None) -> None:
    reasons: list[str] = result["reasons"]
    replicas: list[dict[str, Any]] = []
    rows: list[Any] = conn.execute(_PRIMARY_REPLICAS).fetchall()
    for name, addr, state, sync_state, replay_lag, caught_up, lag_bytes in rows:
        if state is None:
            # Without pg_read_all_stats (pg_monitor) PostgreSQL hides every column but the pid.
            replicas.append({"name": None, "client_addr": None, "state": "unknown", "sync_state": None,
                             "replay_lag": None, "lag_bytes": None})
            continue
        lag = 0.0 if replay_lag is None and caught_up else _round(replay_lag)
        replicas.append({"name": name, "client_addr": addr, "state": state, "sync_state": sync_state,
                         "replay_lag": lag, "lag_bytes": _round(lag_bytes)})
        label = f"replica {name or addr}"
        if state != "streaming":
            reasons.append(f"{label} is {state}, not streaming")
        elif lag is not None and lag > max_lag:
            reasons.append(f"{label} replays {lag:g} s behind (more than {max_lag:g} s)")
    result["replicas"] = replicas
    if any(r["state"] == "unknown" for r in replicas):
        result["note"] = "replica details need the pg_monitor role (or pg_read_all_stats) for this login"
    for (slot,) in conn.execute(_INACTIVE_SLOTS):
        reasons.append(f"replication slot {slot} has no replica connected (a replica is down; the slot keeps WAL)")
    if expect_replicas is not None:
        streaming = sum(1 for r in replicas if r["state"] in ("streaming", "unknown"))
        if streaming < expect_replicas:
            reasons.append(f"{streaming} of {expect_replicas} expected replicas are streaming")


def _replica(conn: psycopg.Connection[tuple[object, ...]], result: dict[str, Any], max_lag: float) -> None:
    reasons: list[str] = result["reasons"]
    row: Any = conn.execute(_REPLICA_LAG).fetchone()
    lag, status, has_receiver, paused = row
    result["replication_lag"] = _round(lag)
    result["wal_receiver"] = status if status is not None else ("unknown" if has_receiver else "stopped")
    if not has_receiver:
        reasons.append("the replica is not receiving WAL from its primary (no WAL receiver)")
    elif status is not None and status != "streaming":
        reasons.append(f"the replica's WAL receiver is {status}, not streaming")
    if paused:
        reasons.append("WAL replay is paused on this replica (pg_wal_replay_resume() resumes it)")
    if lag is None:
        # WAL is arriving but no transaction has been replayed since this server started: no timestamp to measure
        # from. Not a fault by itself (it clears with the first replayed commit); a stopped receiver is caught above.
        result["note"] = "no transaction replayed since this replica started, so its lag cannot be measured yet"
    elif lag > max_lag:
        reasons.append(f"the replica replays {lag:.3f} s behind (more than {max_lag:g} s)")


def check(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_lag: float = DEFAULT_MAX_LAG,
    expect_replicas: int | None = None,
) -> dict[str, Any]:
    """Health of the server at `url` (any login that can connect). Never raises; see the module docstring."""
    started = time.monotonic()
    result: dict[str, Any] = {"status": "unhealthy", "responsive": False, "role": None, "replication_lag": None,
                              "reasons": []}
    try:
        with _connect(url, timeout) as conn:
            conn.execute("SELECT 1")
            result["responsive"] = True
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            in_recovery = bool(row and row[0])
            result["role"] = "replica" if in_recovery else "primary"
            if in_recovery:
                _replica(conn, result, max_lag)
            else:
                result["replication_lag"] = 0
                _primary(conn, result, max_lag, expect_replicas)
    except DbopsError as exc:
        result["error"] = str(exc)
        result["reasons"].append(str(exc))
    except psycopg.errors.QueryCanceled:
        result["error"] = f"the health queries did not finish within {timeout:g} s (statement_timeout)"
        result["reasons"].append(result["error"])
    except psycopg.Error as exc:
        first = exc.diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        result["error"] = f"the health queries failed: {first}"
        result["reasons"].append(result["error"])
    except Exception as exc:
        # Services call this from their health endpoints, so it answers even here; only the type, because an
        # unexpected message could quote the URL.
        result["error"] = f"the health check failed unexpectedly ({type(exc).__name__})"
        result["reasons"].append(result["error"])
    if not result["reasons"]:
        result["status"] = "healthy"
    result["elapsed"] = round(time.monotonic() - started, 3)
    return result
