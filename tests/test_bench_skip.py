"""`genkit bench skip`'s pick: a rho only where the paired interval separates it from the untuned arm."""

from genkit.commands.bench_skip import pick_rho


def _rows(fds: dict) -> dict:
    """{rho or None: fd} -> `bench samplers` rows of euler/polynomial at NFE 5 (None: untuned)."""
    return {f"euler/polynomial{'' if r is None else f'+skip{r:g}'}@5":
            {"solver": "euler", "grid": "polynomial", "nfe_budget": 5, "skip_tuning": r, "fd": fd}
            for r, fd in fds.items()}


def _ratios(cis: dict) -> dict:
    return {f"euler/polynomial+skip{r:g}@5 / euler/polynomial@5": {"fd": {"ratio": sum(ci) / 2, "ci95": list(ci)}}
            for r, ci in cis.items()}


def test_the_lowest_separated_rho_is_picked():
    rows = _rows({None: 80.0, 0.8: 70.0, 0.9: 75.0, 0.7: 69.0})
    pick = pick_rho(rows, _ratios({0.8: (0.85, 0.90), 0.9: (0.9, 0.97), 0.7: (0.8, 1.02)}), "euler", 5, "polynomial")
    assert pick["rho_bottom"] == 0.8 and pick["rule"] == "paired"          # 0.7 is lower but not separated
    assert pick["fd_off"] == 80.0 and pick["fd_ratio_ci95"] == [0.85, 0.90]
    assert [s["rho_bottom"] for s in pick["sweep"]] == [0.7, 0.8, 0.9]


def test_the_sweep_reports_fd_to_the_teacher_without_picking_by_it():
    rows = _rows({None: 80.0, 0.8: 70.0})
    rows["euler/polynomial@5"]["fd_teacher"], rows["euler/polynomial+skip0.8@5"]["fd_teacher"] = 3.0, 6.0
    ratios = _ratios({0.8: (0.85, 0.90)})
    ratios["euler/polynomial+skip0.8@5 / euler/polynomial@5"]["fd_teacher"] = {"ratio": 2.0, "ci95": [1.8, 2.2]}
    pick = pick_rho(rows, ratios, "euler", 5, "polynomial")
    assert pick["rho_bottom"] == 0.8 and pick["fd_teacher_off"] == 3.0     # FD to data decides, as in the paper
    assert pick["sweep"][0]["fd_teacher"] == 6.0 and pick["sweep"][0]["fd_teacher_ratio_ci95"] == [1.8, 2.2]


def test_no_separated_rho_keeps_skip_tuning_off():
    rows = _rows({None: 80.0, 0.8: 79.0})
    pick = pick_rho(rows, _ratios({0.8: (0.95, 1.01)}), "euler", 5, "polynomial")
    assert pick["rho_bottom"] == 1.0 and pick["fd"] == 80.0 and pick["fd_ratio"] is None


def test_without_intervals_the_point_fd_decides_and_says_so():
    pick = pick_rho(_rows({None: 80.0, 0.8: 79.0, 0.9: 81.0}), {}, "euler", 5, "polynomial")
    assert pick["rho_bottom"] == 0.8 and pick["rule"] == "point"
    assert pick_rho(_rows({0.8: 79.0}), {}, "euler", 5, "polynomial") is None   # no untuned arm: no pick
