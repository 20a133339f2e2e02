"""``duro serve --cluster`` under faults of the NATS side: real nats-servers (3, R=3,
``sync_interval: always``) and real duro node processes driven over HTTP, as in
``test_serve_cluster.py``, each test on a cluster of its own (it kills and partitions servers).

- **SIGKILL of a NATS server under write load**: the server that leads the journal stream is killed
  while 8 clients add through 3 nodes; writes stall for a leader election and resume (the gap is
  printed); every acknowledged add is in the final count, none acknowledged twice, every error a
  client saw retryable (503, ``retryable: true``, Retry-After). The server is restarted on its store:
  its copy of the journal reaches the leader's last sequence, and with another server then killed
  writes go on, the restarted one in the quorum.
- **A partition of one node** (a proxy between it and its servers blackholes the link both ways,
  closing nothing): the node self-fences within its lease (its clients get retryable errors, no
  write is acknowledged by it from then on), the other nodes take its objects and serve them; after
  healing it registers again and serves; nothing acknowledged was lost.

``DURO_CLUSTER_E2E_SECONDS`` sets the writing time around each fault (default 2),
``DURO_CLUSTER_FAULT_ROUNDS`` how many kills (each followed by a restart) or partitions (each
followed by healing) one test makes in a row (default 1; a longer run: 10, with a larger
``--timeout``)."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest

from duro.cluster.journal import STREAM
from duro.cluster.testing import NatsServers
from duro.testing import ServerProcess, wait_for

from .netproxy import LinkProxy
from .nodes import Nodes
from .test_serve_cluster import PROJECT, check_acks, get

LOAD_S = float(os.environ.get("DURO_CLUSTER_E2E_SECONDS", "2"))
ROUNDS = int(os.environ.get("DURO_CLUSTER_FAULT_ROUNDS", "1"))  # kills (each test), partitions
FENCE = 2.5  # a node stops writing this long after its last renewal (LeaseOptions' ttl 3 s - margin 0.5 s)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def own3() -> Iterator[NatsServers]:
    with NatsServers(3) as servers:
        yield servers


@pytest.fixture
def nodes(tmp_path, own3):
    """nodes(n, urls=None) -> n duro nodes joined to ``own3`` (through ``urls`` when given); stopped by
    PID at the end."""
    nodes = Nodes(PROJECT, tmp_path, "f")

    def start(n: int, urls: list[str] | None = None, call_timeout: float = 3.0) -> list[ServerProcess]:
        return [nodes.start(urls or own3.urls, call_timeout=call_timeout, args=["--no-admin"]) for _ in range(n)]

    yield start
    nodes.stop_all()


class Load:
    """Clients adding to ``names`` through ``targets`` (pairs of node and name, round robin) until
    stopped. Records every answer: (time it arrived, node asked, status, body, retry-after, client); an
    HTTP failure (no answer within ``timeout``, a refused connection) is recorded with status 0."""

    def __init__(self, clients: int, targets: list[tuple[ServerProcess, str]], timeout: float = 20.0) -> None:
        self.clients = clients
        self.targets = targets
        self.timeout = timeout
        self.answers: list[tuple[float, str, int, dict, str | None, int]] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(clients)
        self.futures: list[concurrent.futures.Future[None]] = []

    def start(self) -> "Load":
        self.futures = [self.pool.submit(self._client, k) for k in range(self.clients)]
        return self

    def _client(self, k: int) -> None:
        j = k
        with httpx.Client(timeout=self.timeout) as c:
            while not self.stop_event.is_set():
                node, name = self.targets[j % len(self.targets)]
                j += 1
                try:
                    r = c.get(f"{node.url}/add/{name}")
                    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else \
                        {"text": r.text}
                    answer = (time.monotonic(), node.env["DURO_TEST_NODE"], r.status_code, body,
                              r.headers.get("retry-after"), k)
                except httpx.HTTPError as e:
                    answer = (time.monotonic(), node.env["DURO_TEST_NODE"], 0, {"error": repr(e)}, None, k)
                with self.lock:
                    self.answers.append(answer)
                if answer[2] != 200:
                    time.sleep(0.05)

    def stop(self) -> None:
        self.stop_event.set()
        for f in self.futures:
            f.result(60)
        self.pool.shutdown()

    def acked(self) -> dict[str, list[int]]:
        """name -> the stored values acknowledged for it."""
        out: dict[str, list[int]] = defaultdict(list)
        with self.lock:
            for _, _, status, body, _, _ in self.answers:
                if status == 200:
                    out[body["name"]].append(body["stored"])
        return out

    def oks_after(self, t: float) -> int:
        with self.lock:
            return sum(1 for a in self.answers if a[2] == 200 and a[0] > t)

    def errors(self) -> list[tuple[float, str, int, dict, str | None, int]]:
        with self.lock:
            return [a for a in self.answers if a[2] != 200]


def _retryable(answer: tuple[float, str, int, dict, str | None, int]) -> bool:
    _, _, status, body, retry_after, _ = answer
    return status == 503 and body.get("retryable") is True and retry_after is not None


def _owned_by(node: ServerProcess, names: list[str]) -> None:
    for n in names:  # the first request claims: these objects are owned by ``node``
        r = httpx.get(f"{node.url}/add/{n}", timeout=30)
        assert r.status_code == 200 and r.json()["node"] == node.env["DURO_TEST_NODE"], r.text


def _journal(servers: NatsServers, s) -> dict:
    """The journal stream as server ``s`` holds it (its replica): ``cluster`` (leader) and ``state``."""
    for acct in servers.monitor(s, "jsz?streams=true").get("account_details", []):
        for st in acct.get("stream_detail", []):
            if st["name"] == STREAM:
                return st
    raise LookupError(f"{s.name} holds no {STREAM}")


def _leaders(servers: NatsServers) -> dict[str, str]:
    """What each asset is led by, from a server that answers: 'meta' and every stream's name."""
    for s in servers.servers:
        if s.proc is None or s.proc.poll() is not None:
            continue
        try:
            jsz = servers.monitor(s, "jsz?streams=true")
        except OSError:
            continue
        out = {"meta": jsz.get("meta_cluster", {}).get("leader", "")}
        for acct in jsz.get("account_details", []):
            for st in acct.get("stream_detail", []):
                out[st["name"]] = st.get("cluster", {}).get("leader", "")
        return out
    return {}


