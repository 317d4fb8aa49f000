"""On-chip memories with partition layout and capacity accounting.

SBUF: 128 partitions x N bytes. A tile of shape [P, f...] occupies partitions [p0, p0+P) and the same
byte range [b0, b0+bytes) in each of them (NKI layout: free dims row-major within a partition).
PSUM: 8 banks x 2 KiB per partition; a tile takes whole banks (matmul results must fit one bank).

Tiles are freed when the kernel drops its last reference to them (Python scope = tile lifetime),
so a loop that allocates a tile per iteration keeps at most two generations live, as double
buffering would. Capacity is checked on every allocation; the error lists the largest live tiles.

Four neuronx-cc behaviours (trnlab.core.compiler) act here:
- multi-buffering (`multibuffer`, `multibuffer_depth`): a tile's address is chosen away from the
  addresses its allocation site gave its last depth-1 instances, so the load of loop iteration i+1
  does not wait (WAR) for the compute of iteration i on the same bytes. neuronx-cc rotates the
  address of every tile it allocates itself and never moves a tile placed at a fixed address
  (nki.compiler.AddressRotation, AUTO: "a memloc with a fixed address ... is opted OUT of rotation
  ... a memloc the backend allocates keeps rotation ON";
  https://awsdocs-neuron.readthedocs-hosted.com/en/latest/nki/api/generated/nki.compiler.AddressRotation.html);
  its ring allocation mode gives each tile a fresh address until the allocation wraps around and "in
  PSUM, rotates through the 8 banks" (nki.compiler.AllocationMode.RING). Rotation only picks among
  addresses that fit: it never causes a capacity error (plain first fit otherwise).
- SBUF spill (`sbuf_spill`): a compiler-allocated tile that does not fit evicts other
  compiler-allocated tiles to HBM (spill_victims): when the program's uses are known (`next_use`, from
  core.machine.Liveness's probe: neuronx-cc allocates statically with the whole program in view) those
  with the most instructions until their next use per byte of DMA the eviction adds (_victim_order),
  else the least recently used; a reload takes a free address (reload); core.machine.Machine issues
  the spill and reload DMAs (a spill only for tiles written since their last HBM copy).
- operand reuse (`operand_reuse`): with last-use liveness, an element-wise result may take the bytes of
  an operand its instruction reads for the last time (allocate(share=); chosen by core.machine.Liveness).
- stack allocation (`stack_allocator`, kernels decorated with nki.compiler.enable_stack_allocator): no
  rotation; an allocation site's previous instance is freed when the site runs again and the new tile
  takes its address (_stack_place), so the next iteration's load waits for this one's last read. In the
  run with tiles freed at their last use (core.machine.Liveness) a dead instance is free already and a
  live one (a Python list of one site's tiles) is kept (stack_frees_previous).
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from trnlab.errors import PsumCapacityError, SbufCapacityError
from trnlab.core.srcloc import short

_ALIGN = 4


@dataclass(slots=True)
class Allocation:
    uid: int
    name: str
    shape: tuple
    dtype_name: str
    p0: int
    p1: int
    b0: int          # byte offset within each partition
    nbytes: int      # bytes per partition
    loc: str
    live: bool = True
    superseded: bool = False   # reclaimed by a newer instance of the same allocation site (or after
                               # its last use, see core.machine.Liveness)
    seq: int = 0               # allocation number in program order (core.machine.Liveness)
    launch: int = 0            # the kernel launch whose machine allocated it (core.machine.Machine.launch)
    explicit: bool = False     # placed at a kernel-given address (never rotated, never spilled)
    last_use: int = -1         # instruction index of its latest use (kept only when spilling is on)
    spilled: bool = False      # evicted to HBM by the compiler's spill; reloaded before its next use
    has_data: bool = False     # written at least once (a reload of a never-written tile moves nothing)
    dirty: bool = False        # written since its HBM spill copy was made (evicting it needs a store)

    @property
    def b1(self) -> int:
        return self.b0 + self.nbytes

    def describe(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"'{self.name}' [{dims}] {self.dtype_name} ({self.nbytes} B/partition, allocated at {short(self.loc)})"


class OnChipMemory:
    """First-fit allocator over a partitions x bytes space, with per-partition accounting."""

    kind = "sbuf"

    def __init__(self, *, partitions: int, bytes_per_partition: int, target: str, rotate: int = 1,
                 spill: bool = False, stack: bool = False):
        """rotate: multi-buffering depth (1: plain first fit). spill: over-capacity compiler-allocated
        tiles evict others (spill_victims) instead of raising, unless the kernel places tiles itself.
        stack: stack allocation (CompilerModel.stack_allocator; no rotation): an allocation site's
        previous instance is dead when the site runs again and the new tile takes its address."""
        self.partitions = partitions
        self.capacity = bytes_per_partition
        self.target = target
        self.live: dict[int, Allocation] = {}
        self.peak_bytes = 0
        self.reclaimed = 0
        self._ids = itertools.count(1)
        self.rotate = max(1, int(rotate))
        self._recent: dict[str, deque] = {}      # site -> (b0, b1) of its last rotate-1 instances
        self._every: list = []                    # all spans of _recent, in no order (kept as they change)
        self.spill = spill
        self.spilled: dict[int, Allocation] = {}  # evicted tiles, by uid
        self.pending_spills: list[Allocation] = []   # evicted by an allocation; Machine issues their DMA
        self.explicit_seen = False
        self.stack = stack
        self._stack_at: dict[str, int] = {}      # stack: site -> byte offset its latest instance got
        # stack: free a site's previous instance when the site runs again (a loop body's tile is dead by
        # then). Machine turns it off when tiles are freed at their last use (core.machine.Liveness): a
        # dead instance is already free then, and a live one (a Python list of one site's tiles) stays
        self.stack_frees_previous = stack
        # alloc -> instructions from now until its next use, None when never used again; set by
        # Machine from a probe run (cost-aware furthest-next-use victims); None: least recently used
        self.next_use = None

    # --- accounting -------------------------------------------------------------------------
    def used_in(self, p0: int, p1: int) -> int:
        """Largest number of live bytes in any partition of [p0, p1)."""
        # All allocations span contiguous partition ranges; check each boundary partition. One pass
        # sums partition p0 and sees whether another tile starts inside (p0, p1): in the common case
        # (every tile starts at partition 0) p0 is the only boundary and that sum is the answer.
        live = self.live.values()
        at_p0, inner = 0, False
        for a in live:
            a0 = a.p0
            if a0 <= p0:
                if p0 < a.p1:
                    at_p0 += a.nbytes
            elif a0 < p1:
                inner = True
        if not inner:
            return at_p0
        points = {p0}
        for a in live:
            if p0 <= a.p0 < p1:
                points.add(a.p0)
        best = 0
        for p in points:
            total = 0
            for a in live:
                if a.p0 <= p < a.p1:
                    total += a.nbytes
            if total > best:
                best = total
        return best

    def largest(self, n: int = 5) -> list[Allocation]:
        return sorted(self.live.values(), key=lambda a: -a.nbytes * (a.p1 - a.p0))[:n]

    # --- allocation -------------------------------------------------------------------------
    def allocate(self, *, name: str, shape: tuple, dtype_name: str, p0: int, nparts: int,
                 nbytes: int, loc: str, api: str, address: int | None = None,
                 share: Allocation | None = None) -> Allocation:
        """share: a live tile read for the last time by the instruction that first writes this one
        (CompilerModel.operand_reuse): this tile takes its bytes, which it no longer counts."""
        p1 = p0 + nparts
        nbytes = max(_ALIGN, -(-nbytes // _ALIGN) * _ALIGN)
        if (share is not None and share.uid in self.live and not self.explicit_seen and address is None
                and (share.p0, share.p1, share.nbytes) == (p0, p1, nbytes)):
            del self.live[share.uid]          # still readable (not retired) until Liveness frees it
            alloc = Allocation(next(self._ids), name, tuple(shape), dtype_name, p0, p1, share.b0, nbytes, loc)
            self.live[alloc.uid] = alloc
            if self.rotate > 1:                # recent bytes of its site, as if placed (multi-buffering)
                self._remember(loc, share.b0, nbytes)
            return alloc
        if self.stack_frees_previous and address is None:
            self._reclaim_previous_instance(loc, p0, p1, lambda: True)
        used = self.used_in(p0, p1)
        if used + nbytes > self.capacity and self._reclaim_previous_instance(
                loc, p0, p1, lambda: self.used_in(p0, p1) + nbytes <= self.capacity):
            used = self.used_in(p0, p1)
        if used + nbytes > self.capacity and address is None and self._may_spill():
            self.pending_spills += self.spill_victims(p0, p1, nbytes, pinned=())
            used = self.used_in(p0, p1)
        if used + nbytes > self.capacity:
            self._overflow(name, shape, dtype_name, nbytes, used, loc, api)
        if address is not None:
            self._check_address(address, nbytes, name, loc, api)
            self.explicit_seen = True
        b0 = address if address is not None else self._place(loc, p0, p1, nbytes)
        alloc = Allocation(next(self._ids), name, tuple(shape), dtype_name, p0, p1, b0, nbytes, loc,
                           explicit=address is not None)
        self.live[alloc.uid] = alloc
        self.peak_bytes = max(self.peak_bytes, used + nbytes)
        return alloc

    # --- multi-buffering ------------------------------------------------------------------------
    def _place(self, loc: str, p0: int, p1: int, nbytes: int) -> int:
        """First fit away from the bytes recent tiles had, when that fits: first away from the last
        rotate-1 instances of every site (a ring: loads of the next iteration then wait for no recent
        reader), else away from as many of this site's own latest instances as fit, else first fit.
        Stack allocation: the address the site's previous instance had, when free, else first fit."""
        if self.stack:
            return self._stack_place(loc, p0, p1, nbytes)
        if self.rotate <= 1:
            return self._first_fit(p0, p1, nbytes)
        recent = self._recent.get(loc) or ()
        every = self._every
        b0 = self._first_fit(p0, p1, nbytes, avoid=every) if every else None
        if b0 is None or b0 + nbytes > self.capacity:
            own = list(recent)
            for k in range(len(own), 0, -1):        # newest kept longest
                b0 = self._first_fit(p0, p1, nbytes, avoid=own[-k:])
                if b0 + nbytes <= self.capacity:
                    break
            else:
                b0 = self._first_fit(p0, p1, nbytes)
        self._remember(loc, b0, nbytes)
        return b0

    def _stack_place(self, loc: str, p0: int, p1: int, nbytes: int) -> int:
        """A stack pops an iteration's tiles before the next iteration pushes the same sequence, so each
        site's tile lands where its previous instance was (when those bytes are free and fit)."""
        b0 = self._stack_at.get(loc)
        if b0 is None or b0 + nbytes > self.capacity or any(
                a.p0 < p1 and p0 < a.p1 and a.b0 < b0 + nbytes and b0 < a.b0 + a.nbytes for a in self.live.values()):
            b0 = self._first_fit(p0, p1, nbytes)
        self._stack_at[loc] = b0
        return b0

    def _remember(self, loc: str, b0: int, nbytes: int) -> None:
        """Keep [b0, b0 + nbytes) as one of the last rotate-1 spans of allocation site `loc`."""
        recent = self._recent.get(loc)
        if recent is None:
            recent = self._recent[loc] = deque(maxlen=self.rotate - 1)
        if len(recent) == recent.maxlen:          # the deque drops its oldest span
            self._every.remove(recent[0])
        span = (b0, b0 + nbytes)
        recent.append(span)
        self._every.append(span)

    # --- spill ----------------------------------------------------------------------------------
    def _may_spill(self) -> bool:
        """Spilling is the compiler's: a kernel that places tiles itself keeps the capacity error."""
        return self.spill and not self.explicit_seen

    def spill_victims(self, p0: int, p1: int, nbytes: int, pinned) -> list[Allocation]:
        """Evict live compiler-allocated tiles overlapping partitions [p0, p1), never those in `pinned`
        (uids), until nbytes more fit; returns the spilled ones, in _victim_order (with `next_use` known:
        tiles never used again first, freed: nothing to store or reload; then the furthest next use per
        byte of DMA; without it, least recently used first). Evicts nothing when even all of them would
        not make room (the caller then raises the capacity error)."""
        candidates = sorted((a for a in self.live.values()
                             if not a.explicit and a.uid not in pinned and a.p0 < p1 and p0 < a.p1),
                            key=self._victim_order())
        chosen = []
        for a in candidates:
            if self.used_in(p0, p1) + nbytes <= self.capacity:
                break
            del self.live[a.uid]
            chosen.append(a)
        if self.used_in(p0, p1) + nbytes > self.capacity:
            for a in chosen:                       # a failed allocation changes nothing
                self.live[a.uid] = a
            return []
        spilled = []
        for a in chosen:
            if self.next_use is not None and self.next_use(a) is None:
                self.retire(a)                     # dead: freed, as core.machine.Liveness would
                continue
            a.spilled = True
            self.spilled[a.uid] = a
            spilled.append(a)
        return spilled

    def _victim_order(self):
        """Sort key of spill candidates, without next-use information: least recently used first. With
        it: tiles never used again first (freed), then the most instructions until the next use per byte
        of DMA the eviction costs (Belady's furthest-next-use rule weighed by spill cost, as colouring
        allocators weigh spill candidates by the loads and stores they add: Chaitin,
        https://doi.org/10.1145/800230.806984; tiles differ in size, so the cost is bytes). A tile never
        written costs nothing, one whose HBM copy is current (reloaded, not written since) one reload of
        its bytes, any other a store and a reload: so a one-partition row goes before a 128-partition
        tile when only its partition is short, and a clean tile before a written one."""
        if self.next_use is None:
            return lambda a: (a.last_use, a.seq)

        def cheapest_per_use_distance(a):
            away = self.next_use(a)
            if away is None:
                return (0, 0.0, a.seq)
            if not a.has_data:
                return (1, -away, a.seq)
            dmas = 2 if a.dirty else 1
            return (2, -away / (dmas * a.nbytes * (a.p1 - a.p0)), a.seq)
        return cheapest_per_use_distance

    def reload(self, alloc: Allocation, pinned) -> list[Allocation]:
        """Bring a spilled tile back before its next use; returns the tiles evicted to make room
        (empty list and the tile still spilled when there is no room: the caller raises). The tile
        comes back where a new tile of its site would go (_place), not necessarily its old address, which
        other tiles may hold by now: the caller marks its storage relocated when `alloc.b0` changed."""
        victims = []
        if self.used_in(alloc.p0, alloc.p1) + alloc.nbytes > self.capacity:
            victims = self.spill_victims(alloc.p0, alloc.p1, alloc.nbytes, pinned)
            if self.used_in(alloc.p0, alloc.p1) + alloc.nbytes > self.capacity:
                return []
        del self.spilled[alloc.uid]
        alloc.spilled = False
        alloc.b0 = self._place(alloc.loc, alloc.p0, alloc.p1, alloc.nbytes)
        self.live[alloc.uid] = alloc
        return victims

    def _check_address(self, address: int, nbytes: int, name: str, loc: str, api: str) -> None:
        """A manually placed tile must lie inside the partition's bytes."""
        if address < 0 or address + nbytes > self.capacity:
            from trnlab.errors import NkiValidationError
            raise NkiValidationError(
                f"{api}: {self.kind.upper()} tensor '{name}' at address {address} needs bytes [{address}, "
                f"{address + nbytes}) per partition; limit {self.capacity} B per partition on {self.target}. "
                f"At {loc}")

    def _reclaim_previous_instance(self, loc: str, p0: int, p1: int, fits) -> bool:
        """A tile allocated inside a loop body is dead when its allocation site runs again (NKI
        scoping: a tile defined in a loop iteration is not used outside it), even though Python
        still holds the old instance until the name is rebound. Reclaim that one old instance;
        if the kernel uses it afterwards, Machine.issue reports the capacity overflow.
        Only when that makes the new tile fit (`fits()`): a failed allocation changes nothing."""
        stale = [a for a in self.live.values() if a.loc == loc and a.p0 < p1 and p0 < a.p1]
        if len(stale) != 1:
            return False
        old = stale[0]
        del self.live[old.uid]
        if not fits():
            self.live[old.uid] = old
            return False
        self.retire(old)
        return True

    def free(self, uid: int) -> None:
        alloc = self.live.pop(uid, None) or self.spilled.pop(uid, None)
        if alloc is not None:
            alloc.live = False

    def retire(self, alloc: Allocation) -> None:
        """Free a tile the compiler knows is dead although the kernel still holds it (superseded: a use
        after this is reported by Machine.issue as a capacity error)."""
        self.free(alloc.uid)
        alloc.live = False
        alloc.superseded = True
        self.reclaimed += 1

    def _first_fit(self, p0: int, p1: int, nbytes: int, avoid=()) -> int:
        spans = [(a.b0, a.b0 + a.nbytes) for a in self.live.values() if a.p0 < p1 and p0 < a.p1]
        if avoid:
            spans += avoid
        spans.sort()
        cursor = 0
        for b0, b1 in spans:
            if b0 - cursor >= nbytes:
                return cursor
            if b1 > cursor:
                cursor = b1
        if cursor + nbytes <= self.capacity:
            return cursor
        # Fragmented but within budget: a compiler would pack it; give it an address past the end
        # so hazards stay distinct. Capacity accounting above already passed.
        return cursor

    def _overflow(self, name, shape, dtype_name, nbytes, used, loc, api):
        tiles = "; ".join(a.describe() for a in self.largest())
        dims = ",".join(str(d) for d in shape)
        raise SbufCapacityError(
            f"{api}: SBUF capacity exceeded on {self.target}: tile '{name}' [{dims}] {dtype_name} needs "
            f"{nbytes} B per partition, live tiles already use {used} B; limit {self.capacity} B per "
            f"partition ({self.capacity // 1024} KiB), required {used + nbytes} B. Largest live tiles: "
            f"{tiles or 'none'}. At {loc}",
            required=used + nbytes, limit=self.capacity, largest=self.largest())


