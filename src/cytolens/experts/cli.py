"""``cytolens experts ...``: run a blinded scoring study in the browser and score it against the classifier."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated

import typer

from cytolens.cli.options import TaskOption
from cytolens.core.console import console, stdout
from cytolens.core.errors import CytolensError, display_path

app = typer.Typer(
    help="Blinded scoring of test images by human experts in the browser, and the human-versus-CNN statistics.",
    no_args_is_help=True,
)

DbOption = Annotated[Path, typer.Option("--db", help="The study's SQLite file (e.g. scoring.sqlite).")]
DEFAULT_PORT = 8000


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url(host: str, port: int) -> str:
    """The URL a browser uses for a bind address (the wildcard addresses map to this machine's name)."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def load_test_set(images: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Classes and ``(class, path)`` of every test image: ``IMAGES/<class>/``, or ``IMAGES/test/<class>/``.

    Raises
    ------
    CytolensError
        If the folder is missing, is not a class-folder dataset, or holds an image that cannot be read.
    """
    from cytolens.data.datacheck import check_dataset

    if not images.is_dir():
        raise CytolensError("test-set folder not found" if not images.exists() else "is not a folder", path=images)
    # Every image is read now: one that cannot be shown would otherwise fail in an expert's browser mid-session.
    check = check_dataset(images)
    if not check.ok:
        path, problem = check.problems[0]
        raise CytolensError(f"{len(check.problems)} test image(s) cannot be shown, first {display_path(path)}: "
                            f"{problem}; 'cytolens data check {images}' lists them all", path=images)
    dataset = check.dataset
    samples = dataset.samples
    if dataset.layout == "class_folders_split":
        samples = samples[samples["split"] == "test"]
        classes = [c for c in dataset.classes if c in set(samples["class"])]
    else:
        classes = list(dataset.classes)
    if samples.empty:
        raise CytolensError("holds no test images", path=images)
    return classes, list(zip(samples["class"], samples["path"], strict=True))


def _port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise CytolensError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port") from exc


@app.command("serve")
def serve(
    images: Annotated[
        Path, typer.Option("--images", help="The test set: TESTSET/<class>/*.tif (or TESTSET/test/<class>/).")
    ],
    db: DbOption,
    task: TaskOption = "all",
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; other than 127.0.0.1 only on a trusted network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = DEFAULT_PORT,
) -> None:
    """Serve the blinded scoring app for one task; stop it with Ctrl-C (every answer is already saved)."""
    import uvicorn

    from cytolens.experts.app import LOOPBACK_HOSTS, create_app
    from cytolens.experts.store import ExpertStore
    from cytolens.data.tasks import parse_task

    classes, test_images = load_test_set(images)
    chosen = parse_task(task, classes)
    created = not db.exists()
    store = ExpertStore(db, create=True)
    new = store.register_test_set(images, classes, test_images)
    if created:
        console.print(f"created the scoring database {db}")
    if new:
        console.print(
            f"warning: {len(new)} image(s) added to {images} after the study started are not shown (e.g. {new[0]})",
            markup=False,
            soft_wrap=True,
        )
    loopback = is_loopback(host)
    if not loopback:
        console.print(
            f"warning: listening on {host} makes the scoring app reachable from other machines over plain HTTP; "
            "do this only on a trusted network",
            markup=False,
            soft_wrap=True,
        )
    _port_free(host, port)
    url = base_url(host, port)
    store.set_meta("base_url", url)
    app_ = create_app(store, chosen, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    experts = store.experts()
    console.print(
        f"task {chosen.name!r}: {len(test_images)} images, answers {', '.join(chosen.classes)}; "
        f"{len(experts)} expert(s){'' if experts else ' - add one with: cytolens experts add NAME --db ' + str(db)}",
        markup=False,
        soft_wrap=True,
    )
    stdout.print(f"serving on {url}/", markup=False, soft_wrap=True)
    console.print("experts sign in with their personal links; stop with Ctrl-C", markup=False, soft_wrap=True)
    # No access log: it would print each expert's token from their /login URL.
    uvicorn.run(app_, host=host.strip("[]"), port=port, log_level="warning", access_log=False)


def _link(store: object, url: str | None, token: str) -> str:
    base = (url or store.meta("base_url") or f"http://127.0.0.1:{DEFAULT_PORT}").rstrip("/")  # type: ignore[attr-defined]
    return f"{base}/login?token={token}"


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="The server's address as experts reach it (default: the last 'serve', or http://127.0.0.1:8000)."
    ),
]


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The expert's name (shown only to them and in the tables).")],
    db: DbOption,
    url: UrlOption = None,
) -> None:
    """Add an expert and print their personal link (shown once; only a hash of its token is stored)."""
    from cytolens.experts.store import ExpertStore

    store = ExpertStore(db, create=True)
    token = store.add_expert(name)
    console.print(
        f"added expert {name.strip()!r}; their personal link (give it only to them):", markup=False, soft_wrap=True
    )
    stdout.print(_link(store, url, token), markup=False, soft_wrap=True)


@app.command("new-link")
def new_link(
    name: Annotated[str, typer.Argument(help="The expert's name.")],
    db: DbOption,
    url: UrlOption = None,
) -> None:
    """Give an expert a new personal link (a lost link); the old one stops working, answers are kept."""
    from cytolens.experts.store import ExpertStore

    store = ExpertStore(db)
    token = store.new_token(name)
    console.print(f"new personal link of {name!r} (the old one no longer works):", markup=False, soft_wrap=True)
    stdout.print(_link(store, url, token), markup=False, soft_wrap=True)


@app.command("list")
def list_experts(db: DbOption) -> None:
    """List the experts and how far each is in each task."""
    from rich.table import Table

    from cytolens.experts.store import ExpertStore

    store = ExpertStore(db)
    sessions = store.sessions()
    table = Table(title=f"{store.path}: {len(store.images())} test images", title_justify="left")
    for column in ("expert", "task", "answered", "last answer"):
        table.add_column(column)
    started = set(sessions["expert"])
    for row in sessions.itertuples(index=False):
        table.add_row(row.expert, row.task, f"{row.answered}/{row.total}", str(row.last_answer_at or "-"))
    for expert in store.experts():
        if expert.name not in started:
            table.add_row(expert.name, "-", "not started", "-")
    stdout.print(table)


@app.command("score")
def score(
    db: DbOption,
    out: Annotated[
        Path, typer.Option("--out", help="A folder of its own for the tables and the report section (e.g. RUN/experts).")
    ],
    predictions: Annotated[
        Path | None,
        typer.Option("--predictions", help="A classification run's predictions.csv (or the run folder): adds Table IV."),
    ] = None,
    include_unfinished: Annotated[
        bool, typer.Option("--include-unfinished", help="Also score experts who have not answered every image.")
    ] = False,
) -> None:
    """Write Table I (average, best expert, vote), the vote's confusion matrices and, with predictions, Table IV."""
    from cytolens.experts.report import markdown, table_i, table_iv, write_expert_report

    report = write_expert_report(db, out, predictions=predictions, include_unfinished=include_unfinished)
    stdout.print("Table I - experts' accuracy (%)\n", markup=False, soft_wrap=True)
    stdout.print(markdown(table_i(report.scores)), markup=False, soft_wrap=True)
    if report.comparisons:
        stdout.print("\nTable IV - classifier against the best expert and the vote (%)\n", markup=False, soft_wrap=True)
        stdout.print(markdown(table_iv(report.comparisons)), markup=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    console.print(
        f"wrote {out} (table_i.md, tables_ii_iii.md, table_iv_experts*.md, report.html)", markup=False, soft_wrap=True
    )