def _gap(load: Load, since: float) -> float:
    """The longest time without an acknowledged add that ends after ``since``."""
    with load.lock:
        times = sorted(a[0] for a in load.answers if a[2] == 200)
    return max((b - a for a, b in zip(times, times[1:]) if b > since), default=0.0)


# The journal stream's leader: every object's appends wait for an election. The registration
# bucket's leader: renewals wait for one, longer than a node's lease, so nodes self-fence meanwhile.
@pytest.mark.parametrize("lead", [STREAM, "KV_duro_nodes"])
def test_sigkill_of_a_nats_server_under_serve_load_loses_nothing_and_writes_resume(nodes, own3, lead):
    cluster = nodes(3)
    names = [f"n{i}" for i in range(6)]
    for i, n in enumerate(names):
        _owned_by(cluster[i % 3], [n])
    load = Load(8, [(cluster[i % 3], names[i % 6]) for i in range(18)]).start()
    rounds: list[tuple[str, list[str], float, int, float]] = []  # victim, its roles, gap, sequence, catch-up
    try:
        wait_for(lambda: load.oks_after(0) >= 50, timeout=60, what="the first 50 adds")
        for _ in range(ROUNDS):
            time.sleep(LOAD_S)
            leaders = wait_for(lambda: (ls := _leaders(own3)).get(lead) and ls, timeout=30,
                               what=f"{lead}'s leader")
            victim = next(s for s in own3.servers if s.name == leaders[lead])
            killed = time.monotonic()
            own3.kill(victim)
            wait_for(lambda: load.oks_after(killed) >= 50, timeout=90, interval=0.05,
                     what="50 adds acknowledged after the kill")
            gap = _gap(load, killed)  # the longest silence the kill opened
            # The killed server, restarted on its store, catches up with the others' copies.
            relaunched = time.monotonic()
            own3.launch(victim)
            own3.wait_ready(60)
            target = max(_journal(own3, s)["state"]["last_seq"] for s in own3.servers if s is not victim)
            wait_for(lambda: _journal(own3, victim)["state"]["last_seq"] >= target, timeout=60, interval=0.1,
                     what=f"the restarted {victim.name} holds the journal up to sequence {target}")
            rounds.append((victim.name, sorted(k for k, v in leaders.items() if v == victim.name), gap, target,
                           time.monotonic() - relaunched))
        # With a server other than the journal's leader and the last restarted one killed, a quorum of
        # the journal is its leader and the restarted server: writes acknowledged now went through it.
        time.sleep(LOAD_S / 2)
        leaders2 = wait_for(lambda: (ls := _leaders(own3)).get(STREAM) and ls, timeout=30, what="the leader")
        second = next(s for s in own3.servers if s is not victim and s.name != leaders2[STREAM])
        second_killed = time.monotonic()
        own3.kill(second)
        wait_for(lambda: load.oks_after(second_killed) >= 50, timeout=90, interval=0.05,
                 what="50 adds acknowledged with the restarted server in the quorum")
        second_gap = _gap(load, second_killed)
        own3.launch(second)
        own3.wait_ready(60)
    finally:
        load.stop()
    final = {n: get(cluster[0], n)["stored"] for n in names}
    acked = load.acked()
    check_acks(acked, final)
    errors = load.errors()
    bad = [e for e in errors if not _retryable(e)]
    assert not bad, f"a client got an error it could not retry: {bad[:5]}"
    total = sum(len(v) for v in acked.values())
    for name, roles, gap, target, caught_up in rounds:
        print(f"\nSIGKILL of nats-server {name} (leader of {', '.join(roles)}) under 8 writers on 3 nodes: writes "
              f"stalled {gap:.2f} s at most, then resumed; restarted, it held the journal up to sequence {target} "
              f"after {caught_up:.2f} s")
    print(f"{total} acknowledged adds, 0 lost; {len(errors)} retryable errors "
          f"({sorted({e[3].get('error', '')[:60] for e in errors})[:4]}); with {second.name} then killed, writes "
          f"went on through the restarted server (stalled {second_gap:.2f} s at most)")


