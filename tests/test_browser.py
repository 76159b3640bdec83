"""The notebooks as a person uses them: JupyterLab in headless Chromium, every cell run, widgets driven.

For each notebook (parametrised over :data:`NOTEBOOKS`) the test starts a private JupyterLab server,
opens a copy of the notebook whose only change is ``REPORT_DIR`` (papermill ``prepare_only``;
``INTERACTIVE`` keeps the notebook's default, True), runs all cells in the browser (smoke profile) and
checks what a person would see:

- no cell ends in an error;
- every widget output renders as a widget: no "Error displaying widget", no plain-text widget repr
  such as ``IntSlider(value=0, ...)`` (the sign of a missing widget manager);
- every plotly figure is drawn (``jupyterlab-plotly``), the 3D heart included;
- moving a slider with the keyboard, and then by dragging its handle, changes the displayed image;
- notebook 03's condition sliders: moving a covariate slider (weight) and then the guidance slider each
  generates again: the ED/ES montage and volume curves and the 3D heart are drawn anew, the readout's
  expectation follows the weight and its ``data-guidance`` the guidance slider.

Screenshots go to ``$CMRKIT_SCREENSHOTS`` (default: the test's temporary folder). The browser is
Debian's ``chromium`` driven by Playwright (``pip install playwright``, no browser download:
``executable_path``); without either the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from cmrkit.utils import REPO_ROOT

#: notebook -> the number of slider widgets that must be drivable (at least one is moved)
NOTEBOOKS = {"00_background": 1, "01_smcvae_strain": 1, "02_ldm3d": 1, "03_cond_ldm4d": 6}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",  # software WebGL for plotly's 3D view when the GPU is disabled
]
RUN_TIMEOUT_S = 900

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _chromium() -> str:
    exe = os.environ.get("CMRKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("browser test skipped: no Chromium found (apt-get install chromium, or set CMRKIT_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("browser test skipped: Playwright for Python is not installed (pip install playwright)")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A private JupyterLab server on 127.0.0.1 with its own settings, workspace and runtime folders."""
    _chromium()
    root = tmp_path_factory.mktemp("lab")
    home = root / "home"
    settings = home / "settings"
    # every cell in the DOM (no virtual scrolling), and no news/update pop-ups
    _write(settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings", {"windowingMode": "none"})
    _write(
        settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False},
    )
    work = root / "work"
    work.mkdir()
    port, token = _free_port(), uuid.uuid4().hex
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(home / "data"),  # kernelspecs still come from the environment's prefix
        "IPYTHONDIR": str(home / "ipython"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
    env.pop("MPLBACKEND", None)  # the kernel must use the inline backend
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={work}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail(f"JupyterLab did not start:\n{(root / 'lab.log').read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield {"url": url, "token": token, "work": work, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(lab["root"] / "chromium-profile"),  # a fresh user-data dir
            executable_path=exe,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield ctx
        finally:
            ctx.close()


_STATE_JS = """() => {
  const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!nb || !nb.content || !nb.sessionContext) return null;
  const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  const cells = nb.content.widgets.filter(c => c.model.type === 'code');
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-InputArea-prompt')].map(p => p.textContent);
  return {
    kernel: kernel ? kernel.status : 'none',
    n: cells.length,
    executed: cells.filter(c => c.model.executionCount !== null).length,
    running: prompts.filter(t => t.includes('*')).length,
  };
}"""

_OUTPUTS_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  return nb.content.widgets.filter(c => c.model.type === 'code').map((c, i) => {
    const outs = [];
    for (let j = 0; j < c.model.outputs.length; j++) {
      const o = c.model.outputs.get(j).toJSON();
      const fig = o.data && o.data['application/vnd.plotly.v1+json'];
      outs.push({type: o.output_type, ename: o.ename || null, evalue: o.evalue || null,
                 mimes: Object.keys(o.data || {}),
                 gl: !!(fig && (fig.data || []).some(t => ['mesh3d', 'scatter3d', 'surface'].includes(t.type))),
                 text: (o.data && o.data['text/plain']) ? String(o.data['text/plain']).slice(0, 200) : null});
    }
    return {index: i, source: c.model.sharedModel.getSource().slice(0, 80), outputs: outs};
  });
}"""


def _img_src(page, slider) -> str | None:
    """The image of the widget box holding ``slider`` (the viewer's or interact's Output)."""
    return slider.evaluate(
        """el => { const box = el.closest('.widget-interact') || el.closest('.widget-vbox');
                   const img = box && box.querySelector('.widget-output img, .jp-OutputArea img');
                   return img ? img.getAttribute('src') : null; }"""
    )


def _wait_change(page, slider, before: str, what: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _img_src(page, slider)
        if now and now != before:
            return now
        page.wait_for_timeout(250)
    raise AssertionError(f"moving the slider by {what} did not change the displayed image")


@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
@pytest.mark.parametrize("stem", list(NOTEBOOKS))
def test_notebook_in_jupyterlab(stem, lab, browser, tmp_path):
    import papermill as pm

    src = REPO_ROOT / "notebooks" / f"{stem}.ipynb"
    if not src.is_file():
        pytest.skip(f"notebooks/{stem}.ipynb is not written yet")
    shots = Path(os.environ.get("CMRKIT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    # the notebook as shipped, with only REPORT_DIR pointed at a scratch folder
    pm.execute_notebook(
        str(src),
        str(lab["work"] / src.name),
        parameters={"REPORT_DIR": str(tmp_path / "report")},
        prepare_only=True,
        kernel_name="python3",
        progress_bar=False,
    )
    page = browser.new_page()
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    # a workspace of its own, reset: only this notebook is open and current
    page.goto(f"{lab['url']}/lab/workspaces/{stem}/tree/{src.name}?reset&token={lab['token']}")
    page.wait_for_function(
        "() => { const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        f" const s = ({_STATE_JS})(); return s && s.kernel === 'idle' && nb.context.path === '{src.name}'; }}",
        timeout=120_000,
    )
    t0 = time.monotonic()
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    settled, started, state = 0, False, None
    while time.monotonic() < t0 + RUN_TIMEOUT_S:
        page.wait_for_timeout(1000)
        state = page.evaluate(_STATE_JS)
        started |= state["executed"] > 0 or state["running"] > 0
        if not started and time.monotonic() > t0 + 90:
            raise AssertionError(f"{stem}: 'run all cells' did not start any cell ({state})")
        busy = state["kernel"] != "idle" or state["running"] > 0
        settled = 0 if busy else settled + 1
        if started and settled >= 3:
            break
    print(f"{stem}: all cells run in JupyterLab in {time.monotonic() - t0:.0f} s")
    page.wait_for_timeout(1500)  # let the last widgets and plots render
    page.screenshot(path=str(shots / f"{stem}_top.png"))
    assert settled >= 3, f"{stem}: the notebook did not finish in {RUN_TIMEOUT_S} s ({state})"

    cells = page.evaluate(_OUTPUTS_JS)
    errors = [
        f"cell {c['index']} ({c['source']!r}): {o['ename']}: {o['evalue']}"
        for c in cells
        for o in c["outputs"]
        if o["type"] == "error"
    ]
    assert not errors, f"{stem}: cells with errors:\n" + "\n".join(errors)
    assert state["executed"] == state["n"], f"{stem}: {state['n'] - state['executed']} cell(s) did not run ({state})"

    # widgets render as widgets
    widget_outputs = sum("application/vnd.jupyter.widget-view+json" in o["mimes"] for c in cells for o in c["outputs"])
    assert widget_outputs > 0, f"{stem}: no widget in the outputs although INTERACTIVE defaults to True"
    body = page.inner_text("body")
    assert "Error displaying widget" not in body
    reprs = [
        o["text"]
        for c in cells
        for o in c["outputs"]
        if o["text"]
        and "application/vnd.jupyter.widget-view+json" not in o["mimes"]
        and o["text"].split("(")[0] in ("IntSlider", "FloatSlider", "VBox", "HBox", "interactive", "Output", "Box")
    ]
    assert not reprs, f"{stem}: widgets shown as plain text: {reprs}"
    rendered = page.evaluate(
        """() => [...document.querySelectorAll('.jp-OutputArea-output')]
               .filter(el => el.querySelector('.jupyter-widgets') || /widget/i.test(el.innerText.slice(0, 200)))
               .map(el => ({widget: !!el.querySelector('.jupyter-widgets'), text: el.innerText.slice(0, 80)}))"""
    )
    assert len(rendered) == widget_outputs, f"{stem}: {widget_outputs} widget outputs, {len(rendered)} rendered"
    assert all(r["widget"] for r in rendered), f"{stem}: widget outputs not rendered as widgets: {rendered}"

    # plotly figures are drawn (hover/zoom/rotate views of the INTERACTIVE cells)
    plotly_outputs = sum("application/vnd.plotly.v1+json" in o["mimes"] for c in cells for o in c["outputs"])
    # figures a widget displays (e.g. notebook 03's 3D heart beside the condition sliders) are the widget's
    # outputs, not the cell's: count the plots outside widget Output areas against the cells' outputs
    drawn = page.evaluate(
        "() => [...document.querySelectorAll('.jp-Notebook .js-plotly-plot')]"
        ".filter(p => !p.closest('.widget-output')).length"
    )
    assert drawn == plotly_outputs, f"{stem}: {plotly_outputs} plotly outputs, {drawn} drawn"
    views_3d = sum(o["gl"] for c in cells for o in c["outputs"])
    canvases = page.locator(".jp-Notebook .js-plotly-plot .gl-container canvas").count()
    assert canvases >= views_3d, f"{stem}: {views_3d} 3D views but {canvases} WebGL canvases"
    assert "WebGL is not supported" not in body

    # sliders: keyboard, then drag, each changes the displayed image
    sliders = page.locator(".jp-OutputArea-output .widget-slider .noUi-handle")
    assert sliders.count() >= NOTEBOOKS[stem], f"{stem}: {sliders.count()} sliders"
    if stem == "03_cond_ldm4d":
        _check_condition_sliders(page, shots)
        page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        page.close()
        assert not [e for e in console_errors if "widget" in e.lower()], console_errors
        return
    handle = sliders.first
    handle.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    before = _img_src(page, handle)
    assert before, f"{stem}: no image next to the first slider"
    page.screenshot(path=str(shots / f"{stem}_viewer_before.png"))
    handle.focus()
    page.keyboard.press("ArrowRight")
    after_key = _wait_change(page, handle, before, "keyboard")
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    _wait_change(page, handle, after_key, "drag")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / f"{stem}_viewer_after.png"))
    plots = page.locator(".jp-Notebook .js-plotly-plot")
    for k in range(plots.count()):  # what a person sees of each interactive view
        plots.nth(k).scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"{stem}_plotly_{k}.png"))
    page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")  # free the kernel's memory
    page.close()
    assert not [e for e in console_errors if "widget" in e.lower()], console_errors


_CONDITION_JS = """() => {
  const box = document.querySelector('.cmrkit-condition-sliders');
  if (!box) return null;
  const r = box.querySelector('.cmrkit-readout');
  const img = box.querySelector('.widget-output img, .jp-OutputArea img');
  return {readout: r ? r.innerText : null, key: r ? r.dataset.key : null,
          guidance: r ? r.dataset.guidance : null, lvedv: r ? r.dataset.lvedv : null,
          img: img ? img.getAttribute('src') : null,
          hearts: box.querySelectorAll('.js-plotly-plot').length,
          // a heart drawn since the last look: plots seen before are marked (see _mark_hearts)
          new_heart: [...box.querySelectorAll('.js-plotly-plot')].some(p => !p.dataset.cmrkitSeen)};
}"""

_MARK_JS = """() => document.querySelectorAll('.cmrkit-condition-sliders .js-plotly-plot')
                  .forEach(p => { p.dataset.cmrkitSeen = '1'; })"""


def _condition_slider(page, label: str):
    """The handle of the condition-slider whose description starts with ``label``."""
    row = page.locator(".cmrkit-condition-sliders .widget-slider").filter(
        has=page.locator(".widget-label", has_text=label)
    )
    assert row.count() >= 1, f"03_cond_ldm4d: no '{label}' slider among the condition sliders"
    return row.first.locator(".noUi-handle")


def _wait_regenerated(page, before: dict, what: str, timeout_s: float = 120) -> dict:
    """Wait until the widget has generated again: another montage (its caption lists the covariates and the
    guidance) and a newly drawn 3D heart (the plots drawn before are marked). The generated masks may stay
    the same at the smoke profile: its barely trained model hardly responds to the condition (MONAI's
    cross-attention output starts at zero); whether a trained model does is the chapter's effects check."""
    deadline = time.monotonic() + timeout_s
    now = before
    while time.monotonic() < deadline:
        now = page.evaluate(_CONDITION_JS)
        if now and now["img"] != before["img"] and now["new_heart"]:
            page.evaluate(_MARK_JS)
            return now
        page.wait_for_timeout(300)
    raise AssertionError(f"03_cond_ldm4d: moving {what} did not draw a new heart (before {before}, now {now})")


def _check_condition_sliders(page, shots: Path) -> None:
    """Notebook 03's condition sliders generate a new heart on a covariate move and on a guidance move."""
    box = page.locator(".cmrkit-condition-sliders")
    assert box.count() == 1, "03_cond_ldm4d: the condition-slider widget is not on the page"
    box.first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    start = page.evaluate(_CONDITION_JS)
    assert start and start["readout"] and start["img"], f"03_cond_ldm4d: no readout or montage drawn: {start}"
    assert start["hearts"] >= 1, "03_cond_ldm4d: no 3D heart drawn beside the sliders"
    for name in ("LVEDV", "LVESV", "LVEF", "LVM"):
        assert name in start["readout"], f"03_cond_ldm4d: {name} missing from the readout {start['readout']!r}"
    page.screenshot(path=str(shots / "03_cond_ldm4d_sliders_before.png"))
    page.evaluate(_MARK_JS)
    weight = _condition_slider(page, "weight")
    weight.focus()
    page.keyboard.press("End")  # the heaviest weight the model allows
    moved = _wait_regenerated(page, start, "the weight slider")
    # the readout follows: the phantom model's expectation for the heavier subject changes
    assert moved["readout"] != start["readout"], "03_cond_ldm4d: the readout did not change with the weight"
    page.screenshot(path=str(shots / "03_cond_ldm4d_sliders_weight.png"))
    guidance = _condition_slider(page, "guidance")
    guidance.focus()
    page.keyboard.press("End")  # guidance 5
    guided = _wait_regenerated(page, moved, "the guidance slider")
    assert float(guided["guidance"]) == 5.0, f"03_cond_ldm4d: readout guidance {guided['guidance']} after End"
    page.screenshot(path=str(shots / "03_cond_ldm4d_sliders_guidance.png"))
