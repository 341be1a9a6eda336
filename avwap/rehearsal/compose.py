"""docker-compose.yml as local processes: what compose gives each service, translated to this machine.

Read from the file, never restated: each service's ``command``, ``environment`` (YAML anchors and
``<<`` merges resolved), ``env_file`` entries (``path``/``required``; read in order, ``environment``
wins, as compose does), ``restart`` policy, ``depends_on`` and ``volumes``. The translation to local
processes is the one a container runtime performs, done by hand:

- a service host name in a value (``redis://redis:6379/0``) becomes ``127.0.0.1:<local port>``;
- a container path under a volume mount (``/app/artifacts``) becomes that volume's local directory;
- ``python`` / ``avwap`` / ``rq`` run from this interpreter's environment, ``redis-server`` from PATH
  (also when compose wraps it in ``sh -c "exec redis-server ..."`` to expand a variable);
- ``${VAR}``, ``${VAR:?message}`` and ``${VAR:-default}`` are interpolated from the project's ``.env``, as
  compose does, and ``$$`` stands for ``$``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


@dataclass(frozen=True)
class EnvFile:
    path: str
    required: bool = True


@dataclass
class ComposeService:
    name: str
    command: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    env_files: list[EnvFile] = field(default_factory=list)
    restart: str = "no"
    depends_on: list[str] = field(default_factory=list)
    volumes: dict[str, str] = field(default_factory=dict)  # container path -> volume name
    image: str = ""
    healthcheck: list[str] = field(default_factory=list)  # the test command (after "CMD")

    def health_target(self) -> str | None:
        """X of an ``avwap health X`` healthcheck (the heartbeat it watches), else None."""
        hc = self.healthcheck
        return hc[2] if len(hc) >= 3 and hc[0] == "avwap" and hc[1] == "health" else None


class ComposeError(ValueError):
    pass


def _env_map(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, list):  # ["KEY=VALUE", ...]
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _env_files(raw: Any) -> list[EnvFile]:
    items = raw if isinstance(raw, list) else ([] if raw is None else [raw])
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(EnvFile(item))
        else:
            out.append(EnvFile(str(item["path"]), bool(item.get("required", True))))
    return out


def _volumes(raw: Any) -> dict[str, str]:
    out = {}
    for item in raw or []:
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) >= 2:
                out[parts[1]] = parts[0]
        else:
            out[str(item["target"])] = str(item["source"])
    return out


def _test(hc: Any) -> list[str]:
    test = (hc or {}).get("test") or []
    if isinstance(test, str):
        return test.split()
    return [str(t) for t in test[1:]] if test and test[0] in ("CMD", "CMD-SHELL") else [str(t) for t in test]


def load_compose(path: Path) -> dict[str, ComposeService]:
    """Every service `docker compose up` starts (services behind a profile are left out), in file order."""
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise ComposeError(f"{path}: no services")
    out: dict[str, ComposeService] = {}
    for name, svc in doc["services"].items():
        if svc.get("profiles"):
            continue  # started only on request (`--profile monitoring`), never by `docker compose up`
        cmd = svc.get("command")
        if isinstance(cmd, str):
            cmd = cmd.split()
        if not cmd:
            raise ComposeError(f"{path}: service {name} has no command (the rehearsal runs commands, not images)")
        restart = str(svc.get("restart", "no"))
        if restart.split(":")[0] not in RESTART_POLICIES:
            raise ComposeError(f"{path}: service {name}: unknown restart policy {restart!r}")
        deps = svc.get("depends_on") or []
        out[name] = ComposeService(name=name, command=[str(c) for c in cmd], environment=_env_map(svc.get("environment")),
                                   env_files=_env_files(svc.get("env_file")), restart=restart,
                                   depends_on=list(deps) if isinstance(deps, list | dict) else [],
                                   volumes=_volumes(svc.get("volumes")), image=str(svc.get("image", "")),
                                   healthcheck=_test(svc.get("healthcheck")))
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (``#`` comments, blank lines, optional quotes), as compose reads an env file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip().removeprefix("export ").strip()] = value
    return out


@dataclass
class LocalHost:
    """Where compose's names land on this machine."""

    project_dir: Path  # env_file paths are relative to it (``docker compose --project-directory``)
    volumes_dir: Path  # one directory per named volume
    ports: dict[str, int]  # service host name -> local port (e.g. redis -> 6391)
    url_query: str = ""  # appended to a translated redis:// URL (the rehearsal's scaled socket timeouts)
    variables: dict[str, str] = field(default_factory=dict)  # compose's interpolation variables (the project .env)

    def volume(self, name: str) -> Path:
        p = self.volumes_dir / name
        p.mkdir(parents=True, exist_ok=True)
        return p