def test_a_partitioned_node_fences_itself_its_objects_move_and_it_rejoins_after_healing(nodes, own3, tmp_path):
    proxy = LinkProxy([s.port for s in own3.servers]).start()
    try:
        (cut,) = nodes(1, urls=proxy.urls)
        a, b = nodes(2)
        cut_name = cut.env["DURO_TEST_NODE"]
        theirs = ["q0", "q1"]
        _owned_by(a, theirs[:1])
        _owned_by(b, theirs[1:])
        loads: list[Load] = []
        names = list(theirs)
        for r in range(ROUNDS):
            mine = [f"p{r}-{i}" for i in range(3)]  # new objects each round: the cut node owns them
            _owned_by(cut, mine)
            names += mine
            stats = _partition_round(proxy, cut, (a, b), mine, theirs, tmp_path / f"{cut_name}.log", r, loads)
            print(f"\npartition {r + 1} of node {cut_name} (its links blackholed both ways): its objects served by "
                  f"the majority {stats['moved']:.2f} s after the cut; its clients' first errors "
                  f"{stats['first'][0]:.2f}-{stats['first'][1]:.2f} s after the cut, no acknowledgement from it "
                  f"between {FENCE} s after the cut and the heal; healed, it served again after {stats['back']:.2f} s")
        final = {n: get(a, n)["stored"] for n in names}
        acked: dict[str, list[int]] = defaultdict(list)
        for load in loads:
            for n, values in load.acked().items():
                acked[n] += values
        check_acks(acked, final)  # nothing acknowledged lost, no value acknowledged twice
        for name in names:
            assert final[name] == max(acked[name]), (name, final[name])  # nothing unacknowledged counted either
        errors = [e for load in loads for e in load.errors()]
        bad = [e for e in errors if not _retryable(e)]
        assert not bad, f"a client got an error it could not retry: {bad[:5]}"
        print(f"{sum(len(v) for v in acked.values())} acknowledged adds, 0 lost; {len(errors)} client errors, all "
              f"retryable ({sorted({e[3].get('error', '')[:40] for e in errors})[:4]})")
    finally:
        proxy.stop()


