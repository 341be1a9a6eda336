"""Operator commands run where the operator is: the droplet's shell has no avwap and no Redis port, so
the runbook's commands go through ``bin/avwap`` (docker compose exec/run into the executor) and
``docker compose exec redis redis-cli``; the wrapper's command line is what compose needs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "runbook.md"


def _fake_docker(tmp_path: Path, running: bool) -> dict[str, str]:
    """A ``docker`` on PATH that logs its arguments; ``compose ps -q`` prints an id when ``running``."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "docker.log"
    (bindir / "docker").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        f'if [ "$2" = "ps" ]; then {"echo 0123abcd" if running else "true"}; fi\n')
    (bindir / "docker").chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "LOG": str(log)}


def test_bin_avwap_execs_into_the_running_executor_else_runs_a_one_off(tmp_path: Path) -> None:
    for running, want in ((True, "compose exec -T executor avwap kill-switch on --reason two words"),
                          (False, "compose run --rm -T executor avwap kill-switch on --reason two words")):
        env = _fake_docker(tmp_path, running)
        Path(env["LOG"]).unlink(missing_ok=True)
        res = subprocess.run([str(ROOT / "bin" / "avwap"), "kill-switch", "on", "--reason", "two words"], env=env,
                             cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        assert res.returncode == 0, res.stderr
        calls = Path(env["LOG"]).read_text().splitlines()
        assert calls == ["compose ps -q --status running executor", want]
    # it runs from the checkout, where docker-compose.yml is, whatever the caller's directory
    assert 'cd "$(dirname "$0")/.."' in (ROOT / "bin" / "avwap").read_text()


def test_bin_redis_cli_runs_in_the_redis_container_with_its_password(tmp_path: Path) -> None:
    env = _fake_docker(tmp_path, True)
    res = subprocess.run([str(ROOT / "bin" / "redis-cli"), "XREVRANGE", "avwap:alerts", "+", "-", "COUNT", "5"], env=env,
                         cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    assert Path(env["LOG"]).read_text().splitlines() == [
        'compose exec -T redis sh -c REDISCLI_AUTH="${REDIS_PASSWORD:-}" exec redis-cli "$@" redis-cli '
        "XREVRANGE avwap:alerts + - COUNT 5"]
    # the inner shell hands redis-cli the password in its environment and the arguments unchanged
    sh = 'REDISCLI_AUTH="${REDIS_PASSWORD:-}" exec %s'
    env2 = {"REDIS_PASSWORD": "pw", "PATH": os.environ["PATH"]}
    got_env = subprocess.run(["sh", "-c", sh % "env", "redis-cli"], env=env2, capture_output=True, text=True, timeout=10)
    assert "REDISCLI_AUTH=pw" in got_env.stdout.splitlines()
    got_args = subprocess.run(["sh", "-c", sh % 'printf "%s|" "$@"', "redis-cli", "GET", "a b"], env=env2,
                              capture_output=True, text=True, timeout=10)
    assert got_args.stdout == "GET|a b|"


def commands(text: str) -> list[str]:
    """Every shell command of a Markdown file: lines of code fences (indented ones too) and inline code."""
    out: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            out.append(line.strip().split("  #", 1)[0].strip())
        else:
            out.extend(m.strip() for m in re.findall(r"`([^`]+)`", line))
    return [c for c in out if c]


def test_every_runbook_command_runs_on_the_droplet() -> None:
    cmds = commands(RUNBOOK.read_text())
    avwap = [c for c in cmds if re.match(r"^(\S*/)?avwap\s", c)]
    assert len(avwap) > 40
    bad = [c for c in avwap if not c.startswith("bin/avwap ") and not c.startswith(".venv/bin/avwap ")]
    assert not bad, f"runbook commands that reach nothing from the droplet's shell: {bad}"
    dev = [c for c in avwap if c.startswith(".venv/bin/avwap ")]
    assert all("development checkout" in line for line in RUNBOOK.read_text().splitlines()
               if any(d in line for d in dev))  # the one development-checkout line says so
    redis = [c for c in cmds if "redis-cli" in c and not c.startswith("bin/redis-cli ")]
    assert not redis, redis


def test_every_runbook_avwap_command_exists() -> None:
    """Each ``bin/avwap A B ...`` resolves to a real command of the CLI (the shipped wrapper runs it)."""
    from avwap.cli import app

    root = typer.main.get_command(app)
    seen = set()
    for c in commands(RUNBOOK.read_text()):
        if not c.startswith("bin/avwap "):
            continue
        words = c.split()[1:]
        if words[0].isupper():  # the placeholder `bin/avwap ARGS`
            continue
        cmd, path = root, []
        for w in words:
            if not hasattr(cmd, "get_command") or w.startswith("-"):  # a group (typer's click, duck-typed)
                break
            sub = cmd.get_command(None, w)
            if sub is None:
                break
            cmd, path = sub, [*path, w]
        assert path and (not hasattr(cmd, "get_command") or cmd.invoke_without_command), c
        seen.add(" ".join(path))
    assert {"universe build", "data backfill", "kill-switch on", "exits rebase", "health", "exits status"} <= seen
