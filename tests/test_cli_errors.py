"""Every failure is one ``error:`` line with an exit code that is not a job outcome (#15).

Each class of the hardening issue's probes, as a user meets it: a real ``wsjobs`` process
(the managed test server, real DuckDB files, a real 1 MB tmpfs for a full disk) and its
stderr and exit code. Exit codes: 0-3 job outcomes, 4 bad input, 5 server unreachable,
6 history locked, 7 history corrupt, 8 forbidden, 9 write failed, 70 internal.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import typer
from webauth import signed_in

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

from workspaces_jobs import errors
from workspaces_jobs.cli.boundary import run_guarded
from workspaces_jobs.cli.output import ansi_text, plain
from workspaces_jobs.reporting.store import open_store
from workspaces_jobs.reporting.synthetic import add_jobs

ESC = "\x1b"
HOSTILE_OUTPUT = f"{ESC}]0;pwned{chr(7)}{ESC}[2J{ESC}[31mred{ESC}[0m tail"


def wsjobs(
    *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ) | {"COLUMNS": "200"} | (env or {})
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "workspaces_jobs.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=full,
    )


def one_error_line(out: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Assert ``out`` failed with ``code`` and exactly one ``error:`` line; return it."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    errors_ = [line for line in lines if line.startswith("error:")]
    assert len(errors_) == 1 and lines[-1] == errors_[0], lines
    for needle in needles:
        assert needle in errors_[0], errors_[0]
    return errors_[0]


def _wrapped(inner: BaseException) -> BaseException:
    """``inner`` as the context of another exception (as Prefect's client wraps it)."""
    try:
        try:
            raise inner
        except BaseException:
            raise RuntimeError("while talking to the API") from None
    except RuntimeError as outer:
        outer.__context__ = inner
        return outer


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    """A history with two jobs (one with markup in its info), created now."""
    path = tmp_path / "history.duckdb"
    now = datetime.now(UTC)
    with open_store(path) as con:
        ids = add_jobs(
            con,
            [
                {
                    "info": "rotate certs in [/etc/ssl/private] :warning:",
                    "status": "Completed",
                    "created": now - timedelta(minutes=1),
                    "devices": [{"device": "t1", "status": "Completed", "steps": [{"step": "s"}]}],
                    "logs": [{"message": HOSTILE_OUTPUT, "device": "t1", "step": "s"}],
                },
                {"info": "second job", "status": "Error", "created": now - timedelta(minutes=2)},
            ],
        )
    return path, ids


# --- the boundary itself (in-process, table-driven) ---------------------------------------


def _app_raising(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def boom() -> None:
        raise exc

    @app.command()
    def fine() -> None:
        pass

    return app


@pytest.mark.parametrize(
    ("exc", "code", "needle"),
    [
        (KeyError("x"), 70, "re-run with --debug"),
        (IndexError("list index out of range"), 70, "internal error"),
        (ValueError("a bug, not the user's input"), 70, "internal error"),
        (errors.BadInput("bad --thing"), 4, "bad --thing"),
        (errors.NotFound("no job 1"), 4, "no job 1"),
        (errors.ServerUnreachable("api down"), 5, "api down"),
        (errors.HistoryLocked("held by x"), 6, "held by x"),
        (errors.HistoryCorrupt("damaged"), 7, "damaged"),
        (errors.Forbidden("viewer"), 8, "viewer"),
        (errors.WriteFailed("ENOSPC"), 9, "ENOSPC"),
        (httpx.ConnectError("refused"), 5, "does not answer"),
        (OSError(28, "No space left on device", "/x.csv"), 9, "ENOSPC"),
        (OSError(36, "File name too long", "/x"), 4, "ENAMETOOLONG"),
        (_wrapped(httpx.ConnectError("refused")), 5, "does not answer"),
    ],
)
def test_boundary_maps_every_exception_to_one_line_and_its_code(
    exc: BaseException, code: int, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_guarded(_app_raising(exc), ["boom"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert "bad input" not in err[0]


def test_boundary_debug_prints_the_traceback_then_the_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_guarded(_app_raising(KeyError("x")), ["boom"], debug=True) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: internal")


def test_boundary_usage_errors_are_4_never_2(capsys: pytest.CaptureFixture[str]) -> None:
    app = _app_raising(KeyError("x"))
    assert run_guarded(app, ["nope"]) == 4
    assert run_guarded(app, ["fine", "--what"]) == 4
    assert run_guarded(app, ["fine"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 2 and all(line.startswith("error:") for line in err)


def test_old_exception_classes_sit_under_the_root_with_their_codes() -> None:
    from workspaces_jobs.catalog import CatalogError
    from workspaces_jobs.gateway import JobNotFound
    from workspaces_jobs.lifecycle import LifecycleError
    from workspaces_jobs.notify.smtp import NotifyError
    from workspaces_jobs.reporting.store import StoreCorrupt, StoreError, StoreLocked
    from workspaces_jobs.server import ServerError
    from workspaces_jobs.web.routes import Refused

    expected = {
        CatalogError: 4,
        JobNotFound: 4,
        LifecycleError: 4,
        NotifyError: 4,
        StoreError: 4,
        StoreLocked: 6,
        StoreCorrupt: 7,
        ServerError: 5,
        Refused: 8,
    }
    for cls, code in expected.items():
        assert issubclass(cls, errors.WsJobsError), cls
        assert cls.exit_code == code, cls
    assert issubclass(JobNotFound, LookupError) and issubclass(CatalogError, ValueError)


# --- safe text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("rotate certs in [/etc/ssl/private]", "rotate certs in [/etc/ssl/private]"),
        ("[/x]", "[/x]"),
        (f"a{ESC}]0;title{chr(7)}b", "ab"),  # window title (OSC ... BEL)
        (f"a{ESC}]8;;http://x{ESC}\\link", "alink"),  # hyperlink (OSC ... ST)
        (f"{ESC}[2J{ESC}[Hclear", "clear"),  # clear screen, cursor home
        (f"{ESC}[31mred{ESC}[0m", "red"),
        (f"x{ESC}Pdcs{ESC}\\y", "xy"),  # device control string
        ("bell\x07 back\x08 cr\r c1\x9b2J", "bell back cr c12J"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
    ],
)
def test_plain_removes_every_sequence_and_control(raw: str, shown: str) -> None:
    assert plain(raw) == shown


def test_device_output_keeps_colours_and_nothing_else() -> None:
    text = ansi_text(HOSTILE_OUTPUT)
    assert text.plain == "red tail"
    assert [(s.start, s.end, str(s.style)) for s in text.spans] == [(0, 3, "color(1)")]


# --- 4: one line instead of a traceback -----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--limit", "abc"],
        ["list", "--no-such-flag"],
        ["no-such-command"],
        ["notify", "--list", "--deliver"],
    ],
)
def test_usage_mistakes_exit_4_not_click_2(args: list[str]) -> None:
    one_error_line(wsjobs(*args), 4)


@pytest.mark.parametrize(
    "args",
    [
        ["cancel", str(uuid.uuid4())],
        ["kill", str(uuid.uuid4())],
        ["rerun", str(uuid.uuid4())],
        ["notify", str(uuid.uuid4()), "--email", "ops@example.com"],
        ["run", "ok", "--all"],
        ["watchdog", "--once"],
    ],
)
def test_unreachable_api_is_one_line_exit_5(args: list[str], tmp_path: Path) -> None:
    env = {"PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api"}
    one_error_line(wsjobs(*args, env=env), 5, "does not answer", "wsjobs server start")


def test_sync_with_unreachable_api_is_one_line_exit_5(tmp_path: Path) -> None:
    env = {"PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api"}
    out = wsjobs("sync", "--history", str(tmp_path / "h.duckdb"), env=env)
    one_error_line(out, 5, "does not answer")


def test_list_and_show_fall_back_to_the_history_when_the_api_is_down(
    history: tuple[Path, list[str]],
) -> None:
    path, ids = history
    env = {
        "PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api",
        "WSJOBS_HISTORY": str(path),
    }
    # `list` reads the history without the API (#17: no foreground sync); `--sync` tries
    # the API, warns that it does not answer, and shows the history all the same.
    listed = wsjobs("list", "--age", "all", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == sorted(ids)
    synced = wsjobs("list", "--sync", "--age", "all", "--json", env=env)
    assert synced.returncode == 0, synced.stderr
    assert sorted(r["id"] for r in json.loads(synced.stdout)) == sorted(ids)
    assert synced.stderr.startswith("warning:") and "does not answer" in synced.stderr
    shown = wsjobs("show", ids[0], env=env)
    assert shown.returncode == 0, shown.stderr
    assert "warning:" in shown.stderr and "history file's copy" in shown.stderr
    assert "rotate certs in [/etc/ssl/private] :warning:" in shown.stdout


# --- 4/7: markup and terminal control in user text -------------------------------------------


@pytest.mark.usefixtures("prefect_server")
def test_markup_and_escape_sequences_in_a_real_job_are_shown_literally() -> None:
    info = "rotate certs in [/etc/ssl/private] [bold]x[/bold] :warning:"
    run = wsjobs(
        "run", "inject", "--devices", "t1", "--json", "--info", info,
        "--param", f"value={HOSTILE_OUTPUT}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    job_id = json.loads(run.stdout)["id"]
    plain_show = wsjobs("show", job_id)
    assert plain_show.returncode == 0, plain_show.stderr
    assert info in plain_show.stdout
    assert ESC not in plain_show.stdout  # not a terminal: no colour either
    assert "env=red tail" in plain_show.stdout
    coloured = wsjobs("show", job_id, env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert coloured.returncode == 0, coloured.stderr
    assert f"{ESC}]0;" not in coloured.stdout and f"{ESC}[2J" not in coloured.stdout
    assert "env=red tail" in plain(coloured.stdout)  # colours may stay, as colours only
    listed = wsjobs("list", "--sync", "--age", "all", "--search", "[/etc/ssl/private]")
    assert listed.returncode == 0, listed.stderr
    assert "[/etc/ssl/private]" in listed.stdout


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    "args",
    [
        ["show", "[/x]"],
        ["cancel", "[/x]"],
        ["kill", "[/x]"],
        ["rerun", "[/x]"],
        ["notify", "--list", "[/x]"],
        ["notify", "[/x]", "--email", "ops@example.com"],
        ["run", "[/x]", "--all"],
        ["list", "--filter", "[/x]", "--no-sync"],
    ],
)
def test_a_bracketed_id_is_one_line_exit_4(args: list[str], tmp_path: Path) -> None:
    if "--no-sync" in args:
        with open_store(tmp_path / "h.duckdb"):
            pass
        args = [*args, "--history", str(tmp_path / "h.duckdb")]
    line = one_error_line(wsjobs(*args), 4)
    assert "[/x]" in line


# --- 4/5: numbers bounded at parse time and when read back ----------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["list", "--limit", "99999999999999999999"], "bad limit"),
        (["list", "--limit", str(2**66)], "bad limit"),
        (["list", "--limit", "-1"], "bad limit"),
        (["list", "--started-over", "999999999d"], "too long"),
        (["list", "--started-over", "9" * 400 + "d"], "too long"),
        (["list", "--until", "9999-12-31"], "out of range"),
        (["list", "--since", "0001-01-01"], "out of range"),
        (["list", "--since", "9999-12-31T23:59"], "out of range"),
        (["export", "--out", "x.csv", "--limit", str(2**66)], "bad limit"),
        (["device", "t1", "--limit", str(2**66)], "bad limit"),
        (["view", "set", "--limit", str(2**66)], "bad limit"),
        (["filters", "save", "big", "--status", "error", "--limit", str(2**66)], "bad limit"),
        (["watchdog", "--interval", "nan"], "--interval"),
        (["watchdog", "--interval", "inf"], "--interval"),
        (["watchdog", "--grace", "1e308"], "--grace"),
        (["ui", "--sync-every", "inf"], "--sync-every"),
        (["ui", "--port", "99999999999999999999"], "bad port"),
    ],
)
def test_huge_numbers_are_one_line_exit_4(
    args: list[str], needle: str, history: tuple[Path, list[str]]
) -> None:
    path, _ = history
    if args[0] in ("list", "export", "device"):
        args = [*args, "--no-sync"]
    if args[0] in ("list", "export", "device", "view", "filters"):
        args = [*args, "--history", str(path)]
    one_error_line(wsjobs(*args), 4, needle)


def _store_bad_values(path: Path) -> None:
    """What an older version let ``view set --limit 2**66`` and a saved filter store."""
    with open_store(path) as con:
        now = datetime.now(UTC)
        con.execute(
            "INSERT INTO view_settings (key, value, updated) VALUES ('limit', $v, $t)",
            {"v": json.dumps(2**66), "t": now},
        )
        con.execute(
            "INSERT INTO saved_filters (name, spec, created, updated) VALUES ('big', $s, $t, $t)",
            {"s": json.dumps({"statuses": ["Error"], "limit": 2**66}), "t": now},
        )


def test_a_bad_stored_view_or_filter_is_a_warning_never_fatal(
    history: tuple[Path, list[str]],
) -> None:
    path, ids = history
    _store_bad_values(path)
    listed = wsjobs("list", "--age", "all", "--no-sync", "--history", str(path), "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 2
    # one warning for the bad stored value (a synthetic history also gets the staleness one)
    assert listed.stderr.count("view setting limit") == 1 and "error:" not in listed.stderr
    own = wsjobs("list", "--filter", "big", "--age", "all", "--no-sync", "--history", str(path))
    assert own.returncode == 0, own.stderr
    assert "saved filter 'big'" in own.stderr and "second job" in own.stdout
    filters = wsjobs("filters", "--history", str(path))
    assert filters.returncode == 0 and "big" in filters.stdout, filters.stderr
    device = wsjobs("device", "t1", "--no-sync", "--history", str(path))
    assert device.returncode == 0, device.stderr


def test_the_web_list_survives_a_bad_stored_view(history: tuple[Path, list[str]]) -> None:
    from workspaces_jobs.web.app import create_app
    from workspaces_jobs.web.state import WebState

    path, _ = history
    _store_bad_values(path)
    state = WebState(path, sync_every=0)
    with TestClient(create_app(state), base_url="http://127.0.0.1:8787") as client:
        signed_in(client)
        page = client.get("/", params={"age": "all"})
        assert page.status_code == 200 and "second job" in page.text
        assert client.get("/", params={"filter": "big", "age": "all"}).status_code == 200


# --- 4: damaged history, full disk, impossible export targets --------------------------------


def _truncate(path: Path) -> None:
    os.truncate(path, 3 * 4096 + 100)  # the headers survive, every data block is cut


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a database " * 500)


def _flip_header_block(path: Path) -> None:
    with path.open("r+b") as f:  # the first block after the two file headers
        f.seek(4096 + 100)
        f.write(b"\xff" * 16)


# (_flip_header_block was for the one-file DuckDB history's header; the DuckLake catalog is
# SQLite, where those bytes may lie in a page no query reads.)
@pytest.mark.parametrize("damage", [_truncate, _garbage])
def test_a_damaged_history_is_one_line_exit_7(
    damage: Callable[[Path], None], history: tuple[Path, list[str]]
) -> None:
    path, _ = history
    damage(path)
    for args in (["list", "--no-sync"], ["filters"], ["view", "show"]):
        out = wsjobs(*args, "--history", str(path))
        one_error_line(out, 7, "damaged", "move it aside", "wsjobs sync --full")


def _on_tmpfs(
    mount: Path, *args: str, seed: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``wsjobs ARGS`` with a 1 MB tmpfs mounted on ``mount`` (a private mount namespace, so
    no root is needed and nothing outlives the command); stdout ends with ``LEFT:`` and
    what the command left in the mount. With ``seed``, that file is copied in first and
    the rest of the tmpfs is filled up, so the command's first write hits a full disk."""
    if not shutil.which("unshare"):
        pytest.fail("the disk-full tests need `unshare` (util-linux) to mount a small tmpfs")
    script = (
        'm=$1; seed=$2; shift 2; mount -t tmpfs -o size=1m tmpfs "$m" || exit 99;'
        ' if [ -n "$seed" ]; then cp "$seed" "$m/" || exit 98;'
        ' dd if=/dev/zero of="$m/filler" bs=4096 2>/dev/null; fi;'
        ' "$@"; rc=$?; echo "LEFT:$(ls -A "$m" | tr "\\n" " ")"; exit $rc'
    )
    mount.mkdir(exist_ok=True)
    prefix = ["unshare", "--mount", "--map-root-user", "sh", "-c", script, "sh", str(mount)]
    prefix.append(str(seed) if seed else "")
    out = wsjobs(*args, prefix=prefix)
    assert out.returncode not in (98, 99), f"could not mount or fill a tmpfs: {out.stderr}"
    return out


@pytest.fixture(scope="module")
def big_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~4 MB of CSV when exported: more than the 1 MB tmpfs holds."""
    from workspaces_jobs.reporting.synthetic import Shape, generate

    path = tmp_path_factory.mktemp("big") / "history.duckdb"
    with open_store(path) as con:
        generate(con, Shape(jobs=20_000, days=30))
    return path


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "xlsx", "html"])
def test_disk_full_during_export_names_enospc_and_leaves_nothing(
    fmt: str, big_history: Path, tmp_path: Path
) -> None:
    mount = tmp_path / "small"
    out = _on_tmpfs(
        mount, "export", "--no-sync", "--history", str(big_history), "--age", "all",
        "--out", str(mount / f"jobs.{fmt}"),
    )  # fmt: skip
    one_error_line(out, 9, "No space left on device (ENOSPC)", f"jobs.{fmt}")
    assert out.stdout.strip().splitlines()[-1] == "LEFT:"  # no partial file, no temp file


@pytest.mark.usefixtures("prefect_server")
def test_disk_full_during_sync_names_enospc(tmp_path: Path) -> None:
    """The sync's transaction fails on a full disk; its ROLLBACK then fails too ("cannot
    rollback"), which used to be all the user saw."""
    wsjobs("run", "ok", "--devices", "t1", "--json")  # at least one job to pull
    seed = tmp_path / "history.duckdb"
    with open_store(seed):  # an empty, migrated history: the sync only has rows to add
        pass
    mount = tmp_path / "small"
    out = _on_tmpfs(mount, "sync", "--history", str(mount / "history.duckdb"), "--quiet", seed=seed)
    line = one_error_line(out, 9, "No space left on device (ENOSPC)", "history.duckdb")
    assert "rollback" not in line.lower()


@pytest.mark.parametrize(
    "target",
    ["/proc/jobs.csv", "/sys/jobs.csv", "/proc/self/status", "LONG", "FIFO", "/"],
)
def test_impossible_export_targets_are_one_line_exit_4(
    target: str, history: tuple[Path, list[str]], tmp_path: Path
) -> None:
    path, _ = history
    if target == "LONG":
        target = str(tmp_path / ("a" * 300 + ".csv"))
    if target == "FIFO":
        fifo = tmp_path / "pipe.csv"
        os.mkfifo(fifo)
        target = str(fifo)
    out = wsjobs(
        "export", "--no-sync", "--history", str(path), "--age", "all", "--format", "csv",
        "--out", target,
    )  # fmt: skip
    one_error_line(out, 4, "cannot write")
    if target.endswith("pipe.csv"):
        assert Path(target).is_fifo()  # not replaced by a regular file


# --- 9: reads create nothing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["list", "--no-sync"], 4),
        (["device", "t1", "--no-sync"], 4),
        (["export", "--no-sync", "--out", "OUT"], 4),
        (["filters"], 0),
        (["view", "show"], 0),
    ],
)
def test_reads_create_no_file_or_folder(args: list[str], code: int, tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "dir" / "h.duckdb"
    args = [str(tmp_path / "out.csv") if a == "OUT" else a for a in args]
    out = wsjobs(*args, "--history", str(missing))
    if code:
        one_error_line(out, code, "no history file", "wsjobs sync")
    else:
        assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- 8: a LAN-exposed web view answers only to its own names ---------------------------------


def test_a_lan_web_view_refuses_a_rebinding_host(history: tuple[Path, list[str]]) -> None:
    from workspaces_jobs.web.app import create_app
    from workspaces_jobs.web.security import HostGuard, allowed_hosts
    from workspaces_jobs.web.state import WebState

    path, _ = history
    state = WebState(path, sync_every=0)
    with TestClient(create_app(state, host="0.0.0.0"), base_url="http://127.0.0.1:8787") as c:
        signed_in(c)
        assert c.get("/", headers={"host": "rebound.evil.example"}).status_code == 400
        assert c.get("/", headers={"host": "rebound.evil.example:8787"}).status_code == 400
        assert c.get("/", headers={"host": "127.0.0.1:8787"}).status_code == 200
        name = socket.gethostname()
        assert c.get("/", headers={"host": f"{name}:8787"}).status_code == 200
    guard = HostGuard(lambda *a: None, allowed=allowed_hosts("0.0.0.0"), own_address=True)  # type: ignore[arg-type, return-value]
    assert guard.allows("192.168.1.5:8787", ("192.168.1.5", 8787))  # the address it came in on
    assert not guard.allows("evil.example:8787", ("192.168.1.5", 8787))
    assert not guard.allows("192.168.1.6", ("192.168.1.5", 8787))
    assert not guard.allows("", ("192.168.1.5", 8787))
