"""Exports read back and compared with `wsjobs list --json`: CSV, JSON and Parquet through
DuckDB, XLSX through openpyxl, HTML through html.parser. Plus detail tables, limits,
atomic writes and one-line errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import openpyxl
import pytest
from listdata import INJECTION, list_json, make_history, wsjobs

from workspaces_jobs.reporting import export as export_mod
from workspaces_jobs.reporting import synthetic
from workspaces_jobs.reporting.filters import COLUMNS
from workspaces_jobs.reporting.query import JobQuery
from workspaces_jobs.reporting.store import open_store

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("export") / "history.duckdb"
    return path, make_history(path)


@pytest.fixture(scope="module")
def reference(history: tuple[Path, dict[str, str]]) -> list[dict[str, Any]]:
    path, _ = history
    return list_json(path, "--age", "all", "--limit", "0")


def norm(column: str, value: Any, *, naive_tz: ZoneInfo | None = None) -> Any:
    """One comparable form per value, whatever the file format made of it."""
    if value in (None, ""):
        return None
    kind = COLUMNS[column].kind
    if kind == "time":
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace(" ", "T"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=naive_tz or UTC)
        return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)
    if kind == "number":
        return float(value)
    return str(value)


def normalised(
    rows: list[dict[str, Any]], naive_tz: ZoneInfo | None = None
) -> list[dict[str, Any]]:
    return [{k: norm(k, v, naive_tz=naive_tz) for k, v in row.items()} for row in rows]


def duckdb_rows(sql: str) -> list[dict[str, Any]]:
    with duckdb.connect() as con:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def run_export(path: Path, out: Path, *args: str) -> dict[str, Any]:
    proc = wsjobs(path, "export", "--no-sync", "--age", "all", "--out", str(out), "--json", *args)
    return dict(json.loads(proc.stdout))


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_duckdb_formats_match_list(
    history: tuple[Path, dict[str, str]], reference: list[dict[str, Any]], tmp_path: Path, fmt: str
) -> None:
    path, _ = history
    out = tmp_path / f"jobs.{fmt}"
    summary = run_export(path, out, "--format", fmt)
    assert summary["rows"] == len(reference) == 7
    reader = {"csv": "read_csv", "json": "read_json", "parquet": "read_parquet"}[fmt]
    rows = duckdb_rows(f"SELECT * FROM {reader}('{out}')")
    assert normalised(rows) == normalised(reference)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_xlsx_matches_list_with_date_cells(
    history: tuple[Path, dict[str, str]], reference: list[dict[str, Any]], tmp_path: Path
) -> None:
    path, _ = history
    out = tmp_path / "jobs.xlsx"
    run_export(path, out, "--tz", "Europe/Paris")  # format from the suffix
    book = openpyxl.load_workbook(out, read_only=True)
    assert book.sheetnames == ["Jobs"]
    sheet = list(book["Jobs"].iter_rows(values_only=True))
    header, body = list(sheet[0]), sheet[1:]
    assert header == list(reference[0])
    rows = [dict(zip(header, r, strict=True)) for r in body]
    assert isinstance(rows[0]["run_at"], datetime)  # a real date cell, not text
    got, want = normalised(rows, naive_tz=PARIS), normalised(reference)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for key in w:
            if isinstance(w[key], datetime):  # Excel keeps days as a float: ~µs rounding
                assert abs((g[key] - w[key]).total_seconds()) < 0.002, key
            else:
                assert g[key] == w[key], key


class _Tables(HTMLParser):
    """Cells of every <table> (text and data-sort), the summary and any outside links."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.headers: dict[str, list[str]] = {}
        self.summary: dict[str, int] = {}
        self.external: list[str] = []
        self._table = ""
        self._cell: list[str] | None = None
        self._sort = ""
        self._li: str | None = None
        self._in_th = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(str(a[key]))
        if tag == "table":
            self._table = str(a.get("id"))
            self.tables[self._table] = []
            self.headers[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "th":
            self._in_th = True
            self._cell = []
        elif tag == "td":
            self._cell = []
            self._sort = str(a.get("data-sort") or "")
        elif tag == "li" and a.get("data-status"):
            self._li = str(a["data-status"])
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "th" and self._cell is not None:
            self.headers[self._table].append("".join(self._cell))
            self._cell, self._in_th = None, False
        elif tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append(("".join(self._cell), self._sort))
            self._cell = None
        elif tag == "li" and self._li:
            self.summary[self._li] = int("".join(self._cell or ["0"]).split()[0])
            self._li, self._cell = None, None
        elif tag == "table":
            self.tables[self._table] = [r for r in self.tables[self._table] if r]
            self._table = ""


def test_html_matches_list_and_is_self_contained(
    history: tuple[Path, dict[str, str]], reference: list[dict[str, Any]], tmp_path: Path
) -> None:
    path, ids = history
    out = tmp_path / "jobs.html"
    run_export(path, out, "--format", "html", "--tz", "Europe/Paris", "--with-steps")
    raw = out.read_text("utf-8")
    assert INJECTION not in raw and "&#34;; drop table jobs; --" in raw  # autoescaped
    parsed = _Tables()
    parsed.feed(raw)
    assert parsed.external == []  # one file: no scripts, styles or images to fetch
    assert parsed.headers["jobs"] == list(reference[0])
    rows = []
    for cells in parsed.tables["jobs"]:
        row = {}
        for name, (text, key) in zip(parsed.headers["jobs"], cells, strict=True):
            row[name] = key if COLUMNS[name].kind in ("time", "number") else text
        rows.append(row)
    assert normalised(rows) == normalised(reference)
    assert parsed.summary == {
        "Pending": 1,
        "In progress": 1,
        "Completed": 1,
        "Completed with errors": 1,
        "Error": 2,
        "Canceled by the user": 1,
    }
    steps = parsed.tables["steps"]
    assert parsed.headers["steps"][:4] == ["job_id", "device", "device_status", "step"]
    assert [c[0] for c in steps[[r[0][0] for r in steps].index(ids["underscore"])][:8]] == [
        ids["underscore"],
        "t2",
        "Error",
        "precheck",
        "0",
        "True",
        "Failed",
        "3",
    ]
    assert 'class="text st-error"' in raw and "<script>" in raw  # colours, sorting


def test_detail_tables_in_each_format(history: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    path, ids = history
    args = ("--with-steps", "--with-logs", "--status", "error", "--sort", "created", "--asc")
    # JSON: nested lists per job.
    out = tmp_path / "d.json"
    summary = run_export(path, out, *args)
    assert (summary["rows"], summary["steps"], summary["logs"]) == (2, 2, 1)
    jobs = json.loads(out.read_text())
    assert [j["id"] for j in jobs] == [ids["old"], ids["underscore"]]
    failed = jobs[1]
    assert [
        (s["device"], s["step"], s["step_status"], s["exit_code"]) for s in failed["steps"]
    ] == [("t2", "precheck", "Failed", 3)]
    assert [(g["device"], g["stream"], g["message"]) for g in failed["logs"]] == [
        ("t2", "err", "file foo_bar missing")
    ]
    assert jobs[0]["logs"] == []
    # CSV: sibling files, joinable on job_id.
    out = tmp_path / "d.csv"
    summary = run_export(path, out, *args)
    assert summary["files"] == [
        str(out),
        str(tmp_path / "d.steps.csv"),
        str(tmp_path / "d.logs.csv"),
    ]
    logs = duckdb_rows(f"SELECT * FROM read_csv('{tmp_path / 'd.logs.csv'}')")
    assert [(r["job_id"], r["message"]) for r in logs] == [
        (ids["underscore"], "file foo_bar missing")
    ]
    # Parquet: nested columns.
    out = tmp_path / "d.parquet"
    run_export(path, out, *args)
    nested = duckdb_rows(f"SELECT id, len(steps) AS n, logs[1].message AS m FROM '{out}'")
    assert nested == [
        {"id": ids["old"], "n": 1, "m": None},
        {"id": ids["underscore"], "n": 1, "m": "file foo_bar missing"},
    ]
    # XLSX: one sheet per table.
    out = tmp_path / "d.xlsx"
    run_export(path, out, *args)
    book = openpyxl.load_workbook(out, read_only=True)
    assert book.sheetnames == ["Jobs", "Steps", "Logs"]
    log_rows = list(book["Logs"].iter_rows(values_only=True))
    assert log_rows[0][:2] == ("job_id", "ts") and log_rows[1][-1] == "file foo_bar missing"


def test_export_writes_all_rows_not_a_page(tmp_path: Path) -> None:
    path = tmp_path / "history.duckdb"
    make_history(path)
    wsjobs(path, "view", "set", "--limit", "2", "--age", "all")
    assert len(list_json(path)) == 2  # the list shows a page...
    summary = run_export(path, tmp_path / "all.csv")
    assert summary["rows"] == 7  # ...the export every matching row
    assert run_export(path, tmp_path / "three.csv", "--limit", "3")["rows"] == 3


def test_xlsx_row_limit_is_a_clear_error(
    history: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = history
    monkeypatch.setattr(export_mod, "XLSX_MAX_ROWS", 5)  # 4 data rows + header
    out = tmp_path / "big.xlsx"
    with pytest.raises(
        ValueError,
        match=r"XLSX holds at most 4 rows per sheet and sheet Jobs "
        r"would have 7: narrow the filter or use --format csv or parquet",
    ):
        JobQuery(path=path, age="all").export("xlsx", out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["xlsx", "html"])
def test_failed_export_leaves_no_half_file(
    history: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    path, _ = history
    out = tmp_path / f"report.{fmt}"
    out.write_text("previous export")
    monkeypatch.setattr(export_mod, "_CHUNK", 1)  # report progress after every row
    seen: list[int] = []

    def interrupt(done: int, total: int) -> None:
        seen.append(done)
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        JobQuery(path=path, age="all").export(fmt, out, progress=interrupt)
    assert seen[-1] == 3
    assert out.read_text() == "previous export"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    done: list[tuple[int, int]] = []
    JobQuery(path=path, age="all").export(fmt, out, progress=lambda d, t: done.append((d, t)))
    assert done[0] == (0, 7) and done[-1] == (7, 7)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--out", "/no/such/folder/x.csv"],
            "error: cannot write /no/such/folder/x.csv: folder /no/such/folder does not exist",
        ),
        (["--out", "{tmp}", "--format", "csv"], "error: cannot write {tmp}: it is a folder"),
        (
            ["--out", "{tmp}/x.docx"],
            "error: unknown export format '.docx': use one of csv, json, parquet, xlsx, html",
        ),
        (["--out", "{tmp}/x.csv", "--format", "pdf"], "error: unknown export format 'pdf'"),
        (["--out", "{tmp}/x.csv", "--status", "nope"], "error: unknown status 'nope'"),
    ],
)
def test_export_errors_are_one_line(
    history: tuple[Path, dict[str, str]], tmp_path: Path, args: list[str], message: str
) -> None:
    path, _ = history
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = wsjobs(path, "export", "--no-sync", *args, check=False)
    assert proc.returncode == 4
    assert proc.stderr.strip().startswith(message.replace("{tmp}", str(tmp_path))), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_packaged_sql_and_template_load_from_the_installed_package() -> None:
    base = resources.files("workspaces_jobs.reporting")
    for name in ("export_steps.sql", "export_logs.sql", "export_status_counts.sql"):
        assert "_wsjobs_selection" in (base / "sql" / name).read_text("utf-8")
    assert "002_saved_filters.sql" in {p.name for p in (base / "sql").iterdir()}
    assert "sortable" in (base / "templates" / "jobs.html.j2").read_text("utf-8")


def test_synthetic_generator_writes_a_consistent_history(tmp_path: Path) -> None:
    shape = synthetic.Shape(
        jobs=1200, devices_per_job=3, steps_per_device=2, logs_per_step=2, batch=500, days=10
    )
    with open_store(tmp_path / "synthetic.duckdb") as con:
        counts = synthetic.generate(con, shape)
        assert counts == {"jobs": 1200, "job_devices": 3600, "steps": 7200, "logs": 14400}
        checks = con.execute(
            """
            SELECT
              (SELECT count(DISTINCT id) FROM jobs),
              (SELECT count(*) FROM job_devices d ANTI JOIN jobs j ON j.id = d.job_id),
              (SELECT count(*) FROM (
                  SELECT job_id, device FROM job_devices GROUP BY ALL HAVING count(*) > 1)),
              (SELECT count(*) FROM logs l ANTI JOIN steps s ON s.id = l.step_id),
              (SELECT count(DISTINCT status) FROM jobs),
              (SELECT max(created) - min(created) < INTERVAL 10 DAY FROM jobs)
            """
        ).fetchone()
    assert checks == (1200, 0, 0, 0, 6, True)
    rows = JobQuery(
        path=tmp_path / "synthetic.duckdb",
        age="all",
        status="completed-with-errors",
        limit=5,
        columns="devices_ok,devices_failed",
    ).rows()
    assert len(rows) == 5 and all(r["devices_failed"] == 1 and r["devices_ok"] == 2 for r in rows)


FORMULAS = ['=HYPERLINK("http://x","y")', "+1+2", "-3+cmd|' /C calc'!A0", "@SUM(A1)", "\tx", "\ry"]


def test_csv_neutralises_formula_cells_unless_raw(tmp_path: Path) -> None:
    """OWASP CSV injection: a text cell starting with = + - @ TAB CR gets a leading '.
    Numbers stay numbers (a negative exit code is not text); --raw-csv writes as stored."""
    path = tmp_path / "history.duckdb"
    with open_store(path) as con:
        synthetic.add_jobs(
            con,
            [
                {
                    "info": text,
                    "owner": "@owner" if n == 0 else "plain",
                    "status": "Error",
                    "devices": [
                        {
                            "device": "t1",
                            "steps": [{"step": "s", "status": "Failed", "exit_code": -9}],
                        }
                    ],
                    "logs": [{"message": text, "device": "t1", "step": "s"}],
                }
                for n, text in enumerate([*FORMULAS, "safe = text"])
            ],
        )
    import csv

    def cells(file: Path, column: str) -> list[str]:
        with open(file, newline="") as f:
            return [row[column] for row in csv.DictReader(f)]

    args = ("--with-steps", "--with-logs", "--columns", "id,info,owner,status")
    run_export(path, tmp_path / "safe.csv", *args)
    expected = sorted([*("'" + f for f in FORMULAS), "safe = text"])
    assert sorted(cells(tmp_path / "safe.csv", "info")) == expected
    assert "'@owner" in cells(tmp_path / "safe.csv", "owner")
    assert sorted(cells(tmp_path / "safe.logs.csv", "message")) == expected
    assert set(cells(tmp_path / "safe.steps.csv", "exit_code")) == {"-9"}

    run_export(path, tmp_path / "raw.csv", *args, "--raw-csv")
    assert sorted(cells(tmp_path / "raw.csv", "info")) == sorted([*FORMULAS, "safe = text"])
    assert sorted(cells(tmp_path / "raw.logs.csv", "message")) == sorted([*FORMULAS, "safe = text"])
