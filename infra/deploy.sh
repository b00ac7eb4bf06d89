#!/usr/bin/env bash
# Build the safesync image once and deploy each HTTP target as its own Cloud
# Run service, with the environment, secrets, memory and timeout it needs.
# Prints the URLs to give QStash (infra/schedules.toml) and Vercel.
#
#   infra/deploy.sh                          # build, then deploy every target
#   infra/deploy.sh backup status            # build, then deploy only these
#   SKIP_BUILD=1 IMAGE=<image> infra/deploy.sh   # redeploy an image already built
#
# Settings (environment):
#   PROJECT          Google Cloud project (default: gcloud config)
#   REGION           Cloud Run + Artifact Registry region (default: europe-west1)
#   REPOSITORY       Artifact Registry Docker repository (default: safesync; created if missing)
#   SERVICE_ACCOUNT  runtime identity (default: safesync-runner@PROJECT.iam.gserviceaccount.com);
#                    needs roles/secretmanager.secretAccessor and the bucket role of infra/bucket.md
#   TAG              image tag (default: the git commit, "-dirty" with local changes)
#   MAX_INSTANCES    per service (default: 3; runs are serialised by advisory locks anyway)
#
# Secrets: one Secret Manager secret per value, created once with
#   printf %s "$VALUE" | gcloud secrets create NAME --data-file=-
# Always needed: safesync-config (the safesync.toml file; mounted read-only at
# /etc/safesync/safesync.toml), safesync-api-token, safesync-qstash-current-signing-key,
# safesync-qstash-next-signing-key. Database URLs are per role (infra/roles.sql):
# safesync-<db>-url-<role>, so each service connects with the least privilege
# its job needs; see secrets_for below (names assume the default [databases]
# env vars: DEV_/STAGING_/PROD_/SCRATCH_DATABASE_URL). Entries marked "?" are
# used only if the secret exists.
#
# calendar_sync and calendar_notify are a pair: calendar_sync opens Google push
# channels whose address is the calendar_notify service (SAFESYNC_NOTIFY_PUBLIC_URL),
# and calendar_notify queues syncs on the calendar_sync service through QStash
# (SAFESYNC_CALENDAR_SYNC_BASE_URL). Each gets the other's URL; deploying one
# needs the other deployed already or in the same run.
#
# The services allow unauthenticated invocations at the Cloud Run layer: QStash
# and Vercel cannot present Google identity tokens. Every request is checked by
# safesync itself (QStash signature, Vercel HMAC or bearer token) before
# anything runs.
set -euo pipefail

die() {
  echo "deploy.sh: $*" >&2
  exit 1
}

PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null || true)}"
[[ -n "${PROJECT}" ]] || die "set PROJECT (or run: gcloud config set project <id>)"
REGION="${REGION:-europe-west1}"
REPOSITORY="${REPOSITORY:-safesync}"
SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-safesync-runner@${PROJECT}.iam.gserviceaccount.com}"
MAX_INSTANCES="${MAX_INSTANCES:-3}"
CONFIG_MOUNT="/etc/safesync/safesync.toml"
ALL_TARGETS=(backup content_sync staging_clone validate calendar_sync migrate calendar_notify status)

cd "$(dirname "$0")/.."

if [[ -z "${TAG:-}" ]]; then
  TAG="$(git rev-parse --short HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)"
  if ! git diff --quiet HEAD 2>/dev/null; then
    TAG="${TAG}-dirty"
  fi
fi
IMAGE="${IMAGE:-${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/safesync:${TAG}}"

# target -> "memory timeout_seconds cpu concurrency"
resources() {
  case "$1" in
    backup | staging_clone | migrate) echo "2Gi 3600 2 1" ;;
    content_sync) echo "1Gi 1800 1 1" ;;
    validate) echo "512Mi 900 1 4" ;;
    calendar_sync) echo "512Mi 900 1 4" ;;
    status | calendar_notify) echo "256Mi 60 1 20" ;;
    *) die "unknown target '$1' (known: ${ALL_TARGETS[*]})" ;;
  esac
}

