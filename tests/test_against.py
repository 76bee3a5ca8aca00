"""``benchmarks.against``: the checkouts alternate round by round, ``--only`` measures some groups, and the table
shows the figures measured, as ratios that favour the better side."""
import pytest

from benchmarks import against


@pytest.fixture
def fake_groups(monkeypatch):
    """Groups that record which checkout they measured, in order, and return fixed figures per checkout."""
    calls = []
    speeds = {"base": 100.0, "new": 125.0}
    seconds = {"base": 2.0, "new": 1.0}

    def env(repo):
        calls.append(("env", repo))
        return {"env_4096": speeds[repo]}

    def launches(repo):
        calls.append(("launches", repo))
        return {"warm_first_summary": seconds[repo]}

    monkeypatch.setattr(against, "GROUPS", {"env": env, "training": lambda repo: pytest.fail("not asked for"),
                                            "launches": launches})
    monkeypatch.setattr(against.startup, "load_average", lambda: 0.0)
    return calls


def test_the_checkouts_alternate_and_only_the_asked_groups_run(fake_groups):
    figures = against.measure({"base": "base", "new": "new"}, 3, ("env", "launches"))
    order = [repo for group, repo in fake_groups if group == "env"]
    assert order == ["base", "new", "new", "base", "base", "new"]
    assert figures["new"] == {"env_4096": [125.0] * 3, "warm_first_summary": [1.0] * 3}


def test_the_table_shows_measured_figures_as_ratios(fake_groups):
    figures = against.measure({"base": "base", "new": "new"}, 2, ("env", "launches"))
    table = against.table(figures, "base", "new")
    rows = table.splitlines()[2:]
    assert len(rows) == 2  # the training and the two-device rows were not measured
    assert rows[0].startswith("| env only, 4096 robots") and rows[0].endswith("| 1.25× |")
    assert rows[1].startswith("| warm launch → first summary") and rows[1].endswith("| 2.00× |")  # lower is better


def test_an_unknown_group_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        against.main(["--baseline", "HEAD", "--only", "gpu"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'gpu'" in capsys.readouterr().err
