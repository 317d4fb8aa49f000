"""Memory hazards (RAW / WAR / WAW) on exact physical regions, in near-constant time per access.

A region is a box (p0, p1, b0, b1): partitions x bytes within a partition for SBUF/PSUM, and
rows x bytes within a row for an HBM tensor (row = the storage's innermost row pitch), so the tiles
of a row-major matrix are disjoint boxes rather than overlapping address ranges.

Each memory space is cut into buckets (a grid over p and b). An access is stored, clipped, in every
bucket it touches. When a write covers an older entry of a bucket, that entry can never decide a
later wait (the write itself waited for it), so it is dropped: live entries stay few per bucket.
"""
from __future__ import annotations

from trnlab.core.tensor import HBM, PSUM, SBUF, split_spans

# (partition bucket, byte bucket) per memory kind; HBM: (rows, bytes within a row)
_BUCKETS = {SBUF: (128, 1024), PSUM: (128, 2048), HBM: (128, 8192)}
_WIDE = 256          # an access touching more buckets than this is kept in one unclipped list
_BOXES_MAX = 1 << 16


def region(t) -> tuple[int, int, int, int]:
    """The box a tensor view touches (see module doc)."""
    st = t.storage
    if st.kind != HBM:
        return t.region()
    base = st.array
    pitch = base.strides[-2] if base.ndim >= 2 else 0
    a = t.array
    if pitch <= 0:
        _, _, b0, b1 = t.region()
        return 0, 1, b0, b1
    row_lo, row_hi, col_lo, col_hi = split_spans(a.shape, a.strides, pitch)
    row, col = divmod(t.byte_offset(), pitch)
    c0, c1 = col + col_lo, col + col_hi + a.itemsize
    r0, r1 = row + row_lo // pitch, row + row_hi // pitch + 1
    if c0 < 0 or c1 > pitch:              # the view wraps across rows: whole rows, conservatively
        first = t.byte_offset() + row_lo + col_lo
        last = t.byte_offset() + row_hi + col_hi
        return first // pitch, last // pitch + 1, 0, pitch
    return r0, r1, c0, c1


class Space:
    """One memory space: bucketed lists of (p0, p1, b0, b1, avail, unit, index) for reads and writes."""

    __slots__ = ("pb", "bb", "writes", "reads", "wide_writes", "wide_reads", "wide", "boxes")

    def __init__(self, pb: int, bb: int):
        self.pb, self.bb = pb, bb
        self.writes: dict = {}
        self.reads: dict = {}
        self.wide_writes: list = []
        self.wide_reads: list = []
        self.wide = False        # ever held a wide entry: accesses then take the general path
        self.boxes: dict = {}    # box -> (tracker, read access, write access) (HazardTracker._access)

    def keys(self, r):
        p0, p1, b0, b1 = r
        pb, bb = self.pb, self.bb
        kp0, kp1 = p0 // pb, (p1 - 1) // pb
        kb0, kb1 = b0 // bb, (b1 - 1) // bb
        if kp0 == kp1 and kb0 == kb1:            # the common case: one bucket
            return ((kp0, kb0),)
        if (kp1 - kp0 + 1) * (kb1 - kb0 + 1) > _WIDE:
            return None
        return [(kp, kb) for kp in range(kp0, kp1 + 1) for kb in range(kb0, kb1 + 1)]


def _latest(entries, p0, p1, b0, b1, skip, best):
    """Max (avail, index) over entries overlapping the box, ignoring entries of unit `skip`."""
    t, who = best
    for e in entries:
        if e[4] > t and e[0] < p1 and p0 < e[1] and e[2] < b1 and b0 < e[3] and (skip is None or e[5] is not skip):
            t, who = e[4], e[6]
    return t, who


def _prune_add(entries, entry) -> None:
    """Append an access; drop the older entries of the same list it covers that end no later: a
    covered write can no longer decide a wait, a covered read no longer decides a WAR wait."""
    _cover_prune(entries, entry)
    entries.append(entry)


