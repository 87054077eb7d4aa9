"""Maps over the nested lists, tuples and dicts that hold parameters and state.

The one tree module of ``mlp``: every traversal visits dict keys in sorted
order (as JAX does), so a dict that came back from ``jax.jit`` gives the same order.
"""


def tree_map(fn, tree, *rest):
    """Apply ``fn`` to the leaves of ``tree`` (and the same leaves of ``rest``)."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, tree[k], *(r[k] for r in rest)) for k in sorted(tree)}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, t, *(r[i] for r in rest)) for i, t in enumerate(tree))
    if tree is None:
        return None
    return fn(tree, *rest)


def leaves(tree):
    """The leaves of ``tree`` in a fixed order: dicts by sorted key (as JAX orders
    them, so a dict that came back from ``jax.jit`` gives the same order)."""
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [leaf for t in tree for leaf in leaves(t)]
    return [] if tree is None else [tree]


def tree_map_many(fn, n, tree, *rest):
    """``n`` trees shaped like ``tree`` from ``fn(leaf, *leaves_of_rest) -> (a_1, ..., a_n)``
    (the trees in ``rest`` have ``tree``'s structure)."""
    results = [fn(*args) for args in zip(leaves(tree), *map(leaves, rest))]
    return tuple(_unflatten(tree, iter([r[k] for r in results])) for k in range(n))


def _unflatten(tree, values):
    """``tree`` with its leaves replaced, in :func:`leaves`' order, by ``values``."""
    if isinstance(tree, dict):
        return {k: _unflatten(tree[k], values) for k in sorted(tree)}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_unflatten(t, values) for t in tree)
    return None if tree is None else next(values)


def named_leaves(tree, prefix):
    """``[(dotted name, leaf)]`` in :func:`leaves`' order: ``params.0.W``, ``opt.m.1.b``, ..."""
    if isinstance(tree, dict):
        return [p for k in sorted(tree) for p in named_leaves(tree[k], f"{prefix}.{k}")]
    if isinstance(tree, (list, tuple)):
        return [p for i, t in enumerate(tree) for p in named_leaves(t, f"{prefix}.{i}")]
    return [] if tree is None else [(prefix, tree)]


def map_named(fn, tree, prefix):
    """``tree`` with each leaf replaced by ``fn(name, leaf)`` (names as :func:`named_leaves`)."""
    if isinstance(tree, dict):
        return {k: map_named(fn, tree[k], f"{prefix}.{k}") for k in sorted(tree)}
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_named(fn, t, f"{prefix}.{i}") for i, t in enumerate(tree))
    return None if tree is None else fn(prefix, tree)
