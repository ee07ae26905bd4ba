"""Clicks of the past 30 days put on the click topic, as the edge would have sent them then.

The edge stamps a click with the time it answers, so a month of history cannot go through it in a
test; this produces the same events (the contract of ``redirect.events``) straight to the broker,
where the real ingest process stores them. Run as a process (the browser tests' thread has
Playwright's event loop): ``python -m tests.dashboard.past_clicks LINK_ID…``, settings from the
environment. Deterministic: the same links get the same clicks.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import asyncpg
from aiokafka import AIOKafkaProducer

from h0p_settings import load_settings_or_exit
from redirect.events import EVENT_VERSION, ClickEvent, encode, new_event_id, partition_key

# address → weight (countries the bundled DB-IP City Lite database places them in)
PLACES = {
    "8.8.8.8": 30, "81.2.69.142": 16, "85.214.132.117": 12, "62.210.16.6": 9, "23.0.163.90": 8,
    "27.97.219.226": 8, "133.242.0.3": 6, "200.147.67.142": 6, "1.1.1.1": 4, "91.198.174.192": 4,
    "83.230.180.56": 4, "93.144.169.88": 3, "187.188.237.32": 3, "211.63.8.36": 2, "156.228.188.252": 2,
    "41.184.128.115": 1, "178.42.161.246": 2, "44.5.55.230": 2, "190.104.81.103": 1, "102.140.218.20": 1,
}  # fmt: skip
AGENTS = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36": 30,
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1": 25,
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36": 20,
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15": 15,
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0": 8,
    "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1": 2,
}  # fmt: skip
REFERERS = {"": 40, "https://www.google.com/": 25, "https://t.co/x": 12, "https://news.ycombinator.com/": 8,
            "https://www.linkedin.com/feed/": 8, "https://www.reddit.com/r/selfhosted/": 7}  # fmt: skip
QUERIES = {"": 50, "utm_source=newsletter&utm_medium=email&utm_campaign=spring": 25,
           "utm_source=twitter&utm_medium=social&utm_campaign=launch": 15,
           "utm_source=linkedin&utm_medium=social&utm_campaign=launch&utm_content=banner": 10}  # fmt: skip
DAYS = 30


def _pick(rnd: random.Random, weights: dict[str, int]) -> str:
    return rnd.choices(list(weights), weights=list(weights.values()))[0]


async def send(link_ids: list[str]) -> int:
    """Produce a month of clicks on the links (the first ones most); returns how many."""
    settings = load_settings_or_exit()
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT id, workspace_id, domain, slug, url FROM links WHERE id = ANY($1)", link_ids)
    finally:
        await conn.close()
    links = sorted(rows, key=lambda r: link_ids.index(r["id"]))
    rnd = random.Random(16)
    now = time.time()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
    await producer.start()
    sent = 0
    try:
        for day in range(DAYS, 0, -1):
            # a growing, weekly rhythm: more on weekdays, a launch spike ten days ago
            per_day = 8 + (DAYS - day) // 2 + (0 if day % 7 in (1, 2) else 6) + (30 if day == 10 else 0)
            for _ in range(per_day):
                ts = now - day * 86400 + rnd.uniform(0, 86400)
                link = links[min(int(rnd.expovariate(1.0)), len(links) - 1)]
                event = ClickEvent(
                    v=EVENT_VERSION, id=new_event_id(ts), ts=ts, domain=link["domain"], slug=link["slug"],
                    link_id=link["id"], workspace_id=link["workspace_id"], url=link["url"],
                    ip=_pick(rnd, PLACES), ua=_pick(rnd, AGENTS), referer=_pick(rnd, REFERERS),
                    query=_pick(rnd, QUERIES),
                )  # fmt: skip
                await producer.send(settings.kafka_topic, encode(event), key=partition_key(event),
                                    timestamp_ms=int(ts * 1000))  # fmt: skip
                sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


if __name__ == "__main__":
    print(asyncio.run(send(sys.argv[1:])))