# target -> one "ENV_VAR=secret-name" per line; "?" first = optional
secrets_for() {
  local common=(
    SAFESYNC_API_TOKEN=safesync-api-token
    QSTASH_CURRENT_SIGNING_KEY=safesync-qstash-current-signing-key
    QSTASH_NEXT_SIGNING_KEY=safesync-qstash-next-signing-key
    "?SAFESYNC_ADMIN_TOKEN=safesync-admin-token"
    "?SAFESYNC_NOTIFY_URL=safesync-notify-url"
  )
  printf '%s\n' "${common[@]}"
  case "$1" in
    backup)
      # read-only role for create/verify; the restore drill and restores write
      # only to a scratch/staging database, with its owner's URL
      printf '%s\n' PROD_DATABASE_URL=safesync-prod-url-backup \
        "?VERCEL_WEBHOOK_SECRET=safesync-vercel-webhook-secret" \
        "?SCRATCH_DATABASE_URL=safesync-scratch-url-owner" \
        "?STAGING_DATABASE_URL=safesync-staging-url-owner"
      ;;
    content_sync)
      printf '%s\n' DEV_DATABASE_URL=safesync-dev-url-content-sync \
        PROD_DATABASE_URL=safesync-prod-url-content-sync
      ;;
    staging_clone)
      # the clone replaces staging wholesale: staging's owner; dev is only read
      printf '%s\n' DEV_DATABASE_URL=safesync-dev-url-owner \
        STAGING_DATABASE_URL=safesync-staging-url-owner
      ;;
    validate)
      printf '%s\n' PROD_DATABASE_URL=safesync-prod-url-backup \
        "?DEV_DATABASE_URL=safesync-dev-url-backup" \
        "?STAGING_DATABASE_URL=safesync-staging-url-backup"
      ;;
    calendar_sync)
      printf '%s\n' PROD_DATABASE_URL=safesync-prod-url-calendar \
        SAFESYNC_ENCRYPTION_KEY=safesync-encryption-key \
        "?SAFESYNC_GOOGLE_CREDENTIALS=safesync-google-credentials" \
        "?SAFESYNC_GOOGLE_SUBJECT=safesync-google-subject"
      ;;
    calendar_notify)
      # Google push notifications (channel token checked by the job): records
      # them and queues a sync on calendar_sync through QStash; never calls Google
      printf '%s\n' PROD_DATABASE_URL=safesync-prod-url-calendar \
        "?QSTASH_TOKEN=safesync-qstash-token"
      ;;
    migrate)
      # admin token only; migrations need the owner; rehearsals run on a scratch clone
      printf '%s\n' SAFESYNC_ADMIN_TOKEN=safesync-admin-token \
        PROD_DATABASE_URL=safesync-prod-url-owner \
        SCRATCH_DATABASE_URL=safesync-scratch-url-owner
      ;;
    status)
      printf '%s\n' "?PROD_DATABASE_URL=safesync-prod-url-backup"
      ;;
    *) die "unknown target '$1'" ;;
  esac
}

have_secret() {
  gcloud secrets describe "$1" --project "${PROJECT}" >/dev/null 2>&1
}

# The --set-secrets value for a target (the config file + its env secrets).
secret_flags() {
  local target="$1" entry var name optional wanted seen=","
  wanted="$(secrets_for "${target}")"
  local pairs=("${CONFIG_MOUNT}=safesync-config:latest") missing=()
  have_secret safesync-config || missing+=(safesync-config)
  while IFS= read -r entry; do
    optional=""
    if [[ "${entry}" == \?* ]]; then
      optional=1
      entry="${entry#\?}"
    fi
    var="${entry%%=*}"
    name="${entry#*=}"
    if [[ "${seen}" == *",${var},"* ]]; then
      continue # given already (an optional common entry made required here)
    fi
    if have_secret "${name}"; then
      pairs+=("${var}=${name}:latest")
      seen+="${var},"
    elif [[ -z "${optional}" ]]; then
      missing+=("${name}")
    fi
  done <<<"${wanted}"
  if ((${#missing[@]})); then
    die "${target}: missing Secret Manager secret(s): ${missing[*]}"
  fi
  local IFS=,
  echo "${pairs[*]}"
}

service_name() {
  echo "safesync-${1//_/-}"
}

# target -> "ENV_VAR peer": the base URL of another service this one needs
peer_of() {
  case "$1" in
    calendar_sync) echo "SAFESYNC_NOTIFY_PUBLIC_URL calendar_notify" ;;
    calendar_notify) echo "SAFESYNC_CALENDAR_SYNC_BASE_URL calendar_sync" ;;
    *) echo "" ;;
  esac
}

service_url() {
  gcloud run services describe "$1" --project "${PROJECT}" --region "${REGION}" \
    --format='value(status.url)' 2>/dev/null || true
}

build() {
  if ! gcloud artifacts repositories describe "${REPOSITORY}" --project "${PROJECT}" --location "${REGION}" >/dev/null 2>&1; then
    gcloud artifacts repositories create "${REPOSITORY}" --project "${PROJECT}" --location "${REGION}" \
      --repository-format docker --description "safesync images" --quiet
  fi
  gcloud builds submit --project "${PROJECT}" --config infra/cloudbuild.yaml \
    --substitutions "_IMAGE=${IMAGE}" .
}

declare -A URLS=()
declare -A PEER_GIVEN=()

# The URL of a peer service: deployed in this run, or already there.
peer_url() {
  if [[ -n "${URLS[$1]:-}" ]]; then
    echo "${URLS[$1]}"
  else
    service_url "$(service_name "$1")"
  fi
}

