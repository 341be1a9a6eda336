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


def test_list_settings_read_the_comma_separated_env_text(monkeypatch) -> None:
    monkeypatch.setenv("ALLOWLIST", " AAPL, BRK.B,,")
    monkeypatch.setenv("HEARTBEAT_WATCH_SERVICES", "")
    monkeypatch.setenv("UNIVERSE_EXCHANGES", "NYSE")
    s = load_settings()
    assert s.risk.allowlist == ["AAPL", "BRK.B"] and s.risk.phase_c_allowlist == []
    assert s.analytics.heartbeat_watch_services == [] and s.scanner.universe_exchanges == ["NYSE"]
    assert load_settings(slack_allowed_users="U1,U2").analytics.slack_allowed_users == ["U1", "U2"]


def test_a_list_setting_hashes_as_its_env_text() -> None:
    # the hash of settings written as comma-separated text (before list settings) is unchanged
    from shared.settings.base import fingerprint

    assert fingerprint({"allowlist": ["AAPL", "MSFT"]}) == fingerprint({"allowlist": "AAPL,MSFT"})
    assert fingerprint({"allowlist": []}) == fingerprint({"allowlist": ""})
    assert load_settings(allowlist="AAPL,MSFT").hash() == load_settings(allowlist=["AAPL", "MSFT"]).hash()
