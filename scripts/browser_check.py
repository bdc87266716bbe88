"""Check a notebook's ipywidgets explorer in a real browser: JupyterLab + headless Chromium.

The notebook tests (nbclient) run the cells, but only a browser shows that the widgets render
and react: that the front-end extension loads, that moving the slider reaches the kernel and
that the kernel's answer comes back to the page. This module starts JupyterLab on a copy of a
notebook, opens it in headless Chromium through Playwright, runs all cells, moves the slider
with CSS class ``tood-alpha`` and waits for the HTML widget with class ``tood-summary`` to change.

    python scripts/browser_check.py notebooks/03_anchor_assignment.ipynb --screenshot out.png

Needs Debian's Chromium (``apt-get install chromium``) and the Python package ``playwright``
(``pip install playwright``; no ``playwright install``: we drive the system Chromium).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

SUMMARY = ".tood-summary"
SLIDER = ".tood-alpha"
# JupyterLab renders both stderr streams and tracebacks (error outputs) with this MIME type.
STDERR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
# Without the background-networking flags Chromium keeps trying to reach Google's services and,
# on a closed network, hangs at start-up.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# User settings for the fresh JupyterLab: no news or update checks (no network, no toast over the
# screenshot), and every cell kept in the DOM (with windowing, cells scrolled out of view may
# not be rendered, so their widgets could not be found).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class BrowserCheckError(RuntimeError):
    """The check could not run, or the notebook / widget did not behave."""


class NotebookError(BrowserCheckError):
    """A cell of the notebook printed a traceback or an error."""


def find_chromium() -> str:
    """Path of the system Chromium, or an error that says how to install it."""
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserCheckError("Chromium not found (looked for /usr/bin/chromium, chromium, chromium-browser); "
                            "install Debian's: apt-get update && apt-get install -y --no-install-recommends chromium")


def import_playwright():
    """Playwright's sync API, or an error that says how to install it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserCheckError(f"Python package playwright is missing ({exc}); install it with "
                                f"`{sys.executable} -m pip install playwright` (the system Chromium is used, "
                                f"so `playwright install` is not needed)") from exc
    return sync_playwright


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file ('' if there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def check_kernel_python(env: dict, kernel_name: str = "python3") -> None:
    """Fail unless kernel ``kernel_name`` runs ``sys.executable``, the Python of this process.

    jupyter_client replaces an ``argv[0]`` of plain ``python``/``python3`` with the server's own
    interpreter, and the server is started with ``sys.executable``; any other argv[0] must be
    ``sys.executable`` itself (compared unresolved: a venv's python is a symlink to the system's).
    """
    out = subprocess.run([sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise BrowserCheckError(f"`jupyter kernelspec list` failed:\n{out.stderr}")
    specs = json.loads(out.stdout)["kernelspecs"]
    if kernel_name not in specs:
        raise BrowserCheckError(f"no kernel {kernel_name!r} for {sys.executable} (kernels: {sorted(specs)}); "
                                f"install ipykernel into this environment")
    argv0 = specs[kernel_name]["spec"]["argv"][0]
    plain = {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]}
    if argv0 not in plain and os.path.abspath(argv0) != os.path.abspath(sys.executable):
        raise BrowserCheckError(f"kernel {kernel_name!r} ({specs[kernel_name]['resource_dir']}) runs {argv0}, "
                                f"not {sys.executable}")


def start_jupyterlab(notebook_dir, env: dict | None = None, port: int | None = None, timeout_s: float = 120):
    """Start JupyterLab serving ``notebook_dir``; return ``(base_url, token, process)``.

    ``env`` is the server's (and so the kernels') environment, default ``os.environ``. The server
    gets fresh, temporary settings/workspace folders (with its log) so no saved layout of an
    earlier session reopens other files. Stop it with :func:`stop_jupyterlab`, which removes them.
    Waits until ``/api/status`` answers; on timeout or early exit raises with the server's log tail.
    """
    notebook_dir = Path(notebook_dir).resolve()
    env = dict(os.environ if env is None else env)
    home = Path(tempfile.mkdtemp(prefix="tood-lab-home-"))
    settings = home / "settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env.update(JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    try:
        check_kernel_python(env)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise

    token = secrets.token_hex(16)
    port = port or free_port()
    # IdentityProvider.token is what --ServerApp.token became in jupyter_server 2 (same effect, no warning).
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebook_dir}", f"--port={port}",
           "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
           # Nothing may try the network: no news feed, no update check.
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           # window.jupyterapp, so the check can run JupyterLab commands instead of clicking menus.
           "--LabApp.expose_app_in_browser=True"]
    log_path = home / "jupyterlab.log"
    log = open(log_path, "wb")
    # A new session: the server and its kernels form one process group that stop_jupyterlab kills.
    process = subprocess.Popen(cmd, cwd=notebook_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()
    process.log_path, process.lab_home = log_path, home  # for error messages, and for stop_jupyterlab
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if process.poll() is not None:
                raise BrowserCheckError(f"JupyterLab exited with code {process.returncode} during start-up; "
                                        f"log tail:\n{log_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base_url}/api/status?token={token}", timeout=5) as answer:
                    if answer.status == 200:
                        return base_url, token, process
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise BrowserCheckError(f"JupyterLab did not answer {base_url}/api/status within {timeout_s:g} s; "
                                        f"log tail:\n{log_tail(log_path)}")
            time.sleep(0.5)
    except BaseException:
        stop_jupyterlab(process)
        raise


def descendants(pid: int) -> list:
    """psutil handles of a process's children, grandchildren, ... ([] without psutil, an ipykernel dependency)."""
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:  # no psutil, or the process is gone already
        return []


def stop_jupyterlab(process: subprocess.Popen, grace_s: float = 15) -> None:
    """Stop the server and its kernels, and remove the server's temporary settings folder.

    SIGTERM to the server's process group lets it shut its kernels down; whatever is left after
    ``grace_s`` gets SIGKILL. Kernels run in process groups of their own (jupyter_client starts
    each in a new session), so the ones still alive at the end are killed one group at a time.
    """
    kernels = descendants(process.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass  # the whole group has exited
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            break
    for child in kernels:
        try:
            if child.is_running():  # also guards against a reused pid
                os.killpg(os.getpgid(child.pid), signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass
    lab_home = getattr(process, "lab_home", None)
    if lab_home:
        shutil.rmtree(lab_home, ignore_errors=True)


@contextmanager
def jupyterlab(notebook_dir, env: dict | None = None, port: int | None = None):
    """``with jupyterlab(dir) as (base_url, token, process):`` start, yield, and always stop."""
    base_url, token, process = start_jupyterlab(notebook_dir, env=env, port=port)
    try:
        yield base_url, token, process
    finally:
        stop_jupyterlab(process)


def notebook_kernel_name(path: Path) -> str:
    """The kernelspec the notebook asks for (``python3`` when it names none)."""
    meta = json.loads(path.read_text()).get("metadata", {})
    return meta.get("kernelspec", {}).get("name", "python3")


def raise_on_errors(page) -> None:
    """Raise with the text of any traceback / error the notebook printed to stderr."""
    for text in page.locator(STDERR_OUTPUT).all_text_contents():
        if "Traceback" in text or "Error" in text:
            raise NotebookError(f"the notebook printed an error:\n{text.strip()[-4000:]}")


def wait_for(page, what: str, condition, timeout_s: float, poll_s: float = 0.5):
    """Poll ``condition()`` until it returns something truthy; check for notebook errors meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        raise_on_errors(page)
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BrowserCheckError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        page.wait_for_timeout(poll_s * 1000)


def summary_text(page) -> str:
    """Text of the ``tood-summary`` widget ('' until it is rendered).

    textContent, not innerText: it does not depend on layout, so it reads the same whether or
    not the cell is scrolled into view.
    """
    widget = page.locator(SUMMARY)
    if widget.count() == 0:
        return ""
    return " ".join(widget.first.text_content().split())


def open_notebook(page, url: str, name: str, timeout_s: float) -> None:
    """Load the lab page and wait until the notebook's kernel is ready."""
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
    # window.jupyterapp appears once the page's scripts ran (--LabApp.expose_app_in_browser).
    page.wait_for_function("() => !!window.jupyterapp", timeout=timeout_s * 1000)
    # Poll (never await inside the page: a pending kernel choice would block the evaluate) for
    # the notebook panel of our file with a started, idle kernel. A notebook without kernel
    # metadata asks for a kernel in a dialog, which we accept (the default, python3).
    ready = """(name) => {
        const w = window.jupyterapp.shell.currentWidget;
        if (!w || !w.context || w.context.path !== name || !w.sessionContext) return false;
        if (!w.context.isReady || !w.sessionContext.isReady) return false;
        const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
        return !!kernel && kernel.status === 'idle';
    }"""

    def notebook_ready():
        dialog = page.locator(".jp-Dialog .jp-mod-accept")
        if dialog.count():
            dialog.first.click()
        return page.evaluate(ready, name)

    wait_for(page, f"notebook {name} and its kernel", notebook_ready, timeout_s)


def run_all_cells(page, timeout_s: float) -> None:
    """Run every cell through JupyterLab's own command (what Run > Run All Cells does).

    The command's promise settles once the last cell has finished (false if a cell failed);
    its outcome is parked on ``window`` so we can poll it and meanwhile catch tracebacks early.
    Waiting for the end matters: the summary widget may show text before later cells are done.
    """
    page.evaluate("""() => {
        window.__toodRunAll = 'running';
        window.jupyterapp.commands.execute('notebook:run-all-cells').then(
            ok => { window.__toodRunAll = ok ? 'done' : 'a cell failed'; },
            err => { window.__toodRunAll = 'error: ' + err; });
    }""")
    outcome = wait_for(page, "all cells to finish", lambda: page.evaluate(
        "() => window.__toodRunAll !== 'running' && window.__toodRunAll"), timeout_s)
    raise_on_errors(page)
    if outcome != "done":
        raise BrowserCheckError(f"Run All Cells did not complete: {outcome}")


def move_slider(page, presses: int = 5) -> None:
    """Move the ``tood-alpha`` slider ``presses`` steps right (keyboard on the noUiSlider handle).

    ipywidgets 8 draws sliders with noUiSlider, whose handle takes arrow keys; the widget sends
    the new value to the kernel on each release, as a user's drag would.
    """
    handle = page.locator(f"{SLIDER} .noUi-handle").first
    if handle.count() == 0:
        raise BrowserCheckError(f"no slider with CSS class {SLIDER[1:]} (a FloatSlider with .add_class) on the page")
    handle.scroll_into_view_if_needed()
    handle.focus()
    for _ in range(presses):
        handle.press("ArrowRight")
        page.wait_for_timeout(100)


def wait_until_settled(page, timeout_s: float, quiet_s: float = 1.5) -> str:
    """Wait until the kernel is idle and the summary has not changed for ``quiet_s``; return it.

    Each arrow key press is one slider change and so one recomputation in the kernel; the first
    new summary is not the last, and the screenshot should show the final state.
    """
    idle = """() => {
        const w = window.jupyterapp.shell.currentWidget;
        const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
        return !!kernel && kernel.status === 'idle';
    }"""
    last, since = None, time.monotonic()

    def settled():
        nonlocal last, since
        text = summary_text(page)
        if text != last or not page.evaluate(idle):
            last, since = text, time.monotonic()
            return False
        return time.monotonic() - since >= quiet_s and text

    wait_for(page, "the kernel to finish updating the widgets", settled, timeout_s, poll_s=0.25)
    page.wait_for_timeout(300)  # let the browser paint the last outputs
    raise_on_errors(page)
    return last


def show_widget(page) -> None:
    """Frame the screenshot: hide the file browser, put the widget's output at the top of the view."""
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    page.locator(".jp-OutputArea", has=page.locator(SLIDER)).first.evaluate(
        "el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)


def check_widget_in_browser(notebook_path, screenshot_path, timeout_s: float = 300, env: dict | None = None) -> dict:
    """Run a notebook in JupyterLab in headless Chromium and check its explorer widget reacts.

    Copies the notebook to a fresh temporary folder (so the check never edits the original),
    starts JupyterLab there with environment ``env`` (default ``os.environ``; e.g. set
    ``TOOD_FIGURES_DIR`` so the run does not overwrite committed figures), runs all cells,
    reads the ``tood-summary`` text, moves the ``tood-alpha`` slider, waits for the text to change
    and saves a screenshot. Returns ``dict(before=, after=, screenshot=, seconds=)``.
    Raises :class:`BrowserCheckError` on any notebook error or timeout.
    """
    start = time.monotonic()
    notebook_path = Path(notebook_path)
    screenshot_path = Path(screenshot_path)
    if not notebook_path.is_file():
        raise BrowserCheckError(f"no notebook at {notebook_path}")
    chromium = find_chromium()
    sync_playwright = import_playwright()
    work = Path(tempfile.mkdtemp(prefix="tood-browser-check-"))
    try:
        notebooks = work / "notebooks"
        notebooks.mkdir()
        shutil.copy2(notebook_path, notebooks / notebook_path.name)
        env = dict(os.environ if env is None else env)
        kernel = notebook_kernel_name(notebook_path)
        if kernel != "python3":
            check_kernel_python(env, kernel)
        with jupyterlab(notebooks, env=env) as (base_url, token, server):
            url = f"{base_url}/lab/tree/{notebook_path.name}?token={token}"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS,
                                             headless=True, timeout=120_000)
                try:
                    # A fresh context is a fresh, temporary profile.
                    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                    try:
                        remaining = lambda: max(10.0, timeout_s - (time.monotonic() - start))
                        open_notebook(page, url, notebook_path.name, remaining())
                        run_all_cells(page, remaining())
                        before = wait_for(page, "the tood-summary widget to show text", lambda: summary_text(page),
                                          remaining())
                        move_slider(page)
                        wait_for(page, "the tood-summary text to change after moving the slider",
                                 lambda: (summary_text(page) or before) != before, remaining())
                        after = wait_until_settled(page, remaining())
                        show_widget(page)
                        screenshot_path.parent.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(screenshot_path), full_page=True)
                    except NotebookError:
                        raise
                    except Exception as exc:  # timeouts, Playwright errors: the server log may say why
                        message = str(exc) if isinstance(exc, BrowserCheckError) else f"{type(exc).__name__}: {exc}"
                        raise BrowserCheckError(f"{message}\n(JupyterLab log tail:\n{log_tail(server.log_path)})"
                                                ) from exc
                finally:
                    browser.close()
        return dict(before=before, after=after, screenshot=str(screenshot_path),
                    seconds=round(time.monotonic() - start, 1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", help="the .ipynb to check")
    parser.add_argument("--screenshot", default="browser_check.png", help="where to save the screenshot")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the whole check")
    args = parser.parse_args(argv)
    try:
        result = check_widget_in_browser(args.notebook, args.screenshot, timeout_s=args.timeout)
    except BrowserCheckError as exc:
        print(f"browser check failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
