"""LNC / SPMD launches whose programs synchronise (nisa.core_barrier, nisa.sendrecv): one Python thread per
program, as AWS's simulator runs kernel[2].

Each program is a physical NeuronCore, so each gets its own Machine (its own SBUF, PSUM, engines, PRNG and
timing scheduler); HBM tensors (kernel inputs, shared_hbm allocations) are the same objects in all of them.
The launch's latency is the slowest core's; a core waiting at a barrier or for a sendrecv partner
starts its later work at the partner's simulated arrival time (Scheduler.wait_until). Waits are deadlock-safe
by state, never by the clock: a wait fails at once when its partner has finished or failed, or when every
live program is blocked in a wait nobody can satisfy; a partner that is merely slow (a busy host, a long
kernel) is waited for however long it takes.
"""
from __future__ import annotations

import threading
import types

import numpy as np

from trnlab.core.machine import running
from trnlab.errors import SimulationError

SYNC_APIS = frozenset({"core_barrier", "sendrecv"})


class SyncError(SimulationError):
    """A program of an LNC launch waited for a partner that never arrives."""


class _PartnerFailed(SyncError):
    """Raised in a waiting program because its partner raised first (the partner's error is re-raised)."""


def block_until(group, n: int, rank: int, what: str, ready, partners, *, failed, left, deadlock) -> None:
    """Block `rank` (holding group.cond) until ready(); raise failed(peer) when a partner raised, left(peer)
    when a partner finished without reaching this wait, deadlock(sorted blocked items) when every running
    one of the n threads waits for something not ready. group has cond, blocked, done and failed (shared by
    LNC launches and the ranks of trnlab.core.ranks)."""
    group.blocked[rank] = (what, ready)
    group.cond.notify_all()
    try:
        while not ready():
            gone = sorted(p for p in partners if p in group.done | group.failed)
            stopped = [p for p in gone if p in group.failed]
            if stopped:
                raise failed(stopped[0])
            if gone:
                raise left(gone[0])
            if _deadlocked(group, n):
                raise deadlock(sorted(group.blocked.items()))
            # every state change notifies; the timeout only re-checks the state, it never fails a wait
            group.cond.wait(1.0)
    finally:
        group.blocked.pop(rank, None)


def _deadlocked(group, n: int) -> bool:
    """Every running thread waits for something that is not ready (a waiter just released but not yet
    woken up is not stuck)."""
    alive = set(range(n)) - group.done - group.failed
    if not alive or not alive <= set(group.blocked):
        return False
    return not any(ready() for _, ready in group.blocked.values())


class LncGroup:
    """Shared state of the programs of one launch: a condition variable, barrier generations, mailboxes."""

    def __init__(self, n_programs: int):
        self.n = n_programs
        self.cond = threading.Condition()
        self.lock = threading.RLock()          # allocations shared by all programs (shared_hbm)
        self.shared: dict = {}
        self.done: set[int] = set()
        self.failed: set[int] = set()
        self.blocked: dict[int, tuple] = {}    # program -> (what it waits for, its ready predicate)
        self.generation: dict = {}             # barrier key -> completed rounds
        self.arrived: dict = {}                # barrier key -> programs waiting in the current round
        self.mail: dict = {}                   # (pipe, sender, receiver, seq) -> message
        self.arrival: dict = {}                # (barrier key, round) -> {program: simulated arrival time}
        self.release: dict = {}                # (barrier key, round) -> simulated time the round completes
        self.seq: dict = {}                    # (pipe, sender, receiver) -> next sequence number

    # --- waiting ---------------------------------------------------------------------------------------
    def wait(self, rank: int, what: str, ready, partners, loc: str) -> None:
        """Block (holding self.cond) until ready(); fail clearly when it can never become true."""
        def deadlock(blocked):
            waits = "; ".join(f"program {p} in {w}" for p, (w, _) in blocked)
            return SyncError(f"{what}: deadlock, every running program is waiting ({waits}). At {loc}")
        block_until(self, self.n, rank, what, ready, partners,
                    failed=lambda p: _PartnerFailed(f"{what}: program {rank} stopped because program {p} failed. "
                                                    f"At {loc}"),
                    left=lambda p: SyncError(f"{what}: program {rank} waits for program {p}, which finished "
                                             f"without reaching it; every program of the launch must make the "
                                             f"same calls. At {loc}"),
                    deadlock=deadlock)

    def barrier(self, key, rank: int, parties: tuple, what: str, loc: str) -> None:
        """Wait for every party; in the timing model each leaves at the latest party's arrival time."""
        with self.cond:
            gen = self.generation.get(key, 0)
            waiting = self.arrived.setdefault(key, set())
            waiting.add(rank)
            times = self.arrival.setdefault((key, gen), {})
            times[rank] = _now()
            if set(parties) <= waiting:
                self.release[(key, gen)] = max(times.values())
                del self.arrival[(key, gen)]
                self.arrived[key] = set()
                self.generation[key] = gen + 1
                self.cond.notify_all()
            else:
                try:
                    self.wait(rank, what, lambda: self.generation.get(key, 0) != gen,
                              [p for p in parties if p != rank], loc)
                except SyncError:
                    waiting.discard(rank)
                    times.pop(rank, None)
                    raise
            _wait_until(self.release[(key, gen)])

    # --- mailboxes (sendrecv) --------------------------------------------------------------------------
    def post(self, pipe, sender: int, receiver: int, message) -> tuple:
        with self.cond:
            channel = (pipe, sender, receiver)
            seq = self.seq.get(channel, 0)
            self.seq[channel] = seq + 1
            key = channel + (seq,)
            self.mail[key] = {"message": message, "consumed": False, "sent_at": _now()}
            self.cond.notify_all()
            return key

    def receive(self, pipe, sender: int, receiver: int, seq: int, what: str, loc: str):
        key = (pipe, sender, receiver, seq)
        with self.cond:
            self.wait(receiver, what, lambda: key in self.mail, [sender], loc)
            _wait_until(self.mail[key]["sent_at"])       # the receiving DMA starts once the data is there
            return key, self.mail[key]["message"]

    def consumed(self, key) -> None:
        with self.cond:
            self.mail[key]["consumed"] = True
            self.mail[key]["done_at"] = _now()
            self.cond.notify_all()

    def wait_consumed(self, key, rank: int, what: str, loc: str) -> None:
        with self.cond:
            self.wait(rank, what, lambda: self.mail[key]["consumed"], [key[2]], loc)
            _wait_until(self.mail[key]["done_at"])       # the sender returns once the transfer is done
            del self.mail[key]

    def finish(self, rank: int, ok: bool) -> None:
        with self.cond:
            (self.done if ok else self.failed).add(rank)
            self.cond.notify_all()


