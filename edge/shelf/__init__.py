"""The shelf gateway: load-cell readers, event detection, identification against the planogram, and the
process that publishes ``ShelfEventMsg``.

Pipeline: :mod:`edge.shelf.readers` (sample blocks; :class:`~edge.shelf.readers.Aligner` puts them on a frame
grid) -> :mod:`edge.shelf.detector` (per-shelf changes) -> :mod:`edge.shelf.identify` (SKU, quantity,
sub-events, misplaced put-backs; the :mod:`edge.shelf.planogram` learns them) -> :mod:`edge.shelf.gateway`
(wire messages).  :mod:`edge.shelf.stats` measures noise, drift and settling of real traces.
"""