def service_env(svc: ComposeService, host: LocalHost) -> dict[str, str]:
    """The environment compose gives ``svc``: env files in order, then ``environment``, translated."""
    env: dict[str, str] = {}
    for ef in svc.env_files:
        p = host.project_dir / ef.path
        if p.is_file():
            env.update(read_env_file(p))
        elif ef.required:
            raise ComposeError(f"service {svc.name}: env file {p} is required and missing")
    env.update(svc.environment)
    return {k: translate(v, svc, host) for k, v in env.items()}


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[?-])([^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's variable interpolation: ``${VAR}``, ``${VAR:?err}``/``${VAR?err}``, ``${VAR:-def}``/``${VAR-def}``."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        val = variables.get(name)
        empty = val is None or (op.startswith(":") and val == "")
        if op.endswith("?") and empty:
            raise ComposeError(f"{name}: {arg or 'required'} (set it in the project .env)")
        if op.endswith("-") and empty:
            return arg
        return val or ""

    return _VAR.sub(one, value)


def translate(value: str, svc: ComposeService, host: LocalHost) -> str:
    """One value as it reads on this machine: variables interpolated, service hosts -> 127.0.0.1:port,
    mounted paths -> volume dirs."""
    value = interpolate(value, host.variables)
    for name, port in host.ports.items():
        pattern = rf"(?<=[/@]){re.escape(name)}:\d+"
        if re.search(pattern, value):
            value = re.sub(pattern, f"127.0.0.1:{port}", value)
            if host.url_query and value.startswith("redis://") and "?" not in value:
                value += "?" + host.url_query
    for target in sorted(svc.volumes, key=len, reverse=True):
        if value == target or value.startswith(target + "/"):
            return str(host.volume(svc.volumes[target])) + value[len(target):]
    return value


def is_redis(svc: ComposeService) -> bool:
    """The Redis service (its command runs redis-server, directly or through ``sh -c "exec ..."``)."""
    return "redis-server" in " ".join(svc.command)


def redis_service(services: dict[str, ComposeService]) -> str:
    return next(n for n, s in services.items() if is_redis(s))


def app_services(services: dict[str, ComposeService]) -> list[str]:
    """Every service but Redis, in compose order: the ones the fault plan kills in turn."""
    return [n for n, s in services.items() if not is_redis(s)]


def local_command(svc: ComposeService, host: LocalHost) -> list[str]:
    """The command as a local process: the project's interpreter and console scripts; redis on its port."""
    cmd = [translate(c, svc, host) for c in svc.command]
    if cmd[0] in ("sh", "/bin/sh") and cmd[1:2] == ["-c"] and len(cmd) == 3:
        # the container's shell expands $VAR from the service's environment, then execs the command
        env = service_env(svc, host)
        inner = shlex.split(re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)", lambda m: shlex.quote(env.get(m.group(1), "")), cmd[2]))
        cmd = inner[1:] if inner[:1] == ["exec"] else inner
    exe, rest = cmd[0], cmd[1:]
    bindir = Path(sys.executable).parent
    if exe in ("python", "python3"):
        return [sys.executable, *rest]
    if exe == "redis-server":
        data = next((host.volume(v) for t, v in svc.volumes.items() if t == "/data"), host.volume(f"{svc.name}-data"))
        port = host.ports.get(svc.name)
        return [shutil.which("redis-server") or "redis-server", *rest, "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(data)]
    local = bindir / exe
    if local.exists():
        return [str(local), *rest]
    found = shutil.which(exe)
    if not found:
        raise ComposeError(f"service {svc.name}: command {exe!r} not found on this machine")
    return [found, *rest]