class HazardTracker:
    """Last readers and writers of every memory region, per space (SBUF, PSUM, each HBM tensor).

    The scheduler asks, per instruction: accesses() once, ready() for the operands that gate it,
    then record_all() once it knows when the results are available. These run for every instruction,
    so the common case (a box inside one bucket) is written out inline."""

    def __init__(self):
        self.spaces: dict = {}

    def space(self, t) -> Space:
        st = t.storage
        key = st.kind if st.kind != HBM else ("hbm", st.uid)
        sp = self.spaces.get(key)
        if sp is None:
            pb, bb = _BUCKETS[st.kind]
            sp = self.spaces[key] = Space(pb, bb)
        return sp

    def accesses(self, instr) -> list:
        """The access of every operand: reads first, then writes. An access is (space, p0, p1, b0, b1,
        bucket keys, is_write, write list, read list, buckets): the box, the keys of the buckets it touches
        (None: too many, kept unclipped), for a box inside one bucket that bucket's entry lists, and for a
        box over several buckets (lists, clipped box) per bucket (a bucket's lists, once made, are only
        changed in place). A view's pair (read, write) of these is kept on the view for this tracker (kernels
        use the same tile views many times), and made again while its storage is `relocated` (a spill
        reload moved the tile)."""
        out = []
        append = out.append
        for t in instr.reads():
            if t is not None:
                acc = t._hz
                if acc is None or acc[0] is not self or t.storage.relocated:
                    acc = t._hz = self._access(t)
                append(acc[1])
        for t in instr.writes():
            if t is not None:
                acc = t._hz
                if acc is None or acc[0] is not self or t.storage.relocated:
                    acc = t._hz = self._access(t)
                append(acc[2])
        return out

    def _access(self, t) -> tuple:
        """(self, read access, write access) of a view: the same for every view of the same box (the
        next instance of a loop's tile), so kept per box."""
        if t.storage.kind == HBM:
            sp, r = self.space(t), region(t)
        else:
            sp = self.spaces.get(t.storage.kind) or self.space(t)
            r = t.region()
        pair = sp.boxes.get(r)
        if pair is None:
            if len(sp.boxes) >= _BOXES_MAX:
                sp.boxes.clear()
            pair = sp.boxes[r] = self._box_access(sp, r)
        return pair

    def _box_access(self, sp: Space, r) -> tuple:
        keys = sp.keys(r)
        return self, _make_access(sp, r, keys, False), _make_access(sp, r, keys, True)

    def ready(self, accesses, skip, best) -> tuple[float, int]:
        """Latest (avail, producer index) the accesses must wait for, starting from `best`: RAW for a
        read; WAW and WAR for a write. For WAR/WAW, entries of unit `skip` are ignored (an in-order
        engine orders its own accesses); RAW always waits (the result must have left the pipeline)."""
        t, who = best
        for sp, p0, p1, b0, b1, keys, is_write, writes, reads, buckets in accesses:
            if writes is None or sp.wide:
                if keys is None:
                    t, who = self.wait(sp, (p0, p1, b0, b1), None, is_write, skip, (t, who))
                elif buckets is not None:
                    t, who = _wait_lists(sp, p0, p1, b0, b1, buckets, is_write, skip if is_write else None, (t, who))
                else:
                    t, who = _wait_buckets(sp, (p0, p1, b0, b1), keys, is_write, skip if is_write else None, (t, who))
                continue
            # one bucket, no wide entries: _wait_buckets inline (the common case)
            if is_write:
                for e in writes:
                    if e[4] > t and e[0] < p1 and p0 < e[1] and e[2] < b1 and b0 < e[3] and (
                            skip is None or e[5] is not skip):
                        t, who = e[4], e[6]
                for e in reads:
                    if e[4] > t and e[0] < p1 and p0 < e[1] and e[2] < b1 and b0 < e[3] and (
                            skip is None or e[5] is not skip):
                        t, who = e[4], e[6]
            else:
                for e in writes:
                    if e[4] > t and e[0] < p1 and p0 < e[1] and e[2] < b1 and b0 < e[3]:
                        t, who = e[4], e[6]
        return t, who

    def wait(self, sp: Space, r, keys, is_write: bool, skip, best):
        """ready() for one access."""
        p0, p1, b0, b1 = r
        skip = skip if is_write else None
        if keys is None:
            lists = [sp.wide_writes, *sp.writes.values()]
            if is_write:
                lists += [sp.wide_reads, *sp.reads.values()]
            for entries in lists:
                if entries:
                    best = _latest(entries, p0, p1, b0, b1, skip, best)
            return best
        return _wait_buckets(sp, r, keys, is_write, skip, best)

    def record(self, sp: Space, r, keys, is_write: bool, avail: float, unit, index: int) -> None:
        """record_all() for one access."""
        self.record_all((_make_access(sp, r, keys, is_write),), avail, unit, index)

    def record_all(self, accesses, avail: float, unit, index: int) -> None:
        """The accesses of instruction `index` (on `unit`) are done; their results are available at `avail`."""
        for sp, p0, p1, b0, b1, keys, is_write, writes, reads, buckets in accesses:
            if writes is None:
                if keys is None:
                    _record_wide(sp, (p0, p1, b0, b1), is_write, avail, unit, index)
                else:
                    _record_lists(buckets, is_write, avail, unit, index)
                continue
            # the box lies inside its only bucket: no clipping (inline)
            e = (p0, p1, b0, b1, avail, unit, index)
            lst = writes if is_write else reads
            if not lst:
                lst.append(e)
            elif len(lst) == 1:          # _cover_prune, inline: the entry it covers is replaced in place
                x = lst[0]
                if b0 <= x[2] and x[3] <= b1 and x[4] <= avail and p0 <= x[0] and x[1] <= p1:
                    lst[0] = e
                else:
                    lst.append(e)
            else:
                i = 0                    # (a counter, not enumerate(): a bucket holds few entries)
                for x in lst:            # (bytes first: the other tiles of a bucket differ there)
                    if b0 <= x[2] and x[3] <= b1 and x[4] <= avail and p0 <= x[0] and x[1] <= p1:
                        _drop_covered(lst, i, p0, p1, b0, b1, avail)
                        break
                    i += 1
                lst.append(e)
            if is_write and reads:
                if len(reads) == 1:      # _cover_prune's common case, inline
                    x = reads[0]
                    if b0 <= x[2] and x[3] <= b1 and x[4] <= avail and p0 <= x[0] and x[1] <= p1:
                        reads.clear()
                else:
                    _cover_prune(reads, e)


