"""The server-drawn charts: well-formed XML, escaped text, gaps, markers, empty charts."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from markupsafe import Markup

from kennel.console.svg import Marker, Series, line_chart

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: Markup) -> ET.Element:
    return ET.fromstring(str(svg))


def _points(root: ET.Element) -> list[ET.Element]:
    return root.findall(f".//{NS}circle")


def _texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


def test_many_points_make_one_line_with_a_dot_each() -> None:
    s = Series("tok/s", [(1_700_000_000 + 60 * i, float(10 + i)) for i in range(12)])
    root = _parse(line_chart([s], title="Tokens per second", y_label="tok/s"))
    assert root.tag == f"{NS}svg"
    assert root.get("role") == "img"
    assert root.findtext(f"{NS}title") == "Tokens per second"
    assert "Tokens per second" in (root.get("aria-label") or "")
    assert len(root.findall(f".//{NS}polyline")) == 1
    assert len(_points(root)) == 12
    texts = _texts(root)
    assert "tok/s" in texts  # the y label
    # Unix-second x values are labelled as clock times, not as 1.7e9.
    assert any(":" in t for t in texts)
    assert not any("e+09" in t or "1.7" in t for t in texts)


def test_series_colours_come_from_css_custom_properties() -> None:
    a = Series("a", [(0, 1.0), (1, 2.0)])
    b = Series("b", [(0, 2.0), (1, 3.0)])
    svg = str(line_chart([a, b]))
    assert "var(--series-1" in svg and "var(--series-2" in svg
    # Two series get a legend naming both.
    texts = _texts(_parse(line_chart([a, b])))
    assert "a" in texts and "b" in texts


def test_one_point_is_drawn_as_a_dot_without_dividing_by_zero() -> None:
    root = _parse(line_chart([Series("pass rate", [(1_700_000_000, 1.0)])]))
    assert len(_points(root)) == 1
    assert root.findall(f".//{NS}polyline") == []
    for c in _points(root):
        assert float(c.get("cx", "nan")) == float(c.get("cx", "nan"))  # not NaN


def test_a_none_splits_the_line_into_two_runs() -> None:
    s = Series("p50", [(0, 1.0), (1, 2.0), (2, None), (3, 2.5), (4, 3.0)])
    root = _parse(line_chart([s]))
    lines = root.findall(f".//{NS}polyline")
    assert len(lines) == 2
    assert [len((ln.get("points") or "").split()) for ln in lines] == [2, 2]
    assert len(_points(root)) == 4


def test_markers_draw_a_vertical_line_with_their_label() -> None:
    s = Series("pass rate", [(0, 1.0), (1, 1.0), (2, 0.5)])
    root = _parse(line_chart([s], markers=[Marker(2, "regression: pass rate 100% → 50%")]))
    groups = [g for g in root.iter(f"{NS}g") if g.get("class") == "chart-marker"]
    assert len(groups) == 1
    assert groups[0].findtext(f"{NS}title") == "regression: pass rate 100% → 50%"
    line = groups[0].find(f"{NS}line")
    assert line is not None and line.get("x1") == line.get("x2")


def test_text_is_escaped() -> None:
    evil = '<script>alert("x")</script> & "q"'
    s = Series(evil, [(0, 1.0), (1, 2.0)])
    svg = line_chart([s, Series("b", [(0, 1.0)])], title=evil, y_label=evil, markers=[Marker(1, evil)])
    assert "<script>" not in str(svg)
    root = _parse(svg)  # parses, so quotes in attributes were escaped too
    assert root.findtext(f"{NS}title") == evil
    assert evil in (root.get("aria-label") or "")
    assert any(g.get("data-series") == evil for g in root.iter(f"{NS}g"))


def test_empty_series_give_a_readable_no_data_chart() -> None:
    for series in ([], [Series("x", [])], [Series("x", [(0, None), (1, None)])]):
        root = _parse(line_chart(series, title="TTFT", empty_label="Chưa có dữ liệu"))
        assert "Chưa có dữ liệu" in _texts(root)
        assert "Chưa có dữ liệu" in (root.get("aria-label") or "")
        assert _points(root) == []
    assert "No data yet" in _texts(_parse(line_chart([])))


def test_y_axis_covers_the_values_with_round_ticks() -> None:
    root = _parse(line_chart([Series("ms", [(0, 120.0), (1, 480.0), (2, 333.0)])]))
    ticks = next(g for g in root.iter(f"{NS}g") if g.get("class") == "chart-y-ticks")
    values = [float("".join(t.itertext())) for t in ticks.iter(f"{NS}text")]
    assert values == sorted(values)
    assert values[0] <= 120 and values[-1] >= 480
    assert len(values) >= 3


def test_index_x_values_are_labelled_as_whole_numbers() -> None:
    root = _parse(line_chart([Series("runs", [(0, 1.0), (1, 0.5), (2, 0.75)])]))
    ticks = next(g for g in root.iter(f"{NS}g") if g.get("class") == "chart-x-ticks")
    assert ["".join(t.itertext()) for t in ticks.iter(f"{NS}text")] == ["0", "1", "2"]


def test_size_is_the_requested_one() -> None:
    root = _parse(line_chart([Series("a", [(0, 1.0), (1, 2.0)])], width=300, height=120))
    assert root.get("viewBox") == "0 0 300 120"
    assert (root.get("width"), root.get("height")) == ("300", "120")


def test_the_chart_scales_to_its_container() -> None:
    """width/height stay as the intrinsic size (and the aspect ratio); the inline style makes the
    chart as wide as its card, the height following the viewBox, so it fits a phone too."""
    for series in ([Series("a", [(0, 1.0), (1, 2.0)])], []):
        root = _parse(line_chart(series, width=640, height=180))
        assert root.get("viewBox") == "0 0 640 180"
        assert root.get("preserveAspectRatio") == "xMidYMid meet"
        style = {
            k.strip(): v.strip()
            for k, v in (d.split(":", 1) for d in (root.get("style") or "").split(";") if d.strip())
        }
        assert style["width"] == "100%"
        assert style["height"] == "auto"
        assert style["max-width"] == "100%"
        # Text sizes follow --chart-font (console.css tunes it per container width).
        sized = [el.get("style") or "" for el in root.iter() if "font-size" in (el.get("style") or "")]
        assert sized and all("var(--chart-font" in st for st in sized)


def test_the_edge_time_labels_stay_inside_the_frame() -> None:
    root = _parse(line_chart([Series("p", [(1_764_460_800, 1.0), (1_764_464_400, 2.0)])]))
    ticks = next(g for g in root.iter(f"{NS}g") if g.get("class") == "chart-x-ticks")
    anchors = [t.get("text-anchor") for t in ticks.iter(f"{NS}text")]
    assert anchors[0] == "start" and anchors[-1] == "end"
    assert set(anchors[1:-1]) == {"middle"}


def test_one_timed_point_gets_an_hour_either_side_not_years() -> None:
    root = _parse(line_chart([Series("p", [(1_764_460_800, 0.0)])]))  # 2025-11-30 00:00 UTC
    ticks = next(g for g in root.iter(f"{NS}g") if g.get("class") == "chart-x-ticks")
    labels = ["".join(t.itertext()) for t in ticks.iter(f"{NS}text")]
    assert labels[0] == "23:00" and labels[-1] == "01:00"
    y_ticks = next(g for g in root.iter(f"{NS}g") if g.get("class") == "chart-y-ticks")
    assert all(float("".join(t.itertext())) >= 0 for t in y_ticks.iter(f"{NS}text"))  # a 0 stays the floor


def test_a_fixed_y_range_is_kept() -> None:
    root = _parse(line_chart([Series("pass", [(0, 50.0), (1, 60.0)])], y_range=(0, 100)))
    y_ticks = next(g for g in root.iter(f"{NS}g") if g.get("class") == "chart-y-ticks")
    values = [float("".join(t.itertext())) for t in y_ticks.iter(f"{NS}text")]
    assert values[0] == 0 and values[-1] == 100
