"""The inode table's lifecycle rules: numbers never reused; the kernel's nodes never freed."""

from __future__ import annotations

import gc
import weakref

from hypothesis import given
from hypothesis import strategies as st

from flowfs.inodes import ROOT_INODE, SHRINK_FROM, InodeTable


class Node:
    """Anything weakly referable stands for a node."""


def test_a_node_nothing_holds_is_freed_at_once() -> None:
    table: InodeTable[Node] = InodeTable()
    node = Node()
    ino = table.add(node)
    assert table.get(ino) is node and len(table) == 1
    del node
    assert table.get(ino) is None and len(table) == 0


def test_a_node_the_kernel_holds_lives_until_its_last_lookup_is_forgotten() -> None:
    table: InodeTable[Node] = InodeTable()
    node = Node()
    ino = table.add(node)
    table.remember(ino, 2, under=(ROOT_INODE, "a"))
    gone = weakref.ref(node)
    del node
    gc.collect()
    assert table.forget(ino, 1) is None  # one lookup left
    assert table.get(ino) is gone() is not None
    assert table.path(ino) == "a"
    last = table.forget(ino, 1)
    assert last is gone()  # the caller gets it, to release what it held for the kernel
    del last
    assert gone() is None and table.get(ino) is None
    assert table.path(ino) == f"<inode {ino}>"


def test_forgetting_more_than_was_given_is_harmless() -> None:
    table: InodeTable[Node] = InodeTable()
    node = Node()
    ino = table.add(node)
    assert table.forget(ino, 3) is None  # never looked up
    table.remember(ino)
    assert table.forget(ino, 5) is node
    assert table.forget(ino, 1) is None
    assert table.forget(12345, 1) is None


def test_the_root_is_never_freed() -> None:
    table: InodeTable[Node] = InodeTable()
    table.add_root(Node())
    table.remember(ROOT_INODE)
    assert table.forget(ROOT_INODE, 1) is None
    gc.collect()
    assert table.get(ROOT_INODE) is not None


@given(st.lists(st.tuples(st.sampled_from(["add", "remember", "forget", "drop"]),
                          st.integers(0, 30), st.integers(1, 3)), max_size=200))
def test_numbers_are_never_reused_and_held_nodes_never_freed(
        steps: list[tuple[str, int, int]]) -> None:
    table: InodeTable[Node] = InodeTable()
    owned: dict[int, Node] = {}  # what listings hold
    given_out: list[int] = []
    counts: dict[int, int] = {}
    for op, pick, count in steps:
        if op == "add" or not given_out:
            node = Node()
            ino = table.add(node)
            assert not given_out or ino > max(given_out)
            given_out.append(ino)
            owned[ino] = node
            del node  # only the listing ("owned") holds it
            continue
        ino = given_out[pick % len(given_out)]
        if op == "remember" and table.get(ino) is not None:
            table.remember(ino, count)
            counts[ino] = counts.get(ino, 0) + count
        elif op == "forget":
            table.forget(ino, count)
            counts[ino] = max(0, counts.get(ino, 0) - count)
        elif op == "drop":
            owned.pop(ino, None)
        for i, n in counts.items():
            if n > 0:
                assert table.get(i) is not None  # the kernel may still name it
        for i in given_out:
            if table.get(i) is not None:
                assert i in owned or counts.get(i, 0) > 0  # else it should be gone
    assert len(table) == len({*owned, *(i for i, n in counts.items() if n > 0)})


def test_the_table_says_when_much_was_freed_and_then_not_again() -> None:
    table: InodeTable[Node] = InodeTable()
    nodes = [Node() for _ in range(2 * SHRINK_FROM)]
    for node in nodes:
        table.remember(table.add(node))
    assert not table.shrunk()
    for node in nodes[: SHRINK_FROM - 1]:
        table.forget(table_ino(table, node), 1)
    del node
    nodes = nodes[SHRINK_FROM - 1:]
    assert not table.shrunk()  # fewer freed than are left
    for node in nodes[:SHRINK_FROM + 1]:
        table.forget(table_ino(table, node), 1)
    del node
    nodes = nodes[SHRINK_FROM + 1:]
    assert table.shrunk()
    assert not table.shrunk()  # compacted: counted afresh from here
    assert len(table) == len(nodes) and all(table_ino(table, n) for n in nodes)


def table_ino(table: InodeTable[Node], node: Node) -> int:
    return next(i for i in range(2, 3 * SHRINK_FROM) if table.get(i) is node)
