"""Locust scenarios: people following short links, and a client managing links through the API.

Exploratory load (ramp-ups, mixes, soak), not the measured benchmark (`make bench`). Examples:

    # 200 visitors on the edge, slugs k000000..k099999 as loaded by loadtests/edge_bench.py
    .venv/bin/locust -f loadtests/locustfile.py EdgeVisitor --host http://127.0.0.1:8080 \
        --headless -u 200 -r 50 -t 60s
    # an API client creating and reading links (key from `h0p keys create`)
    H0P_LOCUST_API_KEY=h0p_... .venv/bin/locust -f loadtests/locustfile.py ApiClient \
        --host http://127.0.0.1:8000 --headless -u 5 -r 5 -t 60s

Variables: H0P_LOCUST_SLUGS (slug count, default 100000), H0P_LOCUST_SLUG_FORMAT (default
"k{:06d}"), H0P_LOCUST_API_KEY.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import FastHttpUser, between, task

SLUGS = int(os.environ.get("H0P_LOCUST_SLUGS", "100000"))
SLUG_FORMAT = os.environ.get("H0P_LOCUST_SLUG_FORMAT", "k{:06d}")


class EdgeVisitor(FastHttpUser):
    """Follows random short links without following the redirect (we measure the edge, not the target)."""

    wait_time = between(0.0, 0.1)

    @task
    def follow(self) -> None:
        slug = SLUG_FORMAT.format(random.randrange(SLUGS))
        with self.client.get(f"/{slug}", name="/[slug]", allow_redirects=False, catch_response=True) as response:
            if response.status_code not in (301, 302, 307, 308):
                response.failure(f"expected a redirect, got {response.status_code}")


class ApiClient(FastHttpUser):
    """Creates links and lists them, as an integration would (respects the API's rate limits)."""

    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.headers = {"x-api-key": os.environ.get("H0P_LOCUST_API_KEY", ""), "content-type": "application/json"}
        self.created: list[str] = []

    @task(3)
    def create_link(self) -> None:
        body = {"url": f"https://example.com/{uuid.uuid4().hex}"}
        with self.client.post("/links", json=body, headers=self.headers, catch_response=True) as response:
            if response.status_code == 429:
                response.success()  # rate limited is the API doing its job
            elif response.status_code != 200 and response.status_code != 201:
                response.failure(f"create answered {response.status_code}")
            else:
                self.created.append(response.json()["id"])

    @task(1)
    def list_links(self) -> None:
        self.client.get("/links?limit=50", headers=self.headers, name="/links")

    @task(1)
    def get_link(self) -> None:
        if self.created:
            self.client.get(f"/links/{random.choice(self.created)}", headers=self.headers, name="/links/[id]")
