"""Conversation threading over content-free ``MessageRef`` values (JWZ-style, iterative).

Messages are linked through their Message-ID token and their parent tokens (References then
In-Reply-To). A token that no present message carries still links the messages that mention it,
so a gap (C refs B refs A, B missing) stays one conversation. Reference loops, self references,
duplicate Message-IDs and empty Message-IDs are harmless: grouping is a union-find over messages,
and the display tree only accepts a parent link that cannot close a cycle.

Subject fallback, for clients that drop the headers: a message with no parent tokens at all and a
reply prefix joins the conversation of the latest earlier message with the same ``subject_key`` and
the same ``counterpart``. Different counterparts are never merged by subject, and empty subject or
counterpart tokens never match anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter

from carebox.domain.models import MessageRef

__all__ = ["assign_thread_ids", "thread_groups", "thread_tree"]


_order_key = attrgetter("date", "key")


class _DisjointSet:
    """Union-find over 0..n-1 with path halving and union by size; no recursion."""

    __slots__ = ("parent", "size")

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


def _subject_candidate(ref: MessageRef) -> bool:
    """May this message be placed by subject? Only header-less replies with usable tokens."""
    return ref.reply_prefix and bool(ref.subject_key) and bool(ref.counterpart) and not any(ref.parents)


def thread_groups(msgs: Iterable[MessageRef]) -> list[tuple[MessageRef, ...]]:
    """Split messages into conversations.

    Each group is sorted by ``(date, key)``; groups are ordered by their earliest message.
    Every input message appears in exactly one group (duplicates of a Message-ID included).
    """
    refs = sorted(msgs, key=_order_key)  # index order is date order from here on
    n = len(refs)
    if n == 0:
        return []
    # Union-find over message indices, inlined (path halving, union by size): this loop is the
    # hot path of a full re-thread.
    parent = list(range(n))
    size = [1] * n

    def link(a: int, b: int) -> int:
        """Join the sets of a and b; return the root of the union."""
        while parent[a] != a:
            parent[a] = a = parent[parent[a]]
        while parent[b] != b:
            parent[b] = b = parent[parent[b]]
        if a == b:
            return a
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
        return a

    # 1. Link by tokens: every message joins the first message that mentioned each of its tokens.
    first_holder: dict[str, int] = {}
    setdefault = first_holder.setdefault
    for i, ref in enumerate(refs):
        mid = ref.message_id
        if mid:
            j = setdefault(mid, i)
            if j != i:
                link(i, j)
        for token in ref.parents:
            if token:
                j = setdefault(token, i)
                if j != i:
                    link(i, j)

    # 2. Subject fallback, in date order, so a message only joins something earlier.
    latest: dict[tuple[str, str], int] = {}
    for i, ref in enumerate(refs):
        if not (ref.subject_key and ref.counterpart):
            continue
        sk = (ref.subject_key, ref.counterpart)
        if ref.reply_prefix and not any(ref.parents):
            j = latest.get(sk)
            if j is not None:
                link(i, j)
        latest[sk] = i

    # 3. Collect; walking in date order keeps each group sorted and orders groups by first message.
    buckets: dict[int, list[MessageRef]] = {}
    for i, ref in enumerate(refs):
        root = i
        while parent[root] != root:
            parent[root] = root = parent[parent[root]]
        bucket = buckets.get(root)
        if bucket is None:
            buckets[root] = [ref]
        else:
            bucket.append(ref)
    return [tuple(b) for b in buckets.values()]


def _id_order(thread_id: str) -> tuple[int, str]:
    # Fixed-width ids (ULIDs, zero-padded) compare as plain strings; numeric ids compare as numbers.
    return (len(thread_id), thread_id)


def assign_thread_ids(
    groups: Iterable[Sequence[MessageRef]],
    existing: Mapping[str, str],
    new_id: Callable[[], str],
) -> dict[str, str]:
    """Map every message key to a thread id.

    A group keeps the smallest existing thread id among its members (``existing`` maps message
    key -> thread id), so ids stay stable as mail arrives and, when threads merge, the smallest id
    wins. "Smallest" orders by (length, string): plain string order for fixed-width ids, numeric
    order for decimal ids. A group without an existing id gets ``new_id()``. A thread id is given to
    one group only: if a former thread was split, the first group (in the given order) keeps its
    id and the others fall back to their next existing id or a new one.

    Raises ``ValueError`` if ``new_id()`` returns an id that is already assigned in this call.
    """
    result: dict[str, str] = {}
    taken: set[str] = set()
    for group in groups:
        known = {existing[m.key] for m in group if m.key in existing}
        thread_id = next((t for t in sorted(known, key=_id_order) if t not in taken), None)
        if thread_id is None:
            thread_id = new_id()
            if thread_id in taken:
                raise ValueError(f"new_id() returned a thread id that is already in use: {thread_id!r}")
        taken.add(thread_id)
        for m in group:
            result[m.key] = thread_id
    return result


def thread_tree(msgs: Iterable[MessageRef]) -> list[tuple[int, MessageRef]]:
    """Depth-first display order of a conversation: ``(depth, message)`` pairs, parent before
    children, roots and siblings by ``(date, key)``.

    A message's parent is the nearest present ancestor in its parent tokens (so a gap attaches a
    reply to the grandparent). With duplicate Message-IDs the earliest holder is preferred. A link
    that would close a loop is skipped in favour of the next older ancestor, or the message becomes
    a root. A header-less reply placed by subject hangs under the latest earlier message with the
    same subject and counterpart. Works on any set of messages (several conversations give a forest).
    """
    refs = sorted(msgs, key=_order_key)
    n = len(refs)
    if n == 0:
        return []

    holders: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        if ref.message_id:
            holders.setdefault(ref.message_id, []).append(i)  # in date order: earliest first

    # Each message is a root of its own tree until it is linked, so a link child -> p closes a
    # cycle exactly when p is already in the child's tree: a union-find over trees tells us.
    trees = _DisjointSet(n)
    parent_of = [-1] * n
    latest: dict[tuple[str, str], int] = {}

    def try_link(child: int, candidate: int) -> bool:
        if candidate == child or trees.find(candidate) == trees.find(child):
            return False
        parent_of[child] = candidate
        trees.union(child, candidate)
        return True

    for i, ref in enumerate(refs):
        linked = False
        for token in reversed(ref.parents):  # nearest ancestor first
            if not token:
                continue
            for candidate in holders.get(token, ()):
                if try_link(i, candidate):
                    linked = True
                    break
            if linked:
                break
        sk = (ref.subject_key, ref.counterpart)
        if not linked and _subject_candidate(ref):
            j = latest.get(sk)
            if j is not None:
                try_link(i, j)
        if ref.subject_key and ref.counterpart:
            latest[sk] = i

    children: list[list[int]] = [[] for _ in range(n)]
    roots: list[int] = []
    for i in range(n):  # ascending index = (date, key) order, so child lists come out sorted
        p = parent_of[i]
        if p < 0:
            roots.append(i)
        else:
            children[p].append(i)

    out: list[tuple[int, MessageRef]] = []
    stack: list[tuple[int, int]] = [(0, r) for r in reversed(roots)]
    while stack:
        depth, i = stack.pop()
        out.append((depth, refs[i]))
        stack.extend((depth + 1, c) for c in reversed(children[i]))
    return out
