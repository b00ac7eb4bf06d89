"""safesync's jobs and entry points (HTTP targets in ``main``, CLI in ``cli``)."""
