"""Static checks of the deployment files (no Docker engine needed).

Covers Dockerfile, .dockerignore, docker-compose.yml and docs/deployment.md,
cross-checked against the real code: setting names against
``service.config.Settings`` and commands against ``service.cli.build_parser``.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # a real server process or trainer: `make test-fast` skips it

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
DEPLOY_DOC = REPO / "docs" / "deployment.md"

ENV_PREFIX = "DEPO_"
SERVE_CMD = ["depo", "serve", "--host", "0.0.0.0", "--port", "8000"]
COMPOSE_TOP_LEVEL = {
    "version",
    "name",
    "include",
    "services",
    "networks",
    "volumes",
    "configs",
    "secrets",
}
DEPO_VAR = re.compile(r"\bDEPO_[A-Z0-9_]+\b")


# --------------------------------------------------------------------------- helpers


def _import_service(module: str):
    """Import a module of the project lazily (it is written alongside these files)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import importlib

    return importlib.import_module(module)


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """Split a Dockerfile into (INSTRUCTION, arguments) pairs.

    Handles comments, blank lines and backslash line continuations (comment
    lines inside a continued instruction are dropped, as BuildKit does).
    """
    instructions: list[tuple[str, str]] = []
    buf: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        joined = " ".join(part for part in buf if part)
        buf = []
        keyword, _, args = joined.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not buf, "Dockerfile ends inside a line continuation"
    return instructions


def split_flags(args: str) -> tuple[dict[str, str], str]:
    """Strip leading ``--flag=value`` options (COPY --from=..., HEALTHCHECK --interval=...)."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return flags, rest


def exec_form(args: str) -> list[str] | None:
    """Return the JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD, else None."""
    if not args.startswith("["):
        return None
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def env_pairs(args: str) -> dict[str, str]:
    """Parse ``ENV a=b c="d e"`` (and the legacy ``ENV a b``)."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(tok.split("=", 1) for tok in tokens)


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def service_command(service: dict) -> list[str] | None:
    cmd = service.get("command")
    if cmd is None:
        return None
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short syntax means service_started
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def healthcheck_python_code(test: list[str]) -> str:
    """Extract the code of a ``python -c CODE`` healthcheck."""
    args = test[1:] if test and test[0] in ("CMD", "CMD-SHELL") else test
    if len(args) == 1:  # shell string
        args = shlex.split(args[0])
    assert args[0] in ("python", "python3") and args[1] == "-c", (
        f"healthcheck is not `python -c ...`: {test}"
    )
    return args[2]


