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
    "AWS_SECRET_ACCESS_KEY": "sentinel-aws-secret-key-6f0e",
    # an age identity (age-keygen format); AGE_RECIPIENT is its public key
    "SAFESYNC_AGE_IDENTITY": "AGE-SECRET-KEY-1H25PQKCG5RSDVKCZUJSN4TCX6DNG092ND3G2U8QQJNLPGQU5D7HQQEVNYS",
}
AGE_RECIPIENT = "age17dmgupy37zl3vqvpj8k326ryyp206h52qy4c2guqlnfj23w3x96q20qkz5"
DB_PASSWORD = "sentinel-db-password-1a2b"
PUBLIC_URL = "https://safesync.example.test"

# Database passwords that break a URL when not percent-encoded (libpq then
# echoes them, or pieces of them, in its errors), and one that needs encoding
# and works: each must stay out of every text, in every spelling. Every piece
# between URL delimiters is at least 5 characters, so a piece is a leak too;
# each carries a digit, so no fixture's own words ("hotels", "November")
# look like one.
HOSTILE_DB_PASSWORDS = {
    "percent": "Sup3r%Secret_77",
    "at": "alpha1@bravo-77q",
    "colon": "charlie2:delta-88q",
    "slash": "echo/foxtrot-99q",
    "quotes": "golf'hotel3\"india-11q",
    "non-ascii": "jüliet-kilö-λima-22q",
    "everything": "mike5%novem6@ber55:oscar7/papa8'quebec9\"romeo-ü44",
}
DELIMITERS = "@:/?#[]&=%'\"\\ ;,"


def leak_needles() -> list[str]:
    """What the session-end scan looks for: every sentinel secret, and each
    hostile password as given, percent-encoded, JSON-escaped, and its pieces."""
    import json
    import re
    from urllib.parse import quote

    out = [*SECRETS.values(), DB_PASSWORD]
    for password in HOSTILE_DB_PASSWORDS.values():
        out += [password, quote(password, safe=""), json.dumps(password)[1:-1]]
        out += [p for p in re.split("[" + re.escape(DELIMITERS) + "]+", password) if len(p) >= 5]
    return sorted(set(out))