def _partition_round(proxy: LinkProxy, cut: ServerProcess, majority_nodes: tuple[ServerProcess, ...],
                     mine: list[str], theirs: list[str], log_path: pathlib.Path, r: int,
                     loads: list[Load]) -> dict:
    """One partition of ``cut`` (which owns ``mine``) under load, then healing; the loads it ran
    are added to ``loads`` (checked by the caller)."""
    cut_name = cut.env["DURO_TEST_NODE"]
    # 6 clients through the majority (to every object); through the node to be cut off, 3 to its own
    # objects and 1 to an object of another node.
    load_major = Load(6, [(n, x) for x in mine + theirs for n in majority_nodes]).start()
    load_own = Load(3, [(cut, x) for x in mine]).start()
    load_fwd = Load(1, [(cut, theirs[0])]).start()
    loads += [load_major, load_own, load_fwd]
    try:
        wait_for(lambda: load_major.oks_after(0) >= 30 and load_own.oks_after(0) >= 10 and load_fwd.oks_after(0),
                 timeout=60, what="adds through every node")
        time.sleep(LOAD_S)
        cut_at = time.monotonic()
        proxy.blackhole()

        def moved() -> bool:  # every object of the cut node served by another node since the cut
            with load_major.lock:
                got = {x[3]["name"] for x in load_major.answers
                       if x[2] == 200 and x[0] > cut_at and x[3]["node"] != cut_name}
            return set(mine) <= got

        wait_for(moved, timeout=90, interval=0.05, what="the cut node's objects served by the majority")
        moved_s = time.monotonic() - cut_at
        wait_for(lambda: all(any(e[0] > cut_at for e in load.errors()) for load in (load_own, load_fwd)),
                 timeout=30, interval=0.05, what="an error to each client of the cut node")
        time.sleep(LOAD_S / 2)
        healed_at = time.monotonic()
        proxy.heal()
        wait_for(lambda: load_own.oks_after(healed_at) >= 5 and load_fwd.oks_after(healed_at), timeout=90,
                 interval=0.05, what="the healed node serving again")
        back_s = min(x[0] for x in load_own.answers if x[2] == 200 and x[0] > healed_at) - healed_at
        time.sleep(LOAD_S / 2)
    finally:
        for load in (load_own, load_fwd, load_major):
            load.stop()
    # The cut node acknowledged nothing from the moment it had to stop writing (ttl - margin after its
    # last renewal, which was before the cut) until healed.
    late = [x for x in load_own.answers + load_fwd.answers if x[2] == 200 and cut_at + FENCE < x[0] < healed_at]
    assert not late, f"the cut node acknowledged writes after it had to stop: {late[:3]}"
    # Its own objects' writes in its hands at the cut were answered once it self-fenced (at most
    # ttl - margin after the cut; 2 s of slack for a loaded machine), not when their journal sends
    # gave up (5 s after the cut before ObjectLog.abandon).
    first = [min((x[0] for x in load_own.errors() if x[5] == k and x[0] > cut_at), default=healed_at) - cut_at
             for k in range(load_own.clients)]
    assert max(first) < FENCE + 2.0, f"the cut node's clients waited {max(first):.2f} s for an answer"
    text = log_path.read_text()
    assert text.count("registered again") > r, text[-3000:]  # it self-fenced, then came back
    return {"moved": moved_s, "first": (min(first), max(first)), "back": back_s}