deploy() {
  local target="$1" service spec memory timeout cpu concurrency secrets before url peer_env="" var peer
  service="$(service_name "${target}")"
  spec="$(resources "${target}")"
  read -r memory timeout cpu concurrency <<<"${spec}"
  secrets="$(secret_flags "${target}")"
  before="$(service_url "${service}")"
  read -r var peer <<<"$(peer_of "${target}")"
  if [[ -n "${var:-}" ]]; then
    PEER_GIVEN["${target}"]="$(peer_url "${peer}")"
    peer_env=",${var}=${PEER_GIVEN[${target}]}"
  fi
  echo "==> ${service}: ${memory}, ${timeout}s, ${cpu} CPU, concurrency ${concurrency}"
  gcloud run deploy "${service}" --project "${PROJECT}" --region "${REGION}" --image "${IMAGE}" \
    --service-account "${SERVICE_ACCOUNT}" \
    --memory "${memory}" --cpu "${cpu}" --timeout "${timeout}" --concurrency "${concurrency}" \
    --min-instances 0 --max-instances "${MAX_INSTANCES}" \
    --allow-unauthenticated --ingress all \
    --set-env-vars "FUNCTION_TARGET=${target},SAFESYNC_CONFIG=${CONFIG_MOUNT},SAFESYNC_PUBLIC_URL=${before},CLOUD_RUN_TIMEOUT_SECONDS=${timeout}${peer_env}" \
    --set-secrets "${secrets}" \
    --quiet
  url="$(service_url "${service}")"
  [[ -n "${url}" ]] || die "${service}: deployed but has no URL"
  if [[ "${url}" != "${before}" ]]; then
    # first deploy: the URL QStash signs is only known now
    gcloud run services update "${service}" --project "${PROJECT}" --region "${REGION}" \
      --update-env-vars "SAFESYNC_PUBLIC_URL=${url}" --quiet
  fi
  URLS["${target}"]="${url}"
}

# A peer deployed for the first time in this run: its URL is only known now.
link_peers() {
  local target var peer url
  for target in "$@"; do
    read -r var peer <<<"$(peer_of "${target}")"
    [[ -n "${var:-}" ]] || continue
    url="$(peer_url "${peer}")"
    if [[ "${url}" != "${PEER_GIVEN[${target}]:-}" ]]; then
      gcloud run services update "$(service_name "${target}")" --project "${PROJECT}" --region "${REGION}" \
        --update-env-vars "${var}=${url}" --quiet
    fi
  done
}

main() {
  local targets=("$@") target
  if ((${#targets[@]} == 0)); then
    targets=("${ALL_TARGETS[@]}")
  fi
  local var peer ordered=()
  for target in "${targets[@]}"; do
    resources "${target}" >/dev/null
    read -r var peer <<<"$(peer_of "${target}")"
    if [[ -n "${var:-}" && " ${targets[*]} " != *" ${peer} "* && -z "$(service_url "$(service_name "${peer}")")" ]]; then
      die "${target} needs ${peer} (its URL goes into ${var}); deploy both: infra/deploy.sh ${target} ${peer}"
    fi
  done
  # calendar_notify first: calendar_sync then starts with the right channel address
  for target in "${targets[@]}"; do
    if [[ "${target}" == calendar_notify ]]; then
      ordered=("${target}" "${ordered[@]}")
    else
      ordered+=("${target}")
    fi
  done
  targets=("${ordered[@]}")
  if [[ -z "${SKIP_BUILD:-}" ]]; then
    build
  fi
  for target in "${targets[@]}"; do
    deploy "${target}"
  done
  link_peers "${targets[@]}"

  echo
  echo "Deployed ${IMAGE}"
  for target in "${targets[@]}"; do
    printf '  %-14s %s/%s\n' "${target}" "${URLS[${target}]}" "${target}"
  done
  echo
  echo "QStash: before 'safesync schedules apply' (infra/schedules.toml [targets]):"
  for target in "${targets[@]}"; do
    echo "  export SAFESYNC_${target^^}_BASE_URL=${URLS[${target}]}"
  done
  if [[ -n "${URLS[backup]:-}" ]]; then
    echo
    echo "Vercel deploy webhook (pre-deploy backup, signed with VERCEL_WEBHOOK_SECRET):"
    echo "  ${URLS[backup]}/backup"
  fi
  if [[ -n "${URLS[calendar_notify]:-}" ]]; then
    echo
    echo "Google push channels (calendar watch) point at: ${URLS[calendar_notify]}/calendar_notify"
  fi
  if [[ -n "${URLS[status]:-}" ]]; then
    echo
    echo "Check: curl -H \"Authorization: Bearer \$SAFESYNC_API_TOKEN\" ${URLS[status]}/status"
  fi
}

main "$@"