def run_healthcheck_against(code: str, status: int) -> int:
    """Run healthcheck code against a local HTTP server whose /healthz returns `status`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        local = code.replace(":8000/", f":{server.server_address[1]}/")
        assert local != code, "healthcheck does not target port 8000"
        proc = subprocess.run([sys.executable, "-c", local], capture_output=True, timeout=30)
        return proc.returncode
    finally:
        server.shutdown()
        server.server_close()


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def is_dockerignored(path: str, patterns: list[str]) -> bool:
    path = path.strip("/").removeprefix("./")
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").strip("/").removeprefix("./")
        candidates = [pat, pat.removeprefix("**/")]
        if any(fnmatch.fnmatch(path, c) or path.startswith(c + "/") for c in candidates):
            ignored = not negate
    return ignored


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def docker_instructions() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final_stage(docker_instructions) -> list[tuple[str, str]]:
    return stages(docker_instructions)[-1]


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def settings_env_names() -> set[str]:
    config = _import_service("service.config")
    settings_cls = config.Settings
    prefix = settings_cls.model_config.get("env_prefix", "")
    assert prefix.upper() == ENV_PREFIX, (
        f"Settings env_prefix is {prefix!r}, expected {ENV_PREFIX!r}"
    )
    return {ENV_PREFIX + name.upper() for name in settings_cls.model_fields}


@pytest.fixture(scope="module")
def cli_parser():
    return _import_service("service.cli").build_parser()


# --------------------------------------------------------------------------- Dockerfile


def test_parser_handles_continuations_and_comments():
    parsed = parse_dockerfile('# c\nFROM x AS y\nRUN a \\\n  # inner\n  && b\n\nCMD ["z"]\n')
    assert parsed == [("FROM", "x AS y"), ("RUN", "a && b"), ("CMD", '["z"]')]


def test_dockerfile_has_required_instructions(docker_instructions):
    names = [name for name, _ in docker_instructions]
    assert names[0] in ("FROM", "ARG"), "Dockerfile must start with FROM (or ARG)"
    for required in ("FROM", "RUN", "COPY", "USER", "HEALTHCHECK", "EXPOSE", "CMD"):
        assert required in names, f"Dockerfile lacks {required}"


def test_every_stage_is_python_311_slim(docker_instructions):
    for stage in stages(docker_instructions):
        image = stage[0][1].split()[0]
        assert image == "python:3.11-slim", f"unexpected base image {image}"


def test_torch_cpu_installed_before_project(docker_instructions):
    runs = [args for name, args in docker_instructions if name == "RUN"]
    torch_idx = next(
        (
            i
            for i, r in enumerate(runs)
            if "--index-url https://download.pytorch.org/whl/cpu" in r and "torch==" in r
        ),
        None,
    )
    assert torch_idx is not None, "no RUN installs torch from the CPU wheel index"
    project_idx = next(
        (i for i, r in enumerate(runs) if re.search(r"pip install\s+(\S+\s+)*\.(\s|$)", r)), None
    )
    assert project_idx is not None, "no RUN does `pip install .`"
    assert torch_idx < project_idx, "CPU torch must be installed before the project"


def test_copy_sources_exist_and_are_not_dockerignored(docker_instructions):
    patterns = dockerignore_patterns()
    checked = 0
    for name, args in docker_instructions:
        if name not in ("COPY", "ADD"):
            continue
        flags, rest = split_flags(args)
        if "from" in flags:  # copies from another stage, not the build context
            continue
        parts = exec_form(rest) or shlex.split(rest)
        assert len(parts) >= 2, f"{name} needs a source and a destination: {args}"
        for src in parts[:-1]:
            assert (REPO / src).exists(), f"{name} source {src!r} does not exist in the repository"
            assert not is_dockerignored(src, patterns), (
                f"{name} source {src!r} is excluded by .dockerignore"
            )
            checked += 1
    assert checked, "Dockerfile copies nothing from the build context"


def test_runs_as_non_root_user(final_stage):
    names = [name for name, _ in final_stage]
    assert "CMD" in names, "final stage has no CMD"
    users = [
        args.split(":")[0] for name, args in final_stage[: names.index("CMD")] if name == "USER"
    ]
    assert users, "final stage sets no USER before CMD"
    assert users[-1] not in ("root", "0"), f"runs as root ({users[-1]})"


def test_cmd_is_depo_serve(final_stage):
    cmds = [args for name, args in final_stage if name == "CMD"]
    assert exec_form(cmds[-1]) == SERVE_CMD


def test_expose_and_runtime_env(final_stage):
    exposed = {
        p.split("/")[0] for name, args in final_stage if name == "EXPOSE" for p in args.split()
    }
    assert "8000" in exposed
    env: dict[str, str] = {}
    for name, args in final_stage:
        if name == "ENV":
            env.update(env_pairs(args))
    assert env.get("DEPO_DATA_DIR") == "/data"
    assert env.get("HF_HUB_OFFLINE") == "1"
    volumes = [args for name, args in final_stage if name == "VOLUME"]
    assert any("/data" in (exec_form(v) or v.split()) for v in volumes), "/data is not a VOLUME"


def test_dockerfile_healthcheck_uses_python_and_works(final_stage):
    checks = [args for name, args in final_stage if name == "HEALTHCHECK"]
    assert checks, "final stage has no HEALTHCHECK"
    _, rest = split_flags(checks[-1])
    assert rest.startswith("CMD "), f"HEALTHCHECK must use CMD: {rest}"
    test = exec_form(rest[len("CMD ") :].strip()) or shlex.split(rest[len("CMD ") :])
    assert not {"curl", "wget"} & set(test), "curl/wget are not in python:3.11-slim"
    code = healthcheck_python_code(test)
    assert "/healthz" in code
    assert run_healthcheck_against(code, 200) == 0
    assert run_healthcheck_against(code, 503) != 0


def test_dockerignore_excludes_local_state():
    patterns = dockerignore_patterns()
    for path in (".git", ".venv", ".depo", "service/__pycache__", ".pytest_cache"):
        assert is_dockerignored(path, patterns), f".dockerignore does not exclude {path}"
    for path in ("service", "pyproject.toml", "README.md"):
        assert not is_dockerignored(path, patterns), f".dockerignore excludes {path}"


# --------------------------------------------------------------------------- docker-compose.yml


def test_compose_top_level_keys(compose):
    unknown = {k for k in compose if k not in COMPOSE_TOP_LEVEL and not str(k).startswith("x-")}
    assert not unknown, f"unknown top-level keys: {unknown}"
    assert {"postgres", "redis", "migrate", "depo"} <= set(compose["services"])


def test_backing_service_images(services):
    assert str(services["postgres"]["image"]).startswith("postgres:16")
    assert str(services["redis"]["image"]).startswith("redis:7")
    redis_cmd = service_command(services["redis"]) or []
    assert "--appendonly" in redis_cmd and redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"


def test_app_services_use_the_project_image(services):
    for name in ("migrate", "depo"):
        svc = services[name]
        assert "build" in svc or "image" in svc, f"{name} has neither build nor image"
    assert services["migrate"].get("image") == services["depo"].get("image"), (
        "migrate and depo must share an image"
    )
    assert services["worker"].get("image") == services["depo"].get("image"), (
        "the workers run the API's code: one image"
    )


def test_workers_share_the_api_settings_and_queue(services):
    api, worker = service_env(services["depo"]), service_env(services["worker"])
    assert api == worker, "API and workers must see the same stores and queue"
    assert api.get("DEPO_WORKERS", "").lower() in ("true", "1")
    assert "ports" not in services["worker"], "a worker serves no HTTP: scaling it needs no ports"


def test_every_long_running_service_has_a_healthcheck(services):
    for name, svc in services.items():
        if name == "migrate":
            assert "healthcheck" not in svc
            assert str(svc.get("restart", "no")) == "no", "the one-shot migrate must not restart"
            continue
        test = (svc.get("healthcheck") or {}).get("test")
        assert test, f"service {name} has no healthcheck"
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL"), (
                f"{name}: healthcheck test must start with CMD/CMD-SHELL"
            )
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]


def test_depo_healthcheck_works(services):
    code = healthcheck_python_code(services["depo"]["healthcheck"]["test"])
    assert run_healthcheck_against(code, 200) == 0
    assert run_healthcheck_against(code, 503) != 0


def test_dependency_conditions(services):
    assert depends_on(services["migrate"]) == {"postgres": "service_healthy"}
    deps = depends_on(services["depo"])
    assert deps.get("migrate") == "service_completed_successfully"
    assert deps.get("postgres") == "service_healthy"
    assert deps.get("redis") == "service_healthy"
    for name, svc in services.items():
        for dep in depends_on(svc):
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_named_volumes_declared_and_used(compose, services):
    declared = set(compose.get("volumes") or {})
    mounts: dict[str, dict[str, str]] = {}
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict):
                source, target = vol.get("source", ""), vol["target"]
            else:
                source, _, target = vol.partition(":")
                target = target.split(":")[0]
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
                mounts.setdefault(name, {})[target] = source
    assert "/var/lib/postgresql/data" in mounts.get("postgres", {}), (
        "postgres data is not on a named volume"
    )
    assert "/data" in mounts.get("redis", {}), "redis data is not on a named volume"


def test_depo_port_and_env(services):
    depo = services["depo"]
    container_ports = set()
    for port in depo.get("ports") or []:
        spec = (
            port
            if isinstance(port, dict)
            else {"target": str(port).rsplit(":", 1)[-1].split("/")[0]}
        )
        container_ports.add(str(spec["target"]))
    assert "8000" in container_ports
    env = service_env(depo)
    assert env.get("DEPO_DATABASE_URL", "").startswith("postgresql"), "depo must use PostgreSQL"
    assert "@postgres:" in env["DEPO_DATABASE_URL"]
    assert env.get("DEPO_REDIS_URL", "").startswith("redis://redis:")
    assert service_env(services["migrate"]).get("DEPO_DATABASE_URL") == env["DEPO_DATABASE_URL"]
    # the one-shot `migrate` service owns schema changes; replicas must not race it
    assert env.get("DEPO_RUN_MIGRATIONS_ON_START", "").lower() in ("false", "0")


# --------------------------------------------------------------------------- against the code


def test_env_var_names_are_real_settings(settings_env_names, services, docker_instructions):
    used: dict[str, str] = {}
    for name, svc in services.items():
        for key in service_env(svc):
            if key.startswith(ENV_PREFIX):
                used[key] = f"docker-compose.yml:{name}"
    for name, args in docker_instructions:
        if name == "ENV":
            for key in env_pairs(args):
                if key.startswith(ENV_PREFIX):
                    used[key] = "Dockerfile"
    for key in DEPO_VAR.findall(DEPLOY_DOC.read_text()):
        used.setdefault(key, "docs/deployment.md")
    assert used, "no DEPO_ variables found"
    unknown = {k: where for k, where in used.items() if k not in settings_env_names}
    assert not unknown, f"not fields of service.config.Settings: {unknown}"


def test_commands_parse_with_real_cli(cli_parser, final_stage, services):
    with pytest.raises(SystemExit):
        cli_parser.parse_args(["definitely-not-a-subcommand"])

    image_cmd = exec_form([a for n, a in final_stage if n == "CMD"][-1])
    commands = {"Dockerfile CMD": image_cmd}
    for name in ("migrate", "depo", "worker"):
        commands[f"compose {name}"] = service_command(services[name]) or image_cmd
    assert commands["compose migrate"][:2] == ["depo", "migrate"]
    assert commands["compose worker"][:2] == ["depo", "worker"]
    for where, cmd in commands.items():
        assert cmd[0] == "depo", f"{where}: not the depo console script: {cmd}"
        try:
            ns = cli_parser.parse_args(cmd[1:])
        except SystemExit as exc:  # argparse reports errors by exiting
            pytest.fail(
                f"{where}: `{' '.join(cmd)}` rejected by service.cli.build_parser() ({exc})"
            )
        if cmd[1] == "serve":
            assert ns.host == "0.0.0.0"
            assert int(ns.port) == 8000


def test_console_script_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "depo-service"
    assert "depo" in project.get("scripts", {}), "pyproject.toml declares no `depo` console script"
