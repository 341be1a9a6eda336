"""Settings: the run id every artifact's provenance carries is deterministic and never part of the hash."""

from __future__ import annotations

from shared.settings import load_settings


def test_run_id_is_derived_deterministically_from_mode_and_settings_hash() -> None:
    a, b = load_settings(), load_settings()
    assert a.resolved_run_id() == b.resolved_run_id() and a.resolved_run_id().startswith("run-")
    assert load_settings(execution_mode="PAPER_SIM").resolved_run_id() != a.resolved_run_id()
    assert load_settings(max_new_entries_per_day=7).resolved_run_id() != a.resolved_run_id()
    # paths are not strategy settings: same run id wherever the artifacts go
    assert load_settings(artifacts_dir="/elsewhere").resolved_run_id() == a.resolved_run_id()


def test_run_id_setting_wins_and_is_not_in_the_settings_hash() -> None:
    named = load_settings(run_id="replay-2018q4")
    assert named.resolved_run_id() == "replay-2018q4"
    assert named.hash() == load_settings().hash()
    assert load_settings(run_id="  ").resolved_run_id() == load_settings().resolved_run_id()
