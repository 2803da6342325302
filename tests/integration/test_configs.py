"""The deployment configs, checked by the real programs: Debian's nginx and promtool, and the
compose specification's JSON schema (check-jsonschema's vendored copy)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.stack_configs import (
    COMPOSE_FILE,
    DASHBOARD,
    PROMETHEUS_YML,
    dashboard_exprs,
    promql_metric_names,
    render_nginx_conf,
    render_prometheus_yml,
)
from tests.support import ROOT

OBSERVABILITY = ROOT / "observability"


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    conf = render_nginx_conf(
        workdir=tmp_path,
        listen="127.0.0.1:8080",
        upstreams=["127.0.0.1:8001", "127.0.0.1:8002"],
        static_root=tmp_path,
    )
    result = _run(
        shutil.which("nginx") or "/usr/sbin/nginx", "-t", "-p", str(tmp_path), "-c", str(conf)
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_rejects_a_broken_config(tmp_path: Path) -> None:
    """The check above can fail: the same nginx refuses a config with an unknown directive."""
    conf = render_nginx_conf(
        workdir=tmp_path,
        listen="127.0.0.1:8080",
        upstreams=["127.0.0.1:8001"],
        static_root=tmp_path,
    )
    conf.write_text(conf.read_text().replace("server_tokens off;", "server_tokens off; bogus 1;"))
    result = _run("nginx", "-t", "-p", str(tmp_path), "-c", str(conf))
    assert result.returncode != 0
    assert 'unknown directive "bogus"' in result.stderr


def test_nginx_config_keeps_metrics_private_and_limits_requests() -> None:
    text = (ROOT / "nginx" / "nginx.conf").read_text()
    assert "location ^~ /metrics {\n            deny all;" in text
    assert "client_max_body_size 100k;" in text
    for header in ("X-Request-ID", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
        assert f"proxy_set_header {header} " in text


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    result = _run("promtool", "check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout

    # The rendered copy the native stack test uses is valid too.
    rendered = render_prometheus_yml(
        workdir=tmp_path, targets={"web": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}
    )
    result = _run("promtool", "check", "config", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "prometheus.yml"
    broken.write_text(
        PROMETHEUS_YML.read_text().replace("scrape_interval: 15s", "scrape_interval: soon")
    )
    result = _run("promtool", "check", "config", str(broken))
    assert result.returncode != 0


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "check-jsonschema"
    return _run(str(executable), "--builtin-schema", "vendor.compose-spec", str(path))


def test_compose_file_matches_the_compose_specification() -> None:
    result = _check_compose(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace("stop_grace_period: 75s", "stop_grace_period: [75]")
    )
    result = _check_compose(broken)
    assert result.returncode != 0


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_topology(compose: dict) -> None:
    services = compose["services"]
    expected = {
        "nginx", "web1", "web2", "events", "worker", "migrate", "postgres", "redis", "localstack",
        "otel-collector", "prometheus", "tempo", "loki", "promtail", "grafana",
    }  # fmt: skip
    assert expected <= set(services)
    # One image for web and worker, started in exec form.
    assert {
        services[name]["image"] for name in ("web1", "web2", "events", "worker", "migrate")
    } == {"questions-app:latest"}
    for name in ("web1", "web2", "events", "worker", "migrate"):
        assert isinstance(services[name]["command"], list), name
    # Migrations run once, before the app.
    for name in ("web1", "web2", "events", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["localstack"]["condition"] == "service_healthy"
        assert "healthcheck" in services[name]
    assert services["nginx"]["depends_on"]["web1"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["web2"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["events"]["condition"] == "service_healthy"


def _seconds(value: str) -> int:
    assert value.endswith("s"), value
    return int(value[:-1])


def test_worker_stop_grace_outlasts_a_long_poll_and_an_llm_call(compose: dict) -> None:
    worker = compose["services"]["worker"]
    options = dict(arg.removeprefix("--").split("=", 1) for arg in worker["command"] if "=" in arg)
    llm_timeout = float(worker["environment"]["OPENAI_TIMEOUT"])
    grace = _seconds(worker["stop_grace_period"])
    assert grace > int(options["wait-time"]) + llm_timeout
    assert grace > float(options["shutdown-timeout"]) > llm_timeout


def test_dockerfile_runs_as_non_root_in_exec_form() -> None:
    text = (ROOT / "Dockerfile").read_text()
    app_stage = text.split("FROM nginx")[0]
    assert "\nUSER app\n" in app_stage
    cmd = [line for line in app_stage.splitlines() if line.startswith("CMD ")]
    assert len(cmd) == 1
    assert json.loads(cmd[0].removeprefix("CMD ")) == [
        "gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py"
    ]  # fmt: skip


def test_localstack_init_script_creates_queue_dlq_and_redrive() -> None:
    script = ROOT / "localstack" / "init" / "ready.d" / "create-queues.sh"
    assert script.stat().st_mode & 0o111, "LocalStack runs only executable hooks"
    assert _run("bash", "-n", str(script)).returncode == 0
    text = script.read_text()
    assert "RedrivePolicy" in text
    assert "deadLetterTargetArn" in text


def test_grafana_datasources_are_cross_linked() -> None:
    config = yaml.safe_load(
        (OBSERVABILITY / "grafana/provisioning/datasources/datasources.yaml").read_text()
    )
    by_uid = {source["uid"]: source for source in config["datasources"]}
    assert set(by_uid) == {"prometheus", "tempo", "loki"}
    assert {
        d["datasourceUid"] for d in by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    } == {"tempo"}  # noqa: E501
    assert by_uid["tempo"]["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert {d["datasourceUid"] for d in by_uid["loki"]["jsonData"]["derivedFields"]} == {"tempo"}


def test_dashboard_panels_query_provisioned_datasources() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "Questions"
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 15
    names = set().union(*(promql_metric_names(expr) for expr in exprs))
    # Each thing the issue asks the dashboard to show has its metric.
    for needed in (
        "django_http_requests_total_by_view_transport_method_total",
        "django_http_requests_latency_seconds_by_view_method_bucket",
        "django_http_responses_total_by_status_total",
        "questions_sqs_queue_messages",
        "questions_jobs_finished_total",
        "questions_job_duration_seconds_bucket",
        "questions_llm_request_duration_seconds_bucket",
        "questions_llm_tokens_total",
    ):
        assert needed in names, needed


def test_promql_metric_names_lexer() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le) "
        '(rate(a_seconds_bucket{outcome="ok"}[$__rate_interval])))'
        ' + sum(increase(b_total{kind="prompt"}[$__range])) * $price / 1e6'
    )
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b_total"}


# --- a stack that is private by default ------------------------------------------------------


def _published(service: dict) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


def test_only_nginx_is_published_beyond_localhost(compose: dict) -> None:
    public = {}
    for name, service in compose["services"].items():
        for port in _published(service):
            if not port.startswith("127.0.0.1:"):
                public[name] = port
    assert public == {"nginx": "8080:80"}
    for name in ("grafana", "prometheus"):
        assert _published(compose["services"][name]), f"{name} is reachable on localhost"
    for name in ("postgres", "redis", "loki", "tempo", "otel-collector", "web1", "web2"):
        assert not _published(compose["services"][name]), name


def test_grafana_asks_for_a_login_and_gives_anonymous_users_no_admin(compose: dict) -> None:
    env = compose["services"]["grafana"]["environment"]
    anonymous = str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "true"
    assert not anonymous or env.get("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer") == "Viewer"
    assert str(env.get("GF_AUTH_DISABLE_LOGIN_FORM", "false")).lower() == "false"
    # The admin password comes from the environment, with no default to fall back on.
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_compose_has_no_default_secrets(compose: dict) -> None:
    app_env = compose["x-app-env"]
    assert app_env["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
    redis_url = app_env["REDIS_URL"]
    assert redis_url.startswith("redis://:${REDIS_PASSWORD:?") and redis_url.endswith(
        "@redis:6379/0"
    )
    redis = compose["services"]["redis"]
    assert "--requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")


def test_prometheus_accepts_no_remote_writes(compose: dict) -> None:
    command = " ".join(compose["services"]["prometheus"]["command"])
    assert "remote-write-receiver" not in command
    assert "remote_write" not in (OBSERVABILITY / "tempo.yaml").read_text()


def test_django_trusts_forwarded_for_only_from_nginxs_fixed_address(compose: dict) -> None:
    nginx_ip = compose["services"]["nginx"]["networks"]["default"]["ipv4_address"]
    assert compose["x-app-env"]["DJANGO_TRUSTED_PROXIES"] == nginx_ip
