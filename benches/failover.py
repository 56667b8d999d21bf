"""Failover driver of benches/failover.sh (see there for what it measures)."""

import argparse
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
import time

import shoal

PUB = {1: 17570, 2: 17580, 3: 17590}
RAFT = {1: 17571, 2: 17581, 3: 17591}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--faults", default="kill,pause")
    ap.add_argument("serve_args", nargs="*")
    a = ap.parse_args()
    faults = [f for f in a.faults.split(",") if f]
    work = tempfile.mkdtemp(prefix="shoal-failover-")
    peers = ",".join(f"{i}=127.0.0.1:{RAFT[i]}" for i in PUB)
    procs: dict = {}

    def start(i: int) -> None:
        out = open(os.path.join(work, f"n{i}.out"), "w")
        log = open(os.path.join(work, f"n{i}.log"), "a")
        procs[i] = subprocess.Popen(
            [a.bin, "serve", "--node-id", str(i), "--listen", f"127.0.0.1:{PUB[i]}",
             "--raft-listen", f"127.0.0.1:{RAFT[i]}", "--peers", peers,
             "--data-dir", os.path.join(work, f"n{i}"), *a.serve_args],
            stdout=out, stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            with open(os.path.join(work, f"n{i}.out")) as f:
                if any(line.startswith("listening on") for line in f):
                    return
            time.sleep(0.05)
        raise SystemExit(f"node {i} did not start (see {work}/n{i}.log)")

    def stop_all() -> None:
        for p in procs.values():
            try:
                p.send_signal(signal.SIGCONT)
                p.kill()
            except ProcessLookupError:
                pass
        for p in procs.values():
            p.wait()

    clients = {i: shoal.Client(f"127.0.0.1:{PUB[i]}", timeout=10, retry=0) for i in PUB}
    csv = open(os.path.join(a.out, "failover.csv"), "w")
    csv.write("fault,round,victim,stall_s\n")
    stalls: dict = {f: [] for f in faults}
    try:
        for i in PUB:
            start(i)
        until(lambda: clients[1].create_collection("f", 8, "L2", shard_count=1, replication_factor=3), 60)
        until(lambda: clients[1].create_collection("g", 8, "L2", shard_count=3, replication_factor=3), 60)
        ids = itertools.count(1)

        def write(c: "shoal.Client") -> None:
            pid = next(ids)
            c.upsert("f", [(pid, [float(pid % 7)] * 8)], timeout=10.0)

        for i in PUB:
            until(lambda: write(clients[i]), 60)
        for rnd in range(1, a.rounds + 1):
            for fault in faults:
                # Leaderships settle (the balancer runs every 10 s by default).
                time.sleep(15)
                victim = leader_of_f(clients[1])
                if victim is None:
                    print(f"{fault} round {rnd}: no leader of f, skipped", flush=True)
                    continue
                wnode = next(i for i in PUB if i != victim)
                stall, victim = measure(clients, wnode, write, procs, fault)
                if fault == "kill":
                    procs[victim].wait()
                    start(victim)
                # The victim serves again and has caught up.
                until(lambda: clients[victim].count("f", consistency="strong", timeout=3), 120)
                line = "-" if stall is None else f"{stall:.2f}"
                print(f"{fault} round {rnd}: leader node {victim} -> no write for {line} s",
                      flush=True)
                csv.write(f"{fault},{rnd},{victim},{line}\n")
                if stall is not None:
                    stalls[fault].append(stall)
        for fault, s in stalls.items():
            if s:
                print(f"{fault}: {len(s)} rounds, stall median {statistics.median(s):.2f} s, "
                      f"worst {max(s):.2f} s, best {min(s):.2f} s", flush=True)
    finally:
        stop_all()
        csv.close()
        subprocess.run(["rm", "-rf", work])


def leader_of_f(c: "shoal.Client"):
    st = until(lambda: c.cluster_status(timeout=3), 30)
    return next(x for x in st.collections if x.name == "f").shards[0].leader


def measure(clients: dict, wnode: int, write, procs: dict, fault: str):
    """Writes through `wnode`, applies the fault to the leader of `f` (read again just
    before, as the leader balancer may have moved it meanwhile; from then on the
    writes go through a node other than the victim), and returns (the stall or None if no write succeeded within 30 s of the
    fault, the victim).

    A new one-point write starts every 0.1 s, each with a 10 s deadline and no
    client retries (the node retries inside it, as for any client): a write sent
    while the shard has no leader waits in the node until one can commit it, so the
    first acknowledgement of a write sent after the fault marks when the shard took
    writes again, to within 0.1 s."""
    through = [wnode]
    t_fault = [None]
    first_ok = [None]
    lock = threading.Lock()

    def one() -> None:
        sent = time.monotonic()
        try:
            write(clients[through[0]])
        except shoal.ShoalError:
            return
        tf = t_fault[0]
        if tf is not None and sent >= tf:
            with lock:
                done = time.monotonic()
                if first_ok[0] is None or done < first_ok[0]:
                    first_ok[0] = done

    pool = ThreadPoolExecutor(max_workers=128)
    futures = []

    def dispatch(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if t_fault[0] is not None and first_ok[0] is not None:
                return
            futures.append(pool.submit(one))
            time.sleep(0.1)

    dispatch(1.0)
    for _ in range(50):
        victim = leader_of_f(clients[wnode])
        if victim is not None:
            break
        time.sleep(0.2)
    else:
        raise SystemExit("f has no leader")
    # Writes after the fault go through another node than the victim.
    through[0] = next(i for i in clients if i != victim)
    t_fault[0] = time.monotonic()
    procs[victim].send_signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    dispatch(30.0)
    if fault == "pause":
        left = 10 - (time.monotonic() - t_fault[0])
        if left > 0:
            time.sleep(left)
        procs[victim].send_signal(signal.SIGCONT)
    for f in futures:
        f.result()
    pool.shutdown()
    return (None if first_ok[0] is None else first_ok[0] - t_fault[0]), victim


def until(f, seconds: float):
    deadline = time.time() + seconds
    while True:
        try:
            return f()
        except shoal.AlreadyExists:
            return None
        except shoal.ShoalError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
