#!/usr/bin/env python3
"""pycrdt interop: yrs-based clients join busy rooms and end with exactly the server's state.

pycrdt (Python bindings of yrs) with the provider pycrdt-websocket documents (pycrdt.Provider
over httpx-ws) joins rooms that writers keep busy, several times per room, in several rooms,
and edits too. yrs integrates an update whose dependencies it lacks instead of keeping it aside
as Yjs does, and its gap-filling paths are buggy; so the server must never send a peer an update
before the SyncStep2 answering that peer's SyncStep1 (causal delivery, docs/protocol.md).

At the end every pycrdt document must hold exactly what the server holds (GET
/api/rooms/R/update): neither side has an update the other lacks (pending structs show up as a
state the server has and the client lacks) and the texts and maps are equal.

Usage: TANDEM_BIN=target/release/tandem tests/.venv-pycrdt/bin/python tests/pycrdt/busy_join.py
Prints its seed (TANDEM_TEST_SEED to replay) and ends with `pycrdt interop: N passed, F failed`.
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile

import anyio
import httpx
from httpx_ws import aconnect_ws
from pycrdt import Doc, Map, Provider, Text, YMessageType, YSyncMessageType
from pycrdt._sync import create_sync_message, create_update_message
from pycrdt.websocket.websocket import HttpxWebsocket

ROOMS = int(os.environ.get("PYCRDT_ROOMS", "4"))
WRITERS = 3
JOINERS = 6  # per room, joining one after the other while the writers write
WRITES = 400  # per writer
TIMEOUT = 60.0  # seconds for any one wait


def start_server(data_dir):
    binary = os.environ.get("TANDEM_BIN") or os.path.join(
        os.path.dirname(__file__), "..", "..", "target", "release", "tandem"
    )
    env = dict(os.environ, TANDEM_LOG=os.environ.get("TANDEM_LOG", "warn"))
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data", data_dir],
        stdout=subprocess.PIPE,
        env=env,
    )
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("listening on http://"):
        proc.kill()
        raise RuntimeError(f"unexpected first line from tandem: {line!r}")
    return proc, line.removeprefix("listening on ")


async def writer(base, room, rng, wid, all_synced, done):
    """A full pycrdt client that, once every writer is synced, edits all over the shared text
    (inserts between and deletes across other writers' items, formats ranges) and the map:
    each update it sends depends on other clients' earlier ones."""
    doc = Doc()
    text = doc.get("t", type=Text)
    meta = doc.get("m", type=Map)
    async with httpx.AsyncClient() as http, aconnect_ws(f"{base}/{room}", http) as ws:
        async with Provider(doc, HttpxWebsocket(ws, room)) as provider:
            with anyio.fail_after(TIMEOUT):
                await provider.synced.wait()
            all_synced[wid].set()
            with anyio.fail_after(TIMEOUT):
                for e in all_synced:
                    await e.wait()
            for i in range(WRITES):
                n = len(text)
                r = rng.random()
                if n > 8 and r < 0.3:
                    at = rng.randrange(n - 4)
                    del text[at : at + rng.randrange(1, 5)]
                elif n > 8 and r < 0.4:
                    at = rng.randrange(n - 4)
                    text.format(at, at + rng.randrange(1, 5), {"b": rng.random() < 0.5})
                elif r < 0.5:
                    meta[f"k{rng.randrange(5)}"] = i
                else:
                    text.insert(rng.randrange(n + 1), f"{wid}{i % 10}" * rng.randrange(1, 3))
                # pacing, not synchronisation: keep the room busy for the joiners' whole stay
                await anyio.sleep(0.003)
    done.set()


class SlowLink(HttpxWebsocket):
    """A client on a link with latency: its opening SyncStep1 reaches the server `lag` seconds
    after the server registered the connection (on localhost that window is a few microseconds;
    over a real network it is a round trip, during which a busy room keeps broadcasting)."""

    def __init__(self, websocket, path, lag):
        super().__init__(websocket, path)
        self._lag = lag
        self.synced = False
        # document updates received before the SyncStep2: each may lack its dependencies
        self.early_updates = 0

    async def recv(self):
        message = await super().recv()
        if message[:2] == bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2]):
            self.synced = True
        elif message[:2] == bytes([YMessageType.SYNC, YSyncMessageType.SYNC_UPDATE]):
            self.early_updates += not self.synced
        return message

    async def send(self, message):
        if self._lag:
            lag, self._lag = self._lag, 0
            await anyio.sleep(lag)  # emulated latency, not synchronisation
        await super().send(message)


