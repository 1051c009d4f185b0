"""Draw your own data: a canvas on which a person clicks points and drags strokes, for the ``drawn`` sampler.

The canvas is `streamlit-drawable-canvas` (a maintained Fabric.js component; Streamlit has no drawing
input of its own). It opens in a dialog from the sidebar's Data section: the sidebar is too narrow for a
canvas whose pixels map cleanly onto data coordinates, and a dialog keeps the Train page's main area for
the live views. The canvas is :data:`CANVAS_PX` pixels square and spans [-:data:`EXTENT`, :data:`EXTENT`]²
in data coordinates (y up), so one pixel is 0.01; a click adds one point, a stroke or a line adds a point
every :data:`STROKE_SPACING_PX` pixels along it. The points become the ``points`` parameter of the
composed spec (:func:`drawn_params`), so a run, a link, a comparison and ``genex run`` all train on
exactly the drawn data set.

When the component cannot be loaded the sidebar says so and shows the ``points`` text input instead.
The conversions between the canvas's Fabric.js JSON and data points are plain functions (no Streamlit),
tested on their own.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import streamlit as st

from explorer.params import Param

SAMPLER = "drawn"  # the sampler whose points this canvas draws
CANVAS_PX = 400  # the canvas is CANVAS_PX x CANVAS_PX pixels ...
EXTENT = 2.0  # ... spanning [-EXTENT, EXTENT] in x and y: 100 pixels per unit, one pixel = 0.01
DECIMALS = 2  # drawn coordinates are rounded to one pixel
STROKE_SPACING_PX = 8.0  # a stroke or line leaves a point every 8 pixels (0.08) along it
POINT_RADIUS = 3  # how drawn points look on the canvas (radius and ring width, pixels)
POINT_STROKE = 2
STROKE_WIDTH = 3  # a freehand stroke's or a line's width on the canvas
INK = "#d62728"
OPEN_KEY = "genex.draw.open"  # the points key of the dialog that is open (kept open across full reruns)
TOOLS = {"point": "Click: add a point", "freedraw": "Drag: a freehand stroke", "line": "Drag: a straight line"}
_ORIGIN = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}

# -- coordinates ------------------------------------------------------------------------------------------
_SCALE = CANVAS_PX / (2 * EXTENT)  # pixels per data unit


def px_to_data(px: float, py: float) -> tuple[float, float]:
    """Canvas pixel (x right, y down, origin top-left) -> data point (x right, y up), rounded to a pixel."""
    x = (px - CANVAS_PX / 2) / _SCALE
    y = (CANVAS_PX / 2 - py) / _SCALE
    return round(x, DECIMALS) + 0.0, round(y, DECIMALS) + 0.0  # + 0.0: never -0.0


def data_to_px(x: float, y: float) -> tuple[float, float]:
    return CANVAS_PX / 2 + x * _SCALE, CANVAS_PX / 2 - y * _SCALE


def _pairs(flat: Sequence[float]) -> list[tuple[float, float]]:
    return [(float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def _pixel_key(px: float, py: float) -> tuple[int, int]:
    return round(px * 10), round(py * 10)  # a tenth of a pixel: survives Fabric's 4-digit JSON


# -- Fabric.js JSON <-> points ----------------------------------------------------------------------------
def drawing_from_points(flat: Sequence[float]) -> dict[str, Any]:
    """An ``initial_drawing`` showing each point as the point tool draws it (a small ring)."""
    objects = []
    for x, y in _pairs(flat):
        px, py = data_to_px(x, y)
        objects.append({
            "type": "Circle", "version": "7.0.0", "left": px - (POINT_RADIUS + POINT_STROKE / 2), "top": py,
            "originX": "left", "originY": "center", "radius": POINT_RADIUS, "strokeWidth": POINT_STROKE,
            "stroke": INK, "fill": INK, "selectable": False, "evented": False,
        })
    return {"version": "7.0.0", "objects": objects}


def _centre(obj: Mapping[str, Any], width: float, height: float) -> tuple[float, float]:
    """The object's centre on the canvas (Fabric's translateToCenterPoint: the origin point moved by half
    the stroked, scaled size, rotated by the object's angle)."""
    sw = float(obj.get("strokeWidth") or 0.0)
    dx = (width + sw) * float(obj.get("scaleX", 1) or 1)
    dy = (height + sw) * float(obj.get("scaleY", 1) or 1)
    ox = (0.5 - _ORIGIN.get(str(obj.get("originX", "center")), 0.5)) * dx
    oy = (0.5 - _ORIGIN.get(str(obj.get("originY", "center")), 0.5)) * dy
    a = math.radians(float(obj.get("angle", 0) or 0))
    return (float(obj.get("left", 0)) + ox * math.cos(a) - oy * math.sin(a),
            float(obj.get("top", 0)) + ox * math.sin(a) + oy * math.cos(a))