def _lists(sp: Space, k) -> tuple[list, list]:
    """The (writes, reads) entry lists of bucket k, made if new (a bucket's lists are only ever changed
    in place, so accesses may keep them)."""
    writes = sp.writes.get(k)
    if writes is None:
        writes = sp.writes[k] = []
    reads = sp.reads.get(k)
    if reads is None:
        reads = sp.reads[k] = []
    return writes, reads


def _make_access(sp: Space, r, keys, is_write: bool) -> tuple:
    """An access (HazardTracker.accesses) of box r over the bucket keys. A box over several buckets
    carries, per bucket, its lists and the box clipped to it."""
    p0, p1, b0, b1 = r
    writes = reads = buckets = None
    if keys is not None and len(keys) == 1:
        writes, reads = _lists(sp, keys[0])
    elif keys is not None:
        buckets = _buckets(sp, r, keys)
    return sp, p0, p1, b0, b1, keys, is_write, writes, reads, buckets


def _buckets(sp: Space, r, keys) -> tuple:
    """(writes, reads, the box clipped to the bucket) of each bucket a box touches."""
    p0, p1, b0, b1 = r
    pb, bb = sp.pb, sp.bb
    out = []
    for k in keys:
        kp, kb = k
        writes, reads = _lists(sp, k)
        out.append((writes, reads, max(p0, kp * pb), min(p1, kp * pb + pb), max(b0, kb * bb), min(b1, kb * bb + bb)))
    return tuple(out)


