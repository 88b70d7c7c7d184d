"""Mesh cleanup after marching cubes: merge duplicate vertices, drop degenerate faces and floaters."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def merge_vertices(
    vertices: np.ndarray,  # [V, 3]
    faces: np.ndarray,  # [F, 3]
    tolerance: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:  # [V', 3], [F', 3]
    """Weld vertices closer than ``tolerance`` (0 = identical coordinates) and drop faces that collapse."""
    key = np.round(vertices / tolerance).astype(np.int64) if tolerance > 0 else vertices
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    merged = vertices[first]
    faces = inverse.reshape(-1)[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    return merged, faces[keep]


def face_components(faces: np.ndarray, num_vertices: int) -> np.ndarray:  # [F] component id per face
    """Connected components of faces that share a vertex."""
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(num_vertices, num_vertices))
    _, vertex_label = connected_components(graph, directed=False)
    return vertex_label[faces[:, 0]]


def drop_small_components(
    vertices: np.ndarray,  # [V, 3]
    faces: np.ndarray,  # [F, 3]
    min_fraction: float,
) -> tuple[np.ndarray, np.ndarray, int]:  # [V', 3], [F', 3], components dropped
    """Remove components with fewer faces than ``min_fraction`` x the largest one (floaters)."""
    if len(faces) == 0:
        return vertices, faces, 0
    label = face_components(faces, len(vertices))
    sizes = np.bincount(label)
    keep_label = sizes >= min_fraction * sizes.max()
    dropped = int(np.count_nonzero((sizes > 0) & ~keep_label))
    faces = faces[keep_label[label]]
    return *remove_unreferenced(vertices, faces), dropped


def remove_unreferenced(
    vertices: np.ndarray,  # [V, 3]
    faces: np.ndarray,  # [F, 3]
) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no face uses and renumber the faces."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    new_index = np.cumsum(used) - 1
    return vertices[used], new_index[faces]


def clean_mesh(
    vertices: np.ndarray,  # [V, 3]
    faces: np.ndarray,  # [F, 3]
    min_component_fraction: float,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Merge duplicates, then drop small components. Returns the mesh and counts for the log."""
    vertices, faces = merge_vertices(vertices, faces)
    before = len(faces)
    vertices, faces, dropped = drop_small_components(vertices, faces, min_component_fraction)
    return vertices, faces, {"components_dropped": dropped, "faces_dropped": before - len(faces)}
