"""Connected components over verified duplicate pairs: which documents form one cluster.

Only the fit's driver runs these; scipy is imported there, when they run, not by every Ray worker
that imports the dedup stages to sign or filter documents (scipy.sparse costs a worker about
10 MiB of private memory and 220 modules).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def duplicate_components(a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray
                         ) -> tuple[pa.Array, np.ndarray]:
    """(sorted unique ids, component label per id) for the graph whose edges are (a[i], b[i]).

    Ids are sorted, so within a component the member with the lowest index has the smallest id.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = pc.unique(pa.chunked_array([pa.chunked_array(a).combine_chunks(),
                                      pa.chunked_array(b).combine_chunks()]).combine_chunks())
    ids = ids.take(pc.sort_indices(ids))
    n = len(ids)
    if n == 0:
        return ids, np.zeros(0, dtype=np.int64)
    ia = pc.index_in(a, value_set=ids).to_numpy()
    ib = pc.index_in(b, value_set=ids).to_numpy()
    graph = coo_matrix((np.ones(ia.size, dtype=np.int8), (ia, ib)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return ids, labels


def ids_to_remove(ids: pa.Array, labels: np.ndarray) -> pa.Array:
    """Every id except the smallest of its component (ids are sorted, so the first seen)."""
    if len(ids) == 0:
        return pa.array([], pa.string())
    _, first = np.unique(labels, return_index=True)
    keep = np.zeros(len(ids), dtype=bool)
    keep[first] = True
    return ids.filter(pa.array(~keep))