def _record_lists(buckets, is_write: bool, avail: float, unit, index: int) -> None:
    """record_all() for a box over several buckets (_make_access): clipped to each."""
    for writes, reads, q0, q1, c0, c1 in buckets:
        e = (q0, q1, c0, c1, avail, unit, index)
        lst = writes if is_write else reads
        # a write drops the older writes it covers; a read that covers an older read and ends no
        # earlier makes it redundant for later WAR waits
        if lst:
            _cover_prune(lst, e)
        lst.append(e)
        if is_write and reads:
            _cover_prune(reads, e)


def _wait_lists(sp: Space, p0, p1, b0, b1, buckets, is_write: bool, skip, best):
    """_wait_buckets over an access's own bucket lists (_make_access), in the same order."""
    if sp.wide_writes:
        best = _latest(sp.wide_writes, p0, p1, b0, b1, skip, best)
    if is_write and sp.wide_reads:
        best = _latest(sp.wide_reads, p0, p1, b0, b1, skip, best)
    t, who = best
    for writes, reads, _, _, _, _ in buckets:
        for entries in (writes, reads if is_write else None):
            if entries:
                for e in entries:       # _latest, inline
                    if e[4] > t and e[0] < p1 and p0 < e[1] and e[2] < b1 and b0 < e[3] and (
                            skip is None or e[5] is not skip):
                        t, who = e[4], e[6]
    return t, who


def _wait_buckets(sp: Space, r, keys, is_write: bool, skip, best):
    """wait() for a bucketed access (skip already None for a read). The order of the scans decides
    ties (first found wins): wide lists, then bucket by bucket (writes, then reads)."""
    p0, p1, b0, b1 = r
    if sp.wide_writes:
        best = _latest(sp.wide_writes, p0, p1, b0, b1, skip, best)
    if is_write and sp.wide_reads:
        best = _latest(sp.wide_reads, p0, p1, b0, b1, skip, best)
    t, who = best
    writes, reads = sp.writes, sp.reads
    for k in keys:
        for entries in (writes.get(k), reads.get(k) if is_write else None):
            if entries:
                for e in entries:       # _latest, inline
                    if e[4] > t and e[0] < p1 and p0 < e[1] and e[2] < b1 and b0 < e[3] and (
                            skip is None or e[5] is not skip):
                        t, who = e[4], e[6]
    return t, who


def _record_wide(sp: Space, r, is_write: bool, avail: float, unit, index: int) -> None:
    """An access touching too many buckets: one unclipped entry; a write prunes what it covers everywhere."""
    entry = (*r, avail, unit, index)
    sp.wide = True
    if is_write:
        _prune_add(sp.wide_writes, entry)
        _cover_prune(sp.wide_reads, entry)
        for lst in sp.writes.values():
            _cover_prune(lst, entry)
        for lst in sp.reads.values():
            _cover_prune(lst, entry)
    else:
        _prune_add(sp.wide_reads, entry)


def _cover_prune(entries, e) -> None:
    if not entries:
        return
    p0, p1, b0, b1, t = e[0], e[1], e[2], e[3], e[4]
    if len(entries) == 1:                  # the common case, without building a new list
        x = entries[0]
        if b0 <= x[2] and x[3] <= b1 and x[4] <= t and p0 <= x[0] and x[1] <= p1:
            entries.clear()
        return
    for i, x in enumerate(entries):        # rebuilt only when an entry is covered
        if b0 <= x[2] and x[3] <= b1 and x[4] <= t and p0 <= x[0] and x[1] <= p1:
            _drop_covered(entries, i, p0, p1, b0, b1, t)
            return


def _drop_covered(entries, i, p0, p1, b0, b1, t) -> None:
    """Remove, in place and in order, the entries the box covers that end no later than t; entries[i]
    is the first of them. (Deleted where they stand: a bucket holds few entries and most calls drop one.)"""
    del entries[i]
    n = len(entries)
    while i < n:
        x = entries[i]
        if b0 <= x[2] and x[3] <= b1 and x[4] <= t and p0 <= x[0] and x[1] <= p1:
            del entries[i]
            n -= 1
        else:
            i += 1
