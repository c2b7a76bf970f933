"""Job sizes from measurement: the fit, its held-out error, the margin and the labels, checked
on hand-computed tables; the shipped benchmark table parses and fits."""

import math

import pytest

from cerepro.retrieval import sizing
from cerepro.retrieval.sizing import SCALE_COLUMNS


def table(sizes=(1e5, 2e5, 4e5)):
    """Rows exactly linear in passages: index memory 500 + 0.01 MB a passage, search 1 ms + 0.01 ms
    per thousand passages, two threads 1.6x faster, run writing 1 s a million rows."""
    rows = []
    for n in sizes:
        row = dict.fromkeys(SCALE_COLUMNS, 1.0)
        row.update(
            passages=n,
            shards_peak_mb=1500,
            index_peak_mb=500 + 0.01 * n,
            index_s=0.0001 * n,
            index_mb=0.001 * n,
            shards_mb=0.001 * n,
            search_peak_mb=300 + 0.008 * n,
            search_setup_s=0.00001 * n,
            query_cpu_ms=1 + 0.00001 * n,
            speedup_2=1.6,
            run_rows=1000 * n / 1e4,
            run_write_s=(1000 * n / 1e4) / 1e6,
            run_mb=n / 1e5,
        )
        rows.append(row)
    return rows


def test_a_line_is_fitted_by_least_squares_with_the_largest_size_held_out():
    fit = sizing.fit_line([1, 2, 3, 4], [3, 5, 7, 9.4])
    # by hand: mean x 2.5, mean y 6.1, Sxy 10.6, Sxx 5 -> b 2.12, a 0.8
    assert fit.b == pytest.approx(2.12) and fit.a == pytest.approx(0.8)
    # without x = 4 the points lie on 2x + 1, which predicts 9 where 9.4 was measured
    assert fit.held_out == pytest.approx(0.4 / 9.4)
    assert sizing.fit_line([1, 2], [1, 2]).held_out is None  # nothing to hold out from two sizes
    with pytest.raises(ValueError, match="a line needs two sizes or more, got 1"):
        sizing.fit_line([1], [1])


def test_requests_are_the_fitted_need_times_the_margin_and_only_encoding_holds_a_gpu():
    rows = table()
    big = sizing.requests(8_000_000, 7000, 1000, rows=rows)
    need = 500 + 0.01 * 8e6
    assert big["index"]["need"]["mem_mb"] == round(need)
    assert big["index"]["mem_mb"] == math.ceil(need * sizing.MARGIN["memory"])
    assert big["index"]["runtime_min"] == max(10, math.ceil(0.0001 * 8e6 * sizing.MARGIN["runtime"] / 60))
    assert (big["encode"]["gpus"], big["index"]["gpus"], big["search"]["gpus"]) == (1, 0, 0)
    # the search: 81 ms a query on one thread, 7,000 queries = 567 s on one thread; efficiency 0.8
    assert big["search"]["query_ms"] == pytest.approx(81)
    assert big["search"]["cpu_h"] == pytest.approx(7000 * 0.081 / 3600)
    assert big["search"]["threads"] == 1 and big["basis"] == "fitted"
    # host memory of the encode job holds one shard: the largest measured, whatever the size
    assert big["encode"]["need"]["mem_mb"] == sizing.ENCODE_JOB["host_mem_mb"] + 1500
    small = sizing.requests(200_000, 50, 100, rows=rows)
    assert small["basis"] == "measured"  # a size the table holds
    assert small["index"]["mem_mb"] == math.ceil((500 + 0.01 * 2e5) * 1.5) < big["index"]["mem_mb"]
    tiny = sizing.requests(5_000, 50, 100, rows=rows)  # 550 MB x 1.5 is under the floor
    assert tiny["index"]["mem_mb"] == sizing.FLOOR["mem_mb"] and tiny["basis"] == "fitted"
    assert tiny["search"]["runtime_min"] == sizing.FLOOR["runtime_min"]


def test_a_long_search_is_spread_over_threads_at_the_measured_efficiency():
    rows = table()
    # 500 ms a query (one thread) x 40,000 queries = 5.6 h: 4 threads at efficiency 0.8 -> 1.7 h
    rows = [{**r, "query_cpu_ms": 500.0} for r in rows]
    found = sizing.requests(1_000_000, 40_000, 1000, rows=rows)["search"]
    assert found["threads"] == math.ceil(40_000 * 0.5 / 3600 / sizing.TARGET_SEARCH_H / 0.8) == 7
    assert "assumed at the 2-thread efficiency" in found["basis"]
    huge = sizing.requests(1_000_000, 4_000_000, 1000, rows=rows)["search"]
    assert huge["threads"] == sizing.MAX_THREADS


def test_a_table_with_a_value_that_is_not_a_number_is_refused_naming_file_and_line(tmp_path):
    path = tmp_path / "scale.csv"
    path.write_text("passages,index_s\n100000,2.5\n200000,n/a\n")
    with pytest.raises(ValueError, match=r"scale.csv:3: every column must be a number"):
        sizing.read_table(path)
    path.write_text("passages,index_s\n100000,2.5\n")
    with pytest.raises(ValueError, match=r"scale.csv: 1 measured sizes; fitting needs two or more"):
        sizing.read_table(path)


def test_the_shipped_benchmark_table_fits_with_its_held_out_errors():
    rows = sizing.read_table()
    facts = sizing.read_facts()
    assert len(rows) >= 3 and facts["commit"] and facts["date"]
    assert [r["passages"] for r in rows] == sorted(r["passages"] for r in rows)
    errors = sizing.held_out_errors(rows)
    assert all(errors[k] is not None for k in ("index_peak_mb", "search_peak_mb", "query_cpu_ms", "index_s"))
    marco = sizing.requests(8_841_823, 6980, 1000, rows=rows)
    nano = sizing.requests(5_043, 50, 100, rows=rows)
    assert marco["index"]["mem_mb"] > nano["index"]["mem_mb"] and marco["search"]["cpu_h"] > nano["search"]["cpu_h"]
