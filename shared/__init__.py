"""safesync's small common core: config, auth, http, db, storage, locks, log, errors."""
