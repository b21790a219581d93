"""Published figures come from committed JSON: `genkit docs tables` regenerates README.md's and the model
cards' measurement tables byte for byte, and the JSON behind quoted figures is what its command measures."""

import json
import math
from pathlib import Path

import pytest

from genkit.commands import docs

ROOT = Path(__file__).resolve().parents[1]


def test_committed_tables_equal_what_the_json_gives_byte_for_byte():
    stale = docs.stale_tables(ROOT)
    assert not stale, f"run `genkit docs tables`: stale tables in {[str(p.relative_to(ROOT)) for p in stale]}"


def test_every_marker_has_a_renderer_and_every_renderer_is_used():
    used = set()
    for path in docs.doc_files(ROOT):
        text = path.read_text()
        opened = set(docs.re.findall(r"<!-- table:([\w-]+) -->", text))
        closed = set(docs.re.findall(r"<!-- /table:([\w-]+) -->", text))
        assert opened == closed, (path, opened ^ closed)
        used |= opened
    assert used == set(docs.TABLES)


def test_a_hand_edited_figure_is_caught_and_the_command_restores_it(tmp_path, capsys, monkeypatch):
    from genkit.cli import main

    readme = (ROOT / "README.md").read_text()
    edited = readme.replace("| vq-ste | 256 | 0.0428 |", "| vq-ste | 256 | 0.0427 |", 1)
    assert edited != readme
    assert docs.render_file(edited, ROOT) == readme          # regenerating undoes the hand edit
    with pytest.raises(ValueError, match="table='nope' is not allowed"):
        docs.render_file("<!-- table:nope -->\nx\n<!-- /table:nope -->\n", ROOT)
    assert main(["docs", "tables", "--check"]) == 0 and "match" in capsys.readouterr().out


def test_solver_orders_json_is_what_the_bench_measures():
    """docs/solver_orders.json (quoted in README "Measured") against a fresh run of two solvers' orders."""
    from genkit.commands.bench_orders import GRIDS, global_errors, local_order

    committed = json.loads((ROOT / "docs/solver_orders.json").read_text())["solvers"]
    for name in ("euler", "dpmpp_2m"):
        errs = global_errors(name, GRIDS[name][0], steps=(64, 128))
        assert math.log2(errs[0] / errs[1]) == pytest.approx(committed[name]["global"], abs=2e-3)
        assert local_order(name, GRIDS[name][1]) == pytest.approx(committed[name]["local"], abs=2e-3)
    expected = {"euler": 1, "heun": 2, "dpm2": 2, "dpmpp_2m": 2, "dpmpp_3m": 3, "ipndm": 2}
    for name, order in expected.items():          # the figures README quotes are the orders the theory gives
        assert abs(committed[name]["global"] - order) < 0.3, name


def test_overhead_figure_states_its_spread():
    r = json.loads((ROOT / "weights/openmoji-32/bench_overhead.json").read_text())
    lo, hi = min(r["all_s"]["pipeline"]) / max(r["all_s"]["bare"]), max(r["all_s"]["pipeline"]) / min(r["all_s"]["bare"])
    assert lo < r["ratio_pipeline_over_bare"] < hi                # so README must call it "inside the spread"
    assert "inside the run-to-run spread" in docs.measured(ROOT)