def _place(obj: Mapping[str, Any], local: list[tuple[float, float]], centre: tuple[float, float]) -> list[tuple[float, float]]:
    """Points in an object's own frame (centred on 0) -> canvas pixels: scaled, rotated, moved to its centre."""
    sx, sy = float(obj.get("scaleX", 1) or 1), float(obj.get("scaleY", 1) or 1)
    a = math.radians(float(obj.get("angle", 0) or 0))
    c, s = math.cos(a), math.sin(a)
    return [(centre[0] + c * sx * x - s * sy * y, centre[1] + s * sx * x + c * sy * y) for x, y in local]


def _path_polyline(path: Sequence[Sequence[Any]]) -> list[tuple[float, float]]:
    """An SVG-style path (M, L, Q, C, Z commands in absolute coordinates, as Fabric's pencil writes them)
    as a dense polyline."""
    out: list[tuple[float, float]] = []
    cur = start = (0.0, 0.0)
    for cmd in path:
        if not cmd:
            continue
        op, args = str(cmd[0]), [float(v) for v in cmd[1:]]
        if op in ("M", "L") and len(args) >= 2:
            cur = (args[0], args[1])
            if op == "M":
                start = cur
            out.append(cur)
        elif op == "Q" and len(args) >= 4:
            (x0, y0), (cx, cy), (x1, y1) = cur, (args[0], args[1]), (args[2], args[3])
            for i in range(1, 9):
                t = i / 8
                out.append(((1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t * t * x1,
                            (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t * t * y1))
            cur = (x1, y1)
        elif op == "C" and len(args) >= 6:
            p0, p1, p2, p3 = cur, (args[0], args[1]), (args[2], args[3]), (args[4], args[5])
            for i in range(1, 9):
                t = i / 8
                w = ((1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t * t, t ** 3)
                out.append((sum(wk * p[0] for wk, p in zip(w, (p0, p1, p2, p3))),
                            sum(wk * p[1] for wk, p in zip(w, (p0, p1, p2, p3)))))
            cur = p3
        elif op in ("Z", "z"):
            out.append(start)
            cur = start
    return out


def along(polyline: Sequence[tuple[float, float]], spacing: float = STROKE_SPACING_PX) -> list[tuple[float, float]]:
    """Points every ``spacing`` pixels along a polyline, from its start (a single point for a dot)."""
    if not polyline:
        return []
    out = [polyline[0]]
    carried = 0.0  # distance walked since the last point placed
    for (x0, y0), (x1, y1) in zip(polyline, polyline[1:]):
        seg = math.hypot(x1 - x0, y1 - y0)
        pos = spacing - carried
        while pos <= seg + 1e-9:
            t = pos / seg
            out.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
            pos += spacing
        carried = (carried + seg) % spacing if seg else carried
    return out


def object_pixels(obj: Mapping[str, Any]) -> list[tuple[float, float]]:
    """The canvas pixels one drawn object stands for: a point tool's ring -> its centre; a freehand stroke
    or a line -> points every :data:`STROKE_SPACING_PX` along it. Other shapes give nothing."""
    kind = str(obj.get("type", "")).lower()
    if kind == "circle":
        r = float(obj.get("radius", 0) or 0)
        return [_centre(obj, 2 * r, 2 * r)]
    if kind == "line":
        ends = [(float(obj.get("x1", 0)), float(obj.get("y1", 0))), (float(obj.get("x2", 0)), float(obj.get("y2", 0)))]
        w, h = abs(ends[1][0] - ends[0][0]), abs(ends[1][1] - ends[0][1])
        return along(_place(obj, ends, _centre(obj, float(obj.get("width", w) or w), float(obj.get("height", h) or h))))
    if kind == "path":
        line = _path_polyline(obj.get("path") or [])
        if not line:
            return []
        xs, ys = [p[0] for p in line], [p[1] for p in line]
        offset = ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2)  # Fabric's pathOffset: the path's box centre
        centre = _centre(obj, max(xs) - min(xs), max(ys) - min(ys))
        plain = all(float(obj.get(k, d) or d) == d for k, d in (("scaleX", 1), ("scaleY", 1), ("angle", 0)))
        if plain and math.hypot(centre[0] - offset[0], centre[1] - offset[1]) < 1.0:
            return along(line)  # never moved: the path's own coordinates are canvas pixels
        return along(_place(obj, [(x - offset[0], y - offset[1]) for x, y in line], centre))
    return []


def points_from_drawing(drawing: Mapping[str, Any] | None, keep: Mapping[tuple[int, int], tuple[float, float]] | None = None,
                        limit: int | None = None) -> tuple[list[float], int]:
    """The data points (flat x1, y1, ...) a canvas drawing stands for, and how many were dropped over
    ``limit``. ``keep`` maps the pixel of each point the canvas was opened with to its exact data
    coordinates, so points the person did not touch come back unchanged (not rounded to a pixel)."""
    keep = keep or {}
    out: list[float] = []
    for obj in (drawing or {}).get("objects") or []:
        if not isinstance(obj, Mapping):
            continue
        for px, py in object_pixels(obj):
            if not (math.isfinite(px) and math.isfinite(py)):
                continue
            kept = keep.get(_pixel_key(px, py)) if str(obj.get("type", "")).lower() == "circle" else None
            if kept is None:
                px, py = min(max(px, 0.0), CANVAS_PX), min(max(py, 0.0), CANVAS_PX)
                kept = px_to_data(px, py)
            out += kept
    dropped = 0
    if limit is not None and len(out) > 2 * limit:
        dropped, out = len(out) // 2 - limit, out[: 2 * limit]
    return out, dropped


def keep_map(flat: Sequence[float]) -> dict[tuple[int, int], tuple[float, float]]:
    return {_pixel_key(*data_to_px(x, y)): (x, y) for x, y in _pairs(flat)}


# -- the canvas's background: a labelled grid ------------------------------------------------------------
@lru_cache(maxsize=1)
def axes_png() -> bytes:
    """The canvas background: a grid every 0.5, the axes, and the coordinates of the grid lines."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (CANVAS_PX, CANVAS_PX), "white")
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1: the small bitmap font
        font = ImageFont.load_default()
    steps = int(round(2 * EXTENT / 0.5))
    for i in range(steps + 1):
        v = -EXTENT + 0.5 * i
        p = round(data_to_px(v, 0.0)[0])
        shade = (150, 150, 150) if abs(v) < 1e-9 else ((215, 215, 215) if float(v).is_integer() else (236, 236, 236))
        d.line([(p, 0), (p, CANVAS_PX)], fill=shade, width=1)
        q = round(data_to_px(0.0, v)[1])
        d.line([(0, q), (CANVAS_PX, q)], fill=shade, width=1)
    cx, cy = data_to_px(0.0, 0.0)
    grey = (110, 110, 110)
    for v in range(-int(EXTENT) + 1, int(EXTENT)):  # -1, 0, 1: the edges are labelled in the corners
        px, _ = data_to_px(v, 0)
        d.text((px + 3, cy + 2), f"{v:g}", fill=grey, font=font)
        if v:
            _, py = data_to_px(0, v)
            d.text((cx + 3, py + 2), f"{v:g}", fill=grey, font=font)
    right = f"x = {EXTENT:g}"
    d.text((3, cy + 2), f"x = {-EXTENT:g}", fill=grey, font=font)
    d.text((CANVAS_PX - 3 - d.textlength(right, font=font), cy + 2), right, fill=grey, font=font)
    d.text((cx + 3, 3), f"y = {EXTENT:g}", fill=grey, font=font)
    d.text((cx + 3, CANVAS_PX - 16), f"y = {-EXTENT:g}", fill=grey, font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# -- the component ----------------------------------------------------------------------------------------
def canvas_component() -> tuple[Callable[..., Any] | None, str | None]:
    """``(st_canvas, None)``, or ``(None, why not)`` when the component cannot be loaded here."""
    try:
        from streamlit_drawable_canvas import st_canvas
    except Exception as exc:  # noqa: BLE001 - missing, or a version this Streamlit cannot register
        return None, f"{type(exc).__name__}: {str(exc)[:200]}"
    return st_canvas, None


def _gen_key(state_key: str) -> str:
    return f"{state_key}.gen"


def _start_drawing(state_key: str, flat: Sequence[float]) -> None:
    """A fresh canvas (a new component key) showing ``flat``."""
    gen = st.session_state.get(_gen_key(state_key), 0) + 1
    st.session_state[_gen_key(state_key)] = gen
    st.session_state[f"{state_key}.initial"] = drawing_from_points(flat)
    st.session_state[f"{state_key}.keep"] = keep_map(flat)
    st.session_state[state_key] = list(flat)


def _close() -> None:
    """The dialog is closed (its button, its x, Escape or a click outside): the next full run keeps it shut."""
    st.session_state.pop(OPEN_KEY, None)


@st.dialog("Draw your data", width="medium", on_dismiss=_close)
def _draw_dialog(state_key: str, default: Sequence[float], limit: int) -> None:
    st_canvas, problem = canvas_component()
    if st_canvas is None:  # checked before the dialog opens; a second guard all the same
        st.error(f"The drawing canvas cannot be loaded ({problem}).")
        return
    if f"{state_key}.initial" not in st.session_state:
        _start_drawing(state_key, st.session_state.get(state_key) or default)
    canvas_col, side = st.columns([1.6, 1])
    tool = side.radio("Tool", list(TOOLS), format_func=TOOLS.get, key=f"{state_key}.tool")
    with canvas_col:
        try:
            result = st_canvas(
                fill_color=INK, stroke_width=POINT_STROKE if tool == "point" else STROKE_WIDTH, stroke_color=INK,
                background_image=axes_png(), height=CANVAS_PX, width=CANVAS_PX, drawing_mode=tool,
                initial_drawing=st.session_state[f"{state_key}.initial"], point_display_radius=POINT_RADIUS,
                update_streamlit=True, key=f"{state_key}.canvas.{st.session_state[_gen_key(state_key)]}",
            )
        except Exception as exc:  # noqa: BLE001 - a component that fails here must not lose the drawing
            st.error(f"The drawing canvas failed ({type(exc).__name__}: {str(exc)[:200]}); the points are kept.")
            return
    flat, dropped = points_from_drawing(result.json_data, st.session_state.get(f"{state_key}.keep"), limit)
    st.session_state[state_key] = flat
    n = len(flat) // 2
    side.markdown(f"**{n:,} point{'s' if n != 1 else ''}** drawn" + ("" if n else ": draw at least one"),
                  help="The data set: each drawn point blurred by Gaussian noise with the standard deviation "
                       "`noise` (set in the sidebar).")
    if dropped:
        side.warning(f"{dropped:,} points over the limit of {limit:,} were left out.")
    # Callbacks run before the (fragment) rerun that the click starts, so the canvas redraws at once.
    side.button("Clear", icon=":material/delete:", key=f"{state_key}.clear", width="stretch",
                on_click=_start_drawing, args=(state_key, []))
    side.button("Start from the smiley", icon=":material/mood:", key=f"{state_key}.reset", width="stretch",
                help="The default drawing: a smiling face.", on_click=_start_drawing, args=(state_key, list(default)))
    if side.button("Use these points", type="primary", icon=":material/check:", key=f"{state_key}.done",
                   width="stretch", disabled=n == 0, on_click=_close):
        st.rerun()  # the whole page: the sidebar composes the spec from the points
    st.caption(f"The canvas spans x from {-EXTENT:g} (left) to {EXTENT:g} (right) and y from {-EXTENT:g} (bottom) "
               f"to {EXTENT:g} (top); one pixel is {1 / _SCALE:g}. A click adds a point; a stroke or a line adds one "
               f"every {STROKE_SPACING_PX / _SCALE:g} along it. Hover over the canvas for its toolbar: undo, redo, "
               "delete.")


def drawn_params(cls: Any, key_prefix: str, values: Mapping[str, Any] | None, container: Any,
                 auto_open: bool = False) -> dict[str, Any]:
    """The ``drawn`` sampler's inputs in the sidebar: how many points are drawn, a button that opens the
    canvas (a dialog), and the other parameters' widgets (noise). Returns the parameters for the spec,
    ``points`` included. ``cls``: the sampler class (its ``params`` and ``max_points``). ``auto_open``: the
    person has just picked ``drawn``: open the canvas at once."""
    from explorer.ui.widgets import params_widgets

    params: Sequence[Param] = cls.params
    values = dict(values or {})
    by_name = {p.name: p for p in params}
    st_canvas, problem = canvas_component()
    if st_canvas is None:
        container.info("The drawing canvas (streamlit-drawable-canvas) is not available here, so type the points "
                       f"instead, as x1, y1, x2, y2, ... ({problem}). `pip install streamlit-drawable-canvas` "
                       "brings the canvas.", icon=":material/draw:")
        with container.expander(f"{SAMPLER} parameters", expanded=True):
            return params_widgets(params, key_prefix, values)
    state_key = f"{key_prefix}.drawn_points"
    default = list(by_name["points"].default)
    if state_key not in st.session_state:
        st.session_state[state_key] = list(values.get("points") or default)
    limit = int(getattr(cls, "max_points", 2000))
    n = len(st.session_state[state_key]) // 2
    container.caption(f"**{n:,} point{'s' if n != 1 else ''}** drawn on [{-EXTENT:g}, {EXTENT:g}]²; "
                      "each is blurred by the noise below.")
    opened = container.button("Draw the data", icon=":material/draw:", key=f"{key_prefix}.draw", width="stretch",
                              help="Open the canvas: click to add points, drag to draw strokes.")
    if opened or (auto_open and not st.session_state.get(f"{state_key}.auto_opened")):
        st.session_state[f"{state_key}.auto_opened"] = True
        _start_drawing(state_key, st.session_state[state_key])
        st.session_state[OPEN_KEY] = state_key
    with container.expander(f"{SAMPLER} parameters"):
        rest = params_widgets(params, key_prefix, values, skip=("points",))
    if st.session_state.get(OPEN_KEY) == state_key:
        _draw_dialog(state_key, default, limit)
    return {"points": list(st.session_state[state_key]), **rest}