def _scheduler():
    """The timing scheduler of the calling program's Machine (None when timing is off)."""
    from trnlab.core.machine import current, has_current
    return getattr(current(), "scheduler", None) if has_current() else None


def _now() -> float:
    """The calling core's simulated time: when all the work it issued so far has finished."""
    sched = _scheduler()
    return sched.now() if sched is not None else 0.0


def _wait_until(t: float) -> None:
    """The calling core's later instructions start no earlier than simulated time t (deterministic:
    it depends on simulated times only, never on how the threads interleaved)."""
    sched = _scheduler()
    if sched is not None:
        sched.wait_until(t)


def group_of(m) -> LncGroup | None:
    return getattr(m, "lnc_group", None)


def rank_of(m) -> int:
    return int(np.ravel_multi_index(m.program_id, m.num_programs))


# --- does a kernel synchronise? ----------------------------------------------------------------------------
def uses_sync(fn, _seen=None, _depth=0) -> bool:
    """True when the kernel (or a function it names, a few levels deep) refers to core_barrier / sendrecv."""
    fn = getattr(fn, "fn", fn)                             # a Kernel object
    fn = getattr(fn, "func", fn)                           # a functools.partial
    code = getattr(fn, "__code__", None)
    if code is None or _depth > 4:
        return False
    seen = _seen if _seen is not None else set()
    if code in seen:
        return False
    seen.add(code)
    names = _names(code)
    if names & SYNC_APIS:
        return True
    glb = getattr(fn, "__globals__", {})
    called = [glb[n] for n in names if n in glb]
    called += [c.cell_contents for c in (getattr(fn, "__closure__", None) or ()) if _filled(c)]
    return any(uses_sync(f, seen, _depth + 1) for f in called
               if isinstance(f, types.FunctionType)
               or (not isinstance(f, types.ModuleType) and hasattr(f, "fn")))  # nki.tensor raises on probes


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _names(code) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


# --- running the programs ------------------------------------------------------------------------------------
def run_programs(fn, args: tuple, kwargs: dict, grid: tuple, machines: list):
    """Run program i of the grid on machines[i], each in its own thread; returns the last program's result."""
    group = LncGroup(len(machines))

    def join(i: int, m) -> None:
        m.lnc_group = group
        m.num_programs = tuple(grid)
        m.program_id = tuple(int(k) for k in np.unravel_index(i, grid))

    calls = [(args, kwargs)] * len(machines)
    return run_in_threads(fn, calls, machines, group, join, "trnlab-program", _PartnerFailed)[-1]


def run_in_threads(fn, calls: list, machines: list, group, join, name: str, peer_failed: type) -> list:
    """fn(*args, **kwargs) of calls[i] on machines[i] (after join(i, machine)), each in its own thread
    running that machine; group.finish(i, ok) when it ends. Returns the results in order; the first
    error that is not a peer's failure (peer_failed: raised in a thread because another one failed) is
    re-raised in the caller's thread."""
    results: list = [None] * len(machines)
    errors: list = []

    def body(i: int, m, args, kwargs) -> None:
        join(i, m)
        try:
            with running(m):
                results[i] = fn(*args, **kwargs)
        except BaseException as exc:      # re-raised in the caller's thread below
            errors.append(exc)
            group.finish(i, ok=False)
            return
        group.finish(i, ok=True)

    threads = [threading.Thread(target=body, args=(i, m, *calls[i]), name=f"{name}-{i}", daemon=True)
               for i, m in enumerate(machines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise next((e for e in errors if not isinstance(e, peer_failed)), errors[0])
    return results


def slowest(machines: list):
    """The machine whose timing scheduler ends last (the launch's latency), else the first."""
    timed = [m for m in machines if m.scheduler is not None]
    return max(timed, key=lambda m: m.scheduler.end) if timed else machines[0]
