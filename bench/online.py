"""Figure 3: a continuous writer on `chat_messages` while the conversation-history index is built.

The table holds N rows at revision 0001 (a database released before 0002 existed). A writer process inserts at a
steady rate as the chat service (`gaia_chat`), each insert with an application-style statement timeout; a failed
write is one that errored or timed out. Latency is measured before and during (a) the release, which builds the
index CONCURRENTLY, and (b) a plain `CREATE INDEX`, as the seed's SQL would. Latency runs from when a write was
due, not when the blocked writer got round to it, so a stall counts every write it delayed. Each variant runs
`rounds` times on the same table (reset to 0001 in between) and the samples are pooled.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

INDEX = "idx_chat_messages_conversation_created"
WRITE_TIMEOUT_MS = 1000  # what a chat request would wait for its insert before giving up
WARMUP_WRITES = 20
MAX_WRITER_SECONDS = 1800  # the writer stops by itself even if the benchmark dies


Sample = tuple[float, float, bool]  # (monotonic time the write was due, latency in seconds, succeeded)


WRITER_START_SECONDS = 60
INSERT = ("INSERT INTO chat_messages (user_id, conversation_id, role, content, model, provider, tokens_used)"
          " VALUES (%s, %s, 'user', 'how do I rotate a key?', 'gpt', 'openai', 12)")


def writer(url: str, user_id: str, rate: float, ready: Event, stop: Event, results: Connection,
           insert: str = INSERT) -> None:
    """Insert at `rate` per second until `stop` is set; send the samples back. `ready` is set once connected."""
    import psycopg

    samples: list[Sample] = []
    conversation = uuid.uuid4()
    deadline = time.monotonic() + MAX_WRITER_SECONDS
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET statement_timeout = {WRITE_TIMEOUT_MS}")  # constant
        ready.set()
        due = time.monotonic()
        while not stop.is_set() and time.monotonic() < deadline:
            due += 1 / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                conn.execute(insert, (user_id, conversation))
                ok = True
            except psycopg.Error:
                ok = False
            samples.append((due, time.monotonic() - due, ok))
            if not ok and conn.closed:
                break
    results.send(samples)
    results.close()


@dataclass(frozen=True)
class Phase:
    writes: int
    failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def phase(samples: list[Sample]) -> Phase:
    if not samples:
        return Phase(0, 0, float("nan"), float("nan"), float("nan"))
    latencies = sorted(latency * 1000 for _, latency, _ in samples)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Phase(len(samples), sum(1 for *_, ok in samples if not ok), statistics.median(latencies), p99,
                 latencies[-1])


@dataclass
class Run:
    before: list[Sample]
    during: list[Sample]
    build_seconds: list[float]
    rounds: list[list[Sample]] = field(default_factory=list)  # each round's `during` samples

    def p99_spread(self) -> tuple[float, float]:
        """The lowest and highest p99 of a single round."""
        p99s = [phase(samples).p99_ms for samples in self.rounds if samples]
        return (min(p99s), max(p99s)) if p99s else (float("nan"), float("nan"))


def with_writer(url: str, user_id: str, rate: float, before_seconds: float, action: Any, run: Run,
                insert: str = INSERT) -> None:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=writer, args=(url, user_id, rate, ready, stop, send, insert))
    process.start()
    try:
        # A spawned interpreter can take seconds to start on a busy machine: the "before" phase starts once it
        # writes, or the quick run's short phases would see no write at all.
        if not ready.wait(WRITER_START_SECONDS):
            raise RuntimeError(f"the writer process did not connect within {WRITER_START_SECONDS} s")
        time.sleep(before_seconds)
        started = time.monotonic()
        action()
        ended = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
    samples: list[Sample] = receive.recv() if receive.poll(60) else []
    process.join(timeout=30)
    if process.is_alive():
        process.terminate()
        raise RuntimeError("the writer process did not stop")
    if not samples:
        raise RuntimeError("the writer process sent no samples")
    run.before += [s for s in samples[WARMUP_WRITES:] if s[0] < started]
    during = [s for s in samples if started <= s[0] <= ended]
    run.during += during
    run.rounds.append(during)
    run.build_seconds.append(ended - started)


@dataclass(frozen=True)
class Variant:
    before: Phase
    during: Phase
    build_seconds: float  # median over the rounds
    p99_spread: tuple[float, float] = (float("nan"), float("nan"))  # lowest, highest p99 of one round

    @staticmethod
    def of(run: Run) -> Variant:
        return Variant(phase(run.before), phase(run.during), statistics.median(run.build_seconds), run.p99_spread())


@dataclass(frozen=True)
class OnlineFigures:
    rows: int
    rounds: int
    release: Variant
    plain: Variant


def setup(server: Any, rows: int) -> tuple[str, str, str]:
    """A new database released to head with `rows` chat messages; (admin URL, chat URL, the user's id)."""
    import psycopg
    from provider_process import ADMIN_EMAIL, ROLE_PASSWORDS

    from dbops.release import release
    from dbops.urls import build_url, parse_url

    _, admin_url = server.create_database()
    target = parse_url(admin_url)
    release(admin_url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=ROLE_PASSWORDS, wait_seconds=30)
    chat_url = build_url(user="gaia_chat", password=ROLE_PASSWORDS["chat"], host=target.host or "127.0.0.1",
                         port=target.port, database=target.database, sslmode="disable")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM users WHERE email = %s", (ADMIN_EMAIL,)).fetchone()
        assert row is not None
        user_id = str(row[0])
        # Conversations of about 40 messages, spread over the last year.
        conn.execute(
            "INSERT INTO chat_messages (user_id, conversation_id, role, content, model, provider, tokens_used,"
            " created_at) SELECT %s, md5((g / 40)::text)::uuid, CASE WHEN g %% 2 = 0 THEN 'user' ELSE 'assistant'"
            " END, repeat('lorem ipsum ', 8), 'gpt', 'openai', 42, now() - (g || ' seconds')::interval"
            " FROM generate_series(1, %s) AS g",
            (user_id, rows),
        )
        conn.execute("VACUUM ANALYZE chat_messages")
    server.execute("CHECKPOINT")
    return admin_url, chat_url, user_id


def measure(server: Any, rows: int, rate: float, before_seconds: float, rounds: int) -> OnlineFigures:
    import psycopg
    from provider_process import ADMIN_EMAIL, ROLE_PASSWORDS

    from dbops.release import release

    admin_url, chat_url, user_id = setup(server, rows)

    def back_to_0001() -> None:
        # Exactly a database released at 0001: 0002 adds this index and nothing else.
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
            conn.execute("UPDATE alembic_version SET version_num = '0001_seed_schema'")

    back_to_0001()
    server.execute("CHECKPOINT")

    def plain_index() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE INDEX {INDEX} ON chat_messages (conversation_id, created_at)")

    def our_release() -> None:
        release(admin_url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=ROLE_PASSWORDS, wait_seconds=30)

    def index_is_valid() -> bool:
        with psycopg.connect(admin_url) as conn:
            row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", (INDEX,)).fetchone()
        return row == (True,)

    plain, ours = Run([], [], []), Run([], [], [])
    for _ in range(rounds):
        with_writer(chat_url, user_id, rate, before_seconds, plain_index, plain)
        back_to_0001()
        server.execute("CHECKPOINT")
        with_writer(chat_url, user_id, rate, before_seconds, our_release, ours)
        if not index_is_valid():
            raise RuntimeError("the release did not leave a valid conversation-history index")
        back_to_0001()
        server.execute("CHECKPOINT")
    return OnlineFigures(rows, rounds, Variant.of(ours), Variant.of(plain))