class PsumMemory(OnChipMemory):
    """PSUM: whole 2 KiB banks per tile; 8 banks per partition."""

    kind = "psum"

    def __init__(self, *, partitions: int, banks: int, bank_bytes: int, target: str, rotate: int = 1):
        super().__init__(partitions=partitions, bytes_per_partition=banks * bank_bytes, target=target,
                         rotate=rotate)
        self.banks = banks
        self.bank_bytes = bank_bytes

    def _banks(self, b0: int, nbytes: int) -> set:
        return set(range(b0 // self.bank_bytes, -(-(b0 + nbytes) // self.bank_bytes)))

    def covered(self) -> set:
        """Banks some live tile occupies (tiles placed at the same address= share their banks)."""
        return set().union(*(self._banks(a.b0, a.nbytes) for a in self.live.values()))

    def banks_used(self) -> int:
        bank, covered = self.bank_bytes, set()          # covered(), without a set per tile
        for a in self.live.values():
            b0 = a.b0
            if a.nbytes == bank and not b0 % bank:      # the common one-bank tile
                covered.add(b0 // bank)
            else:
                covered.update(range(b0 // bank, -(-(b0 + a.nbytes) // bank)))
        return len(covered)

    def _new_banks(self, banks: int, address: int | None) -> int:
        if address is None:
            return banks
        return len(self._banks(address, banks * self.bank_bytes) - self.covered())

    def allocate(self, *, name, shape, dtype_name, p0, nparts, nbytes, loc, api, address=None, share=None):
        banks = max(1, -(-nbytes // self.bank_bytes))
        used = self.banks_used()
        new = banks if address is None else self._new_banks(banks, address)
        if used + new > self.banks and self._reclaim_previous_instance(
                loc, 0, self.partitions, lambda: self.banks_used() + self._new_banks(banks, address) <= self.banks):
            used, new = self.banks_used(), self._new_banks(banks, address)
        if used + new > self.banks:
            tiles = "; ".join(a.describe() for a in self.largest())
            dims = ",".join(str(d) for d in shape)
            raise PsumCapacityError(
                f"{api}: PSUM capacity exceeded on {self.target}: tile '{name}' [{dims}] {dtype_name} "
                f"needs {banks} bank(s) of {self.bank_bytes} B, {used} of {self.banks} banks are live; "
                f"limit {self.banks} banks, required {used + new}. Largest live tiles: {tiles or 'none'}. "
                f"At {loc}",
                required=used + new, limit=self.banks, largest=self.largest())
        if address is not None and address % self.bank_bytes:
            from trnlab.errors import NkiValidationError
            raise NkiValidationError(
                f"{api}: PSUM tensor '{name}' address {address} must start on a {self.bank_bytes} B bank "
                f"boundary. At {loc}")
        if address is not None:
            self._check_address(address, banks * self.bank_bytes, name, loc, api)
        b0 = address if address is not None else self._place(loc, 0, self.partitions, banks * self.bank_bytes)
        alloc = Allocation(next(self._ids), name, tuple(shape), dtype_name, 0, self.partitions, b0,
                           banks * self.bank_bytes, loc, explicit=address is not None)
        self.live[alloc.uid] = alloc
        self.peak_bytes = max(self.peak_bytes, (used + new) * self.bank_bytes)
        return alloc
