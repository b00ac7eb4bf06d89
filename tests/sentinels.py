"""Known sentinel values for every secret. The whole suite runs with them so
a final check can prove none of them leaked into logs, reports or stored
files (see tests/test_zz_secrets.py)."""

SECRETS = {
    "SAFESYNC_API_TOKEN": "sentinel-api-token-7f3a9c",
    "SAFESYNC_ADMIN_TOKEN": "sentinel-admin-token-2b8e41",
    "QSTASH_CURRENT_SIGNING_KEY": "sentinel-qstash-current-key-5d1f",
    "QSTASH_NEXT_SIGNING_KEY": "sentinel-qstash-next-key-9a0c",
    "VERCEL_WEBHOOK_SECRET": "sentinel-vercel-secret-4e6b",
    "SAFESYNC_ENCRYPTION_KEY": "c2VudGluZWwtZW5jcnlwdGlvbi1rZXktMzJieXRlcyE=",
    "QSTASH_TOKEN": "sentinel-qstash-token-8c2d",
}
DB_PASSWORD = "sentinel-db-password-1a2b"
PUBLIC_URL = "https://safesync.example.test"