async def server_doc(http, base, room):
    r = await http.get(f"{base}/api/rooms/{room}/update")
    r.raise_for_status()
    doc = Doc()
    doc.apply_update(r.content)
    return doc


def state_vector(encoded):
    """A decoded v1 state vector: {client: clock}."""
    pos = 0

    def var_uint():
        nonlocal pos
        n, shift = 0, 0
        while True:
            b = encoded[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return n

    return {var_uint(): var_uint() for _ in range(var_uint())}


def differences(doc, server):
    """Why `doc` is not exactly `server` (None when it is)."""
    mine, theirs = state_vector(doc.get_state()), state_vector(server.get_state())
    if mine != theirs:
        lacking = {c: (mine.get(c, 0), k) for c, k in theirs.items() if mine.get(c, 0) < k}
        extra = {c: (k, theirs.get(c, 0)) for c, k in mine.items() if theirs.get(c, 0) < k}
        return f"state vectors differ: client lacks {lacking}, has beyond the server {extra}"
    a, b = str(doc.get("t", type=Text)), str(server.get("t", type=Text))
    if a != b:
        return f"texts differ (pending deletions?): client {len(a)} chars, server {len(b)}"
    if doc.get("m", type=Map).to_py() != server.get("m", type=Map).to_py():
        return "maps differ"
    return None


async def joiner(base, room, jid, lag, writers_done, results):
    doc = Doc()
    changed = anyio.Event()

    def on_change(_event):
        nonlocal changed
        changed.set()

    doc.observe(on_change)
    name = f"{room} joiner {jid}"
    try:
        async with httpx.AsyncClient() as http, aconnect_ws(f"{base}/{room}", http) as ws:
            link = SlowLink(ws, room, lag)
            async with Provider(doc, link) as provider:
                with anyio.fail_after(TIMEOUT):
                    await provider.synced.wait()
                doc.get("t", type=Text).insert(0, f"<j{jid}>")
                doc.get("m", type=Map)[f"j{jid}"] = jid
                with anyio.fail_after(TIMEOUT):
                    for done in writers_done:
                        await done.wait()
                # converge: re-check whenever the document changes, until the deadline
                why = "not checked"
                with anyio.move_on_after(TIMEOUT):
                    while True:
                        changed = anyio.Event()
                        why = differences(doc, await server_doc(http, base, room))
                        if why is None:
                            break
                        with anyio.move_on_after(0.5):
                            await changed.wait()
                if link.early_updates:
                    why = (
                        f"received {link.early_updates} document updates before the SyncStep2"
                        f" answering its SyncStep1 (causal delivery broken); end state: {why or 'equal'}"
                    )
                results.append((name, why))
    except Exception as e:  # a failed join is a failed check, reported with the others
        results.append((name, f"{type(e).__name__}: {e}"))


async def one_room(base, room, rng, results):
    writers_done = [anyio.Event() for _ in range(WRITERS)]
    all_synced = [anyio.Event() for _ in range(WRITERS)]
    async with anyio.create_task_group() as tg:
        for w in range(WRITERS):
            wrng = random.Random(rng.random())
            tg.start_soon(writer, base, room, wrng, w, all_synced, writers_done[w])
        for e in all_synced:
            await e.wait()
        for j in range(JOINERS):
            # join at staggered moments while the writers are busy
            await anyio.sleep(rng.uniform(0.05, 0.25))
            lag = rng.uniform(0.02, 0.3)
            tg.start_soon(joiner, base, room, j, lag, writers_done, results)


async def main():
    seed = int(os.environ.get("TANDEM_TEST_SEED") or random.randrange(1 << 32))
    print(f"pycrdt interop: seed {seed} (TANDEM_TEST_SEED to replay)", flush=True)
    rng = random.Random(seed)
    data = tempfile.mkdtemp(prefix="tandem-pycrdt-")
    proc, base = start_server(data)
    results = []
    try:
        async with anyio.create_task_group() as tg:
            for r in range(ROOMS):
                tg.start_soon(one_room, base, f"pycrdt-{seed}-{r}", random.Random(rng.random()), results)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)
    failed = [(n, why) for n, why in results if why is not None]
    for n, why in failed:
        print(f"FAILED {n}: {why}", flush=True)
    expected = ROOMS * JOINERS
    if len(results) != expected:
        failed.append(("count", f"{len(results)} of {expected} joiners reported"))
    passed = len(results) - sum(1 for _, w in results if w is not None)
    print(f"pycrdt interop: {passed} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
