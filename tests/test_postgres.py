"""The PostgreSQL store against a real server, and what both backends share from the
command line: migrations, --state and FLOWRUNNER_STATE, concurrent increments, lost
connections, and passwords that never show."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke, write_project
from pg import PgServer, require_driver

require_driver()  # before the store's modules import psycopg

from flowrunner.errors import SecretError, StateError  # noqa: E402
from flowrunner.source.model import PostgresPlace, SecretRef, StatePlace  # noqa: E402
from flowrunner.state import open_store, read_user_keys, schema_status  # noqa: E402
from flowrunner.state.postgres import migrations  # noqa: E402
from flowrunner.state.postgres.store import PgStore  # noqa: E402
from flowrunner.state.sqlite.store import SCHEMA_VERSION  # noqa: E402

BUMP = """\
flow: bump
steps:
  - id: bump
    operation: assign
    set:
      $user.key.counter: "{{ $user.key.counter + 1 }}"
"""


def place_text(place: StatePlace) -> str:
    return place.url if isinstance(place, PostgresPlace) else str(place)


# ---- concurrent increments ---------------------------------------------------------


def test_three_processes_incrementing_one_user_key_lose_nothing(
    tmp_path: Path, place: StatePlace
) -> None:
    root = write_project(tmp_path, {}, {"bump": BUMP}, user_keys={"counter": 0})
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n" * 300)
    env = {**os.environ, "FLOWRUNNER_STATE": place_text(place)}
    command = [sys.executable, "-m", "flowrunner", "--project", str(root), "run", "bump"]
    procs = [
        subprocess.Popen(
            [*command, "--events", str(events), "--concurrency", "8"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(3)
    ]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    assert read_user_keys(place)["counter"] == 900


# ---- migrations --------------------------------------------------------------------


def _open_at_once(place: PostgresPlace, start: Any) -> None:
    start.wait(30)
    PgStore.open(place, None).close()


def test_processes_starting_at_once_migrate_once(pg_place: PostgresPlace) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_open_at_once, args=(pg_place, start)) for _ in range(4)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    status = schema_status(pg_place)
    assert status.version == migrations.LATEST and status.pending == ()
    assert [v for v, _, _ in status.applied] == [v for v, _, _ in migrations.MIGRATIONS]


def test_a_database_of_a_newer_flowrunner_is_refused(pg_place: PostgresPlace) -> None:
    store = PgStore.open(pg_place, None)
    store.db.run(
        "test",
        lambda cur: cur.execute(
            "INSERT INTO flowrunner_migrations VALUES (%s, 'from the future', 0)",
            (migrations.LATEST + 1,),
        ),
    )
    store.close()
    with pytest.raises(StateError, match="newer flowrunner"):
        PgStore.open(pg_place, None)


def test_db_status_and_migrate_on_both_backends(tmp_path: Path, place: StatePlace) -> None:
    root = write_project(tmp_path, {})
    where = ["--state", place_text(place)]
    before = invoke(root, *where, "db", "status")
    assert before.exit_code == 1, before.output
    assert "schema version 0 of" in before.output and "pending" in before.output
    latest = migrations.LATEST if isinstance(place, PostgresPlace) else SCHEMA_VERSION
    migrated = invoke(root, *where, "db", "migrate")
    assert migrated.exit_code == 0, migrated.output
    assert f"{latest} migration{'s' if latest > 1 else ''} applied" in migrated.output
    assert f"schema version {latest} of {latest} (up to date)" in migrated.output
    again = invoke(root, *where, "db", "migrate")
    assert "0 migrations applied" in again.output
    after = invoke(root, *where, "db", "status", "--json")
    assert after.exit_code == 0 and '"up_to_date": true' in after.output


# ---- places ------------------------------------------------------------------------


def test_state_env_and_option_choose_the_store(tmp_path: Path, pg_place: PostgresPlace) -> None:
    root = write_project(tmp_path, {}, {"bump": BUMP}, user_keys={"counter": 0})
    ran = invoke(root, "--state", pg_place.url, "run", "bump")
    assert ran.exit_code == 0, ran.output
    assert read_user_keys(pg_place) == {"counter": 1}
    assert not (root / "state.db").exists()  # the project's own file was not used
    listed = invoke(root, "runs", "list", "--json", env={"FLOWRUNNER_STATE": pg_place.url})
    assert listed.exit_code == 0 and '"flow": "bump"' in listed.output
    assert "FLOWRUNNER_STATE" not in os.environ  # --state did not leak past its command


def test_state_in_the_project_file_with_a_password_secret(
    tmp_path: Path, pg_place: PostgresPlace
) -> None:
    state = {"url": pg_place.url, "password": {"secret": "FR_TEST_PGPASS"}}
    root = write_project(tmp_path, {}, {"bump": BUMP}, user_keys={"counter": 5}, state=state)
    missing = invoke(root, "run", "bump")
    assert missing.exit_code == 2 and "FR_TEST_PGPASS" in missing.output  # names the secret
    ran = invoke(root, "run", "bump", env={"FR_TEST_PGPASS": "any-password-trust-auth"})
    assert ran.exit_code == 0, ran.output
    assert read_user_keys(pg_place) == {"counter": 6}
    with pytest.raises(SecretError, match="FR_TEST_PGPASS"):  # unset in this process
        open_store(PostgresPlace(url=pg_place.url, password=SecretRef(name="FR_TEST_PGPASS")))


def test_a_password_is_never_printed(tmp_path: Path, pg_server: PgServer) -> None:
    root = write_project(tmp_path, {})
    secret = "Sw0rdfish-never-shown"
    url = f"postgresql://postgres:{secret}@127.0.0.1:1/flows?connect_timeout=1"
    result = invoke(root, "--state", url, "runs", "list")
    assert result.exit_code == 3
    assert secret not in result.output
    assert "postgresql://postgres@127.0.0.1:1/flows" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    in_query = f"postgresql://postgres@127.0.0.1:1/flows?password={secret}"
    result = invoke(root, "--state", in_query, "db", "status")
    assert result.exit_code == 3 and secret not in result.output
    state = {"url": "postgresql://postgres@127.0.0.1:1/x", "password": {"secret": "FR_PW"}}
    root = write_project(tmp_path, {}, state=state)
    result = invoke(root, "deliveries", "list", env={"FR_PW": secret})
    assert result.exit_code == 3 and secret not in result.output


def test_an_unknown_database_fails_at_once_with_one_line(pg_server: PgServer) -> None:
    url = pg_server.url.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(StateError, match="does not exist") as caught:
        open_store(PostgresPlace(url=url))
    assert "\n" not in str(caught.value)


# ---- lost connections --------------------------------------------------------------


def test_a_terminated_connection_is_opened_again(
    pg_place: PostgresPlace, pg_server: PgServer
) -> None:
    store = PgStore.open(pg_place, None)
    store.set_user_key("before", 1)
    for _ in range(3):
        pg_server.execute("SELECT pg_terminate_backend(%s)", (store.db.backend_pid(),))
        store.update_user_key("n", lambda v: v + 1, default=0)
    assert store.user_keys() == {"before": 1, "n": 3}
    assert store.db.reconnects >= 3
    store.close()


def test_user_key_writes_from_elsewhere_change_the_data_version(pg_place: PostgresPlace) -> None:
    a, b = PgStore.open(pg_place, None), PgStore.open(pg_place, None)
    seen = a.data_version()
    assert a.data_version() == seen  # reading changes nothing
    b.set_user_key("tier", "gold")
    assert a.data_version() != seen and a.user_keys() == {"tier": "gold"}
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p%40ss-word@db:5432/flows", "postgresql://u@db:5432/flows"),
        (
            "postgresql://u@db/flows?password=pw-in-query&sslmode=require",
            "postgresql://u@db/flows?sslmode=require",
        ),  # fmt: skip
        ("postgresql://:only-a-password@db/x", "postgresql://db/x"),
        ("postgres://db", "postgres://db"),
        ("postgresql://", "postgresql://"),
        ("postgresql://[::1]:5432/x", "postgresql://[::1]:5432/x"),
        ("postgresql://u:p@[bad/x", "postgresql://(a URL that cannot be read)"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    from flowrunner.secrets import scrub
    from flowrunner.state import describe
    from flowrunner.state.postgres.url import remember_password

    assert describe(PostgresPlace(url=url)) == shown
    remember_password(url)
    for secret in ("p@ss-word", "p%40ss-word", "pw-in-query", "only-a-password"):
        if secret in url:
            assert secret not in scrub(f"error near {secret} and {url}")


def test_libpq_environment_variables_fill_in_the_url(
    tmp_path: Path, pg_place: PostgresPlace, pg_server: PgServer
) -> None:
    from urllib.parse import unquote, urlsplit

    server = urlsplit(pg_server.url)
    schema = unquote(urlsplit(pg_place.url).query).split("search_path=")[1]
    env = {
        "PGHOST": server.hostname or "",
        "PGPORT": str(server.port or 5432),
        "PGUSER": server.username or "",
        "PGDATABASE": server.path.lstrip("/"),
        "PGOPTIONS": f"-csearch_path={schema}",
    }
    root = write_project(tmp_path, {}, {"bump": BUMP}, user_keys={"counter": 41})
    ran = invoke(root, "--state", "postgresql://", "run", "bump", env=env)
    assert ran.exit_code == 0, ran.output
    assert read_user_keys(pg_place) == {"counter": 42}  # the URL named nothing: all from env
