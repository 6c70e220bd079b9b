"""The blinded scoring web app: one image at a time, in each expert's own order, answers saved at once.

Security model (a lab's intranet or one workstation, plain HTTP):

- Nothing but ``/login`` answers without a valid login. An expert's personal link carries their token once:
  ``/login?token=...`` checks it against the stored hashes (constant-time), opens a login whose random value
  goes into an HttpOnly, SameSite=Strict cookie, and sends the browser on to ``/`` with no token in the URL.
- An expert only ever reaches their own session: images are named by random per-session ids, so another
  expert's ids (and any file name or path) are simply not found, and no page shows another expert's answers.
- Only images of the recorded test set exist for the app; it never maps a URL to a file path.
- Every form post must carry the login's CSRF token, and is refused when the browser says it comes from
  another origin (``Sec-Fetch-Site``, ``Origin``). With a loopback bind the ``Host`` header must be a loopback
  name too, which stops DNS-rebinding pages.
- Pages and images are sent with ``Cache-Control: no-store``, a nonce-based Content-Security-Policy, no
  referrer to other sites and no framing; images have no file name (``Content-Disposition: inline``).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from cytolens.core.errors import ImageReadError
from cytolens.experts.render import PngCache
from cytolens.experts.records import AnswerError, Login
from cytolens.experts.store import ExpertStore
from cytolens.data.tasks import Task

LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not "no-referrer": under it Chromium sends "Origin: null" with form posts, which the CSRF check refuses.
    # "same-origin" still never tells another site a URL of this app.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _asset(name: str) -> Markup:
    # Our own files, inlined under the page's CSP nonce: no request for them, nothing to serve unauthenticated.
    return Markup(resources.files("cytolens.experts").joinpath("static", name).read_text(encoding="utf-8"))


#: The largest form post accepted: an answer is a few short fields (item id, class, CSRF token).
MAX_FORM_BYTES = 4096


def _form_post_refusal(request: Request) -> tuple[int, str] | None:
    """Why a POST must be refused before its body is read, or None: only small url-encoded forms are taken."""
    if request.method != "POST":
        return None
    length = request.headers.get("content-length", "0")
    if "transfer-encoding" in request.headers or not length.isdigit():
        return 411, "a form post needs a Content-Length"
    if int(length) > MAX_FORM_BYTES:
        return 413, f"form too large ({length} bytes, at most {MAX_FORM_BYTES})"
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if int(length) > 0 and kind != "application/x-www-form-urlencoded":
        return 415, "only url-encoded forms are accepted"
    return None


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def question_text(task: Task) -> str:
    """What the page asks (``"Which class is this cell: 0, 0.1 or 1?"``)."""
    choices = list(task.classes)
    listed = choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"
    return f"Which class is this cell: {listed}?"


def create_app(
    store: ExpertStore,
    task: Task,
    *,
    cache_dir: str | Path | None = None,
    allowed_hosts: Sequence[str] | None = None,
    secure_cookie: bool = False,
) -> FastAPI:
    """Build the scoring app for one task of a study.

    Parameters
    ----------
    store : ExpertStore
        The study's database, with its test set recorded.
    task : Task
        The task every expert answers on this server.
    cache_dir : str or Path, optional
        Where rendered PNGs are cached; default ``<db>.cache/`` beside the database.
    allowed_hosts : sequence of str, optional
        Host names the ``Host`` header may carry (e.g. :data:`LOOPBACK_HOSTS` for a loopback bind). Default:
        any.
    secure_cookie : bool, default False
        Mark the login cookie ``Secure`` (only when the app is reached over HTTPS).

    Returns
    -------
    fastapi.FastAPI
    """
    cache = PngCache(cache_dir if cache_dir is not None else store.path.with_name(store.path.name + ".cache"))
    cookie_name = f"cytolens_scoring_{store.instance_id}"
    hosts = None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}
    env = Environment(loader=PackageLoader("cytolens.experts", "templates"), autoescape=select_autoescape(default=True))
    css, script = _asset("scoring.css"), _asset("scoring.js")
    app = FastAPI(title="cytolens blinded scoring", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request.state.nonce = secrets.token_urlsafe(16)
        refusal = _form_post_refusal(request)
        if hosts is not None and _host_name(request.headers.get("host", "")) not in hosts:
            response: Response = Response("unexpected Host header\n", status_code=400, media_type="text/plain")
        elif refusal is not None:
            response = Response(refusal[1] + "\n", status_code=refusal[0], media_type="text/plain")
        else:
            response = await call_next(request)
        nonce = request.state.nonce
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; img-src 'self'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    def page(request: Request, template: str, status: int = 200, **context: object) -> HTMLResponse:
        html = env.get_template(template).render(
            nonce=request.state.nonce, css=css, script=script, task=task.name, **context
        )
        return HTMLResponse(html, status_code=status)

    def message(request: Request, status: int, title: str, text: str, **context: object) -> HTMLResponse:
        return page(request, "message.html", status, title=title, text=text, **context)

    def unauthorised(request: Request) -> HTMLResponse:
        return message(
            request, 401, "Sign in with your link",
            "This page needs your personal scoring link. Open the link you were given (it signs you in), "
            "or ask the person running the study for a new one.",
        )

    def current_login(request: Request) -> Login | None:
        value = request.cookies.get(cookie_name)
        return store.login(value) if value else None

    def cross_site(request: Request) -> str | None:
        fetch_site = request.headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site != "same-origin":
            return f"Sec-Fetch-Site is {fetch_site!r}"
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return f"Origin is {origin!r}"
        return None

    def check_post(request: Request, csrf: str) -> tuple[Login | None, HTMLResponse | None]:
        """The login of a form post, or the response refusing it."""
        reason = cross_site(request)
        if reason is not None:
            return None, message(request, 403, "Refused", f"A form from another site cannot post here ({reason}).")
        login = current_login(request)
        if login is None:
            return None, unauthorised(request)
        if not hmac.compare_digest(csrf.encode(), login.csrf.encode()):
            return None, message(request, 403, "Refused", "This form has expired or comes from elsewhere; reload the page.")
        return login, None

    def scoring_page(request: Request, login: Login, *, previous: bool) -> Response:
        session = store.session(login.expert, task)
        progress = store.progress(session)
        if previous and progress.answered == 0:
            return RedirectResponse("/", status_code=303)
        if not previous and progress.complete:
            return page(request, "done.html", expert=login.expert.name, total=progress.total, csrf=login.csrf)
        item = store.item(session, progress.answered - 1 if previous else progress.answered)
        assert item is not None  # positions 0..total-1 all exist
        return page(
            request,
            "score.html",
            title=f"Image {item.position + 1} of {progress.total}",
            expert=login.expert.name,
            csrf=login.csrf,
            public_id=item.public_id,
            number=item.position + 1,
            total=progress.total,
            answered=progress.answered,
            choices=task.classes,
            question=question_text(task),
            selected=item.answer,
            changing=previous,
            can_go_back=progress.answered > 0 and not previous,
        )

    @app.get("/login")
    def login_route(request: Request, token: str = "") -> Response:
        expert = store.authenticate(token) if token else None
        if expert is None:
            return message(request, 403, "Link not valid", "This scoring link is not valid (any more). Ask for a new one.")
        cookie, _ = store.create_login(expert)
        # A 200 page that moves on by itself, not a 303: after a link clicked in a mail program (a cross-site
        # navigation) the browser would not send a SameSite=Strict cookie along a redirect.
        response = page(request, "signed_in.html", title="Signed in", expert=expert.name)
        response.set_cookie(cookie_name, cookie, httponly=True, samesite="strict", secure=secure_cookie, path="/")
        return response

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/")
    def index(request: Request) -> Response:
        login = current_login(request)
        return unauthorised(request) if login is None else scoring_page(request, login, previous=False)

    @app.get("/previous")
    def previous(request: Request) -> Response:
        login = current_login(request)
        return unauthorised(request) if login is None else scoring_page(request, login, previous=True)

    @app.post("/answer")
    def answer(
        request: Request,
        item: Annotated[str, Form()] = "",
        answer: Annotated[str, Form()] = "",
        csrf: Annotated[str, Form()] = "",
    ) -> Response:
        login, refusal = check_post(request, csrf)
        if login is None:
            return refusal  # type: ignore[return-value]
        session = store.session(login.expert, task)
        found = store.item_by_public_id(session, item)
        if found is None:
            return message(request, 404, "Not found", "No such image in your session.")
        try:
            store.record_answer(session, found.position, answer)
        except AnswerError as exc:
            return message(request, 409, "Answer not saved", str(exc), back=True)
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        login, refusal = check_post(request, csrf)
        if login is None:
            return refusal  # type: ignore[return-value]
        store.logout(request.cookies.get(cookie_name, ""))
        response = message(request, 200, "Signed out", "Your answers are saved. Your link signs you in again.")
        response.delete_cookie(cookie_name, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/image/{public_id}")
    def image(request: Request, public_id: str) -> Response:
        login = current_login(request)
        if login is None:
            return Response(status_code=401)
        found = store.item_by_public_id(store.session(login.expert, task), public_id)
        if found is None:
            return Response(status_code=404)
        try:
            data = cache.get(found.image_id, store.image_path(found.image_id))
        except (OSError, ImageReadError):
            return Response("image cannot be read\n", status_code=500, media_type="text/plain")
        return Response(data, media_type="image/png", headers={"Content-Disposition": "inline"})

    return app
