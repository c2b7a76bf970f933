"""What a reader sees at a glance, checked on a drawn figure: no two texts overlap.

Texts are compared as the rotated rectangles they are drawn in (a separating-axis test), not
as their axis-aligned boxes, so rotated tick labels side by side are not counted as touching."""

from __future__ import annotations

import itertools

import numpy as np


def _rectangle(text, renderer) -> np.ndarray:
    """The four corners, in pixels, of the rectangle a single-line text is drawn in."""
    box = text.get_window_extent(renderer)
    angle = np.deg2rad(text.get_rotation())
    if "\n" in text.get_text() or angle % (np.pi / 2) == 0:
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    width, height, _ = renderer.get_text_width_height_descent(text.get_text(), text.get_fontproperties(), ismath=False)
    width, height = width * 1.0, height * 1.0
    centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
    along, across = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    return np.array(
        [centre + sx * width / 2 * along + sy * height / 2 * across for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    )


def _overlap(a: np.ndarray, b: np.ndarray, slack: float = 0.5) -> bool:
    for polygon in (a, b):
        for i in range(4):
            edge = polygon[(i + 1) % 4] - polygon[i]
            axis = np.array([-edge[1], edge[0]])
            if not axis.any():
                continue
            axis = axis / np.linalg.norm(axis)
            pa, pb = a @ axis, b @ axis
            if pa.max() - slack <= pb.min() or pb.max() - slack <= pa.min():
                return False
    return True


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of visible texts of ``fig`` (titles, axis and tick labels, legend entries,
    annotations) whose drawn rectangles overlap by more than half a pixel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else FigureCanvasAgg(fig)  # a closed figure
    canvas.draw()
    renderer = canvas.get_renderer()
    seen, texts = set(), []
    for ax in fig.axes:  # a tick outside the view keeps a visible label that is never drawn
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = (high - low) * 1e-9
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - slack <= tick.get_loc() <= high + slack:
                    seen.update((id(tick.label1), id(tick.label2)))
    for artist in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_fontproperties")):
        visible = artist.get_visible() and (artist.axes is None or artist.axes.get_visible())
        if id(artist) in seen or not visible or not artist.get_text().strip():
            continue
        seen.add(id(artist))
        texts.append((artist.get_text(), _rectangle(artist, renderer)))
    return [(a, b) for (a, ra), (b, rb) in itertools.combinations(texts, 2) if _overlap(ra, rb)]


def rotated_texts(fig) -> list[str]:
    """Visible tick labels of ``fig`` drawn at an angle (a reader turns the page to read them)."""
    return [
        label.get_text()
        for ax in fig.axes
        if ax.get_visible()
        for label in ax.get_xticklabels() + ax.get_yticklabels()
        if label.get_visible() and label.get_text().strip() and label.get_rotation() % 360 != 0
    ]