def _servers_of(servers: NatsServers, client: str) -> set[str]:
    """The names of the servers with a connection named ``client`` (a server keeps one whose link was
    cut until its own pings fail, beside the client's new one elsewhere)."""
    out = set()
    for s in servers.servers:
        try:
            conns = servers.monitor(s, "connz?limit=1024").get("connections", [])
        except OSError:
            continue
        if any(c.get("name") == client for c in conns):
            out.add(s.name)
    return out


def test_a_node_cut_from_its_server_alone_reconnects_to_another_and_serves_on(nodes, own3, tmp_path):
    """Only the link between a node and the server it is connected to is blackholed: the node's
    pings fail, it reconnects to another server (through the links that still work) and its objects
    are served again; meanwhile every error its clients see is retryable, nothing acknowledged is
    lost. Finding the dead link takes its client 2-3 s (pings every 1 s, 2 unanswered), about its
    ``ttl - margin``: the node usually self-fences and drops its objects first. When its renewals
    then succeed again before its registration expired, it is the same live run: without releasing
    the leases of the objects it dropped, nobody could take them (the other node's claims refused,
    its own requests swallowed by its old connection's subscriptions, which the server keeps) and
    they stayed unavailable for minutes (1 run in 3 to 5 before the fix)."""
    proxy = LinkProxy([s.port for s in own3.servers]).start()
    try:
        (cut,) = nodes(1, urls=proxy.urls)
        (other,) = nodes(1)
        cut_name = cut.env["DURO_TEST_NODE"]
        mine = [f"m{i}" for i in range(3)]
        _owned_by(cut, mine)
        load = Load(4, [(cut, x) for x in mine] + [(other, x) for x in mine]).start()
        try:
            wait_for(lambda: load.oks_after(0) >= 30, timeout=60, what="the first adds")
            time.sleep(LOAD_S)
            (before,) = wait_for(lambda: _servers_of(own3, f"duro-{cut_name}"), timeout=30, what="the node's server")
            cut_at = time.monotonic()
            proxy.blackhole([[s.name for s in own3.servers].index(before)])
            wait_for(lambda: _servers_of(own3, f"duro-{cut_name}") - {before}, timeout=60, interval=0.1,
                     what="the node on another server")
            wait_for(lambda: sum(1 for x in load.answers if x[2] == 200 and x[0] > cut_at and x[1] == cut_name)
                     >= 20, timeout=60, interval=0.05, what="20 adds through the node after the cut")
            gap = _gap(load, cut_at)
            after = ", ".join(sorted(_servers_of(own3, f"duro-{cut_name}") - {before}))
        finally:
            load.stop()
        final = {n: get(other, n)["stored"] for n in mine}
        check_acks(load.acked(), final)
        errors = load.errors()
        bad = [e for e in errors if not _retryable(e)]
        assert not bad, f"a client got an error it could not retry: {bad[:5]}"
        owners = {x[3]["node"] for x in load.answers if x[2] == 200 and x[0] > cut_at + gap}
        fenced = "dropped object" in (tmp_path / f"{cut_name}.log").read_text()
        print(f"\nnode {cut_name} cut from its server {before} alone: on {after} now; writes stalled {gap:.2f} s at "
              f"most; {len(errors)} retryable errors ({sorted({e[3].get('error', '')[:40] for e in errors})[:3]}); "
              f"objects served since by {sorted(owners)}; {'it self-fenced meanwhile' if fenced else 'no self-fencing'}")
    finally:
        proxy.heal()
        proxy.stop()
